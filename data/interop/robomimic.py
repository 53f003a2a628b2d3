"""robomimic HDF5 -> episode store.

robomimic's layout (its docs, "Dataset Structure"; what ``dataset_states_to_obs.py`` writes)::

    data/                       attrs: total (steps in the file), env_args (JSON: env_name,
                                       type, env_kwargs)
    data/demo_N/                attrs: num_samples, model_file (robosuite MJCF), ep_info, ...
    data/demo_N/obs/<key>       (N, ...) observations; images uint8 (N, H, W, C)
    data/demo_N/next_obs/<key>  the same, one step later
    data/demo_N/actions         (N, A)
    data/demo_N/rewards, dones  (N,)
    data/demo_N/states          (N, D) flattened MuJoCo states (robosuite)
    mask/<filter_key>           demo names (bytes), e.g. mask/train, mask/valid

How it maps (one store episode per demo, in robomimic's order: by the number in the name):

- ``obs/<key>`` -> ``observation.images.<key>`` for camera frames (uint8, (H, W, C), C in 1, 3),
  else ``observation.<key>``; ``actions`` -> ``action``; ``rewards`` -> ``next.reward``;
  ``dones`` -> ``next.done``; any other per-step dataset keeps its path, ``/`` -> ``.``
  (``states``, ``actions_abs``, ``action_dict.<key>``...). dtypes are kept.
- ``next_obs`` is left out: it is ``obs`` one step later (its last step aside).
- Filter keys become episode tags (``store.select(tags=["valid"])``); ``env_name`` is every
  episode's task; ``env_args`` is kept whole in the store's metadata; the demo's name and its
  attributes go into the episode's metadata, except ``model_file`` (an MJCF document per demo,
  which would bloat the commit log; it stays in the source file).
- fps is ``env_kwargs.control_freq`` (robosuite) unless given; the file says nothing of action
  sources or success, so both come from the caller (defaults: teleop, unknown).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.interop import (
    ConversionError,
    Converted,
    Track,
    no_progress,
    refuse_existing,
    staged_output,
)
from data.schema import Feature, Source
from data.store import EpisodeStore

log = logging.getLogger(__name__)

RENAMES = {"actions": "action", "rewards": "next.reward", "dones": "next.done"}
LEFT_OUT = ("next_obs",)  # derived data: obs one step later
EPISODE_ATTRS_LEFT_OUT = ("num_samples", "model_file")


def import_robomimic(src: str | Path, out: str | Path, *, fps: float | None = None,
                     source: Source | str = Source.TELEOP, success: bool | None = None,
                     skip: Iterable[str] = (), track: Track = no_progress) -> Converted:
    """Write the robomimic HDF5 file ``src`` as a new episode store at ``out``. ``skip``: paths
    inside each demo to leave out (``states``, ``obs/object``)."""
    import h5py

    src = Path(src)
    refuse_existing(Path(out))  # before any work
    if not src.is_file():
        raise ConversionError(f"{src}: no such file")
    try:
        f = h5py.File(src, "r")
    except OSError as exc:
        raise ConversionError(f"{src}: not an HDF5 file ({exc})") from None
    with f:
        with _damaged(src, "data"):
            plan = _Plan.of(f, src, fps, set(skip))  # every demo checked before any copy
        with staged_output(out) as tmp:
            store = EpisodeStore.create(tmp, plan.features, plan.fps,
                                        robot_type=plan.robot_type, tasks=plan.tasks,
                                        **plan.metadata)
            with store, store.recorder(source=source, keep_interrupted=False) as rec:
                for i in track(range(len(plan.demos)), "importing demos"):
                    name = plan.demos[i]
                    with _damaged(src, f"data/{name}"):
                        group = f["data"][name]
                        values = {key: group[path][()] for key, (path, _) in plan.layout.items()}
                        attrs = _episode_attrs(group)
                    rec.start_episode(task=plan.task)
                    for t in range(plan.lengths[i]):
                        rec.add({k: v[t] for k, v in values.items()})
                    rec.end_episode(success, tags=plan.tags.get(name, []), robomimic_demo=name,
                                    **attrs)
            frames = store.num_frames
    return Converted(Path(out), len(plan.demos), frames)


@dataclass
class _Plan:
    """What a robomimic file becomes, worked out from its metadata before anything is copied."""

    demos: list[str]  # in import order
    lengths: list[int]  # steps of each demo
    layout: dict[str, tuple[str, Feature]]  # store feature -> (path inside a demo, feature)
    fps: float
    task: str | None  # env_args.env_name
    robot_type: str | None
    tags: dict[str, list[str]]  # demo -> filter keys
    metadata: dict[str, Any]  # the store's

    @property
    def features(self) -> dict[str, Any]:
        return {k: feat.to_json() for k, (_, feat) in self.layout.items()}

    @property
    def tasks(self) -> list[str]:
        return [self.task] if self.task else []

    @classmethod
    def of(cls, f: Any, src: Path, fps: float | None, skip: set[str]) -> _Plan:
        import h5py

        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise ConversionError(f"{src}: no 'data' group; not a robomimic dataset")
        demos = demo_names(data)
        if not demos:
            raise ConversionError(f"{src}: no demos under data/ (expected data/demo_0, ...)")
        env_args = _env_args(data, src)
        kwargs = env_args.get("env_kwargs") or {}
        rate = fps if fps is not None else kwargs.get("control_freq")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or rate <= 0:
            raise ConversionError(f"{src}: env_args has no env_kwargs.control_freq; give the "
                                  "recording rate as fps=...")
        layout = demo_layout(data, demos[0], skip, src)
        lengths = [check_demo(data, name, layout, src) for name in demos]
        total = data.attrs.get("total")
        if total is not None and int(total) != sum(lengths):
            log.warning("%s: data.attrs['total'] says %d steps, the demos hold %d", src,
                        int(total), sum(lengths))
        tags = _filter_keys(f, src)
        task = env_args.get("env_name")
        robots = kwargs.get("robots")
        robot_type = ",".join(map(str, robots)) if isinstance(robots, list) else robots
        metadata = {"robomimic": {"env_args": env_args,
                                  "filter_keys": sorted({t for ts in tags.values() for t in ts})},
                    "imported_from": {"format": "robomimic", "path": str(src)}}
        return cls(demos, lengths, layout, float(rate), task if isinstance(task, str) else None,
                   robot_type if isinstance(robot_type, str) else None, tags, metadata)


@contextmanager
def _damaged(src: Path, where: str) -> Iterator[None]:
    """h5py reports a damaged file as OSError or RuntimeError from deep inside HDF5: name the
    file and the group instead (raised while only reading the file)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise ConversionError(f"{src}: {where}: cannot read it, the file is damaged "
                              f"({str(exc).splitlines()[0]})") from None


def demo_names(data: Any) -> list[str]:
    """Demo groups in robomimic's order: by the number at the end of the name (demo_2 before
    demo_10), names without one last."""
    def key(name: str) -> tuple[int, int, str]:
        m = re.search(r"(\d+)$", name)
        return (0, int(m.group(1)), name) if m else (1, 0, name)

    return sorted(data.keys(), key=key)


def _env_args(data: Any, src: Path) -> dict[str, Any]:
    raw = data.attrs.get("env_args")
    if raw is None:
        log.warning("%s: data has no env_args attribute (no environment metadata)", src)
        return {}
    try:
        args = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except ValueError as exc:
        raise ConversionError(f"{src}: data.attrs['env_args'] is not valid JSON ({exc})") \
            from None
    if not isinstance(args, dict):
        raise ConversionError(f"{src}: data.attrs['env_args'] is not a JSON object")
    return args


def demo_layout(data: Any, demo: str, skip: set[str], src: Path) -> dict[str, tuple[str, Feature]]:
    """Store feature name -> (path inside the demo, feature), from the first demo."""
    import h5py

    group = data[demo]
    if not isinstance(group, h5py.Group) or "actions" not in group:
        raise ConversionError(f"{src}: data/{demo} has no 'actions' dataset; not a robomimic "
                              "demo")
    n = group["actions"].shape[0]
    paths: list[str] = []
    group.visititems(lambda p, obj: paths.append(p) if isinstance(obj, h5py.Dataset) else None)
    unknown = sorted(s for s in skip if not any(p == s or p.startswith(s + "/") for p in paths))
    if unknown:
        raise ConversionError(f"skip: {unknown} not in data/{demo} of {src} (it has {paths})")
    layout: dict[str, tuple[str, Feature]] = {}
    for path in paths:
        if any(path == s or path.startswith(s + "/") for s in (*skip, *LEFT_OUT)):
            continue
        ds = group[path]
        where = f"{src}: data/{demo}/{path}"
        if ds.ndim == 0 or ds.shape[0] != n:
            raise ConversionError(f"{where}: shape {ds.shape} is not one value per step ({n} "
                                  f"steps); leave it out with skip=[{path}]")
        shape = tuple(ds.shape[1:])
        is_image = (path.startswith("obs/") and ds.dtype == np.uint8 and len(shape) == 3
                    and shape[2] in (1, 3))
        if path.startswith("obs/"):
            name = ("observation.images." if is_image else "observation.") + path[4:]
        else:
            name = RENAMES.get(path, path.replace("/", "."))
        try:
            feat = Feature.from_spec(name, {"dtype": ds.dtype.name, "shape": shape,
                                            "image": is_image})
        except (ValueError, TypeError) as exc:
            raise ConversionError(f"{where}: no robolearn equivalent ({exc}); leave it out "
                                  f"with skip=[{path}]") from None
        layout[name] = (path, feat)
    return layout


def check_demo(data: Any, demo: str, layout: Mapping[str, tuple[str, Feature]],
               src: Path) -> int:
    """A demo's number of steps, once every dataset of the layout is there with its dtype and
    shape (read from the file's metadata: nothing is loaded)."""
    group = data[demo]
    where = f"{src}: data/{demo}"
    if "actions" not in group:
        raise ConversionError(f"{where} has no 'actions' dataset")
    n = int(group["actions"].shape[0])
    declared = group.attrs.get("num_samples")
    if declared is not None and int(declared) != n:
        raise ConversionError(f"{where}: num_samples says {int(declared)} steps, actions has {n}")
    if n == 0:
        raise ConversionError(f"{where}: no steps")
    for path, feat in layout.values():
        if path not in group:
            raise ConversionError(f"{where}: no {path} (the first demo has it); leave it out "
                                  f"with skip=[{path}]")
        ds = group[path]
        if ds.shape != (n, *feat.shape) or ds.dtype != np.dtype(feat.dtype):
            raise ConversionError(f"{where}/{path}: {ds.dtype} {ds.shape}, but {feat.dtype} "
                                  f"({n}, {', '.join(map(str, feat.shape))}) expected as in the "
                                  "first demo")
    return n


def _filter_keys(f: Any, src: Path) -> dict[str, list[str]]:
    """demo name -> the filter keys (``mask/<key>``) that list it."""
    import h5py

    tags: dict[str, list[str]] = {}
    mask = f.get("mask")
    if not isinstance(mask, h5py.Group):
        return tags
    for key in sorted(mask.keys()):
        try:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in mask[key][()]]
        except (TypeError, UnicodeDecodeError, AttributeError) as exc:
            raise ConversionError(f"{src}: mask/{key} is not a list of demo names ({exc})") \
                from None
        for name in names:
            tags.setdefault(name, []).append(key)
    return tags


def _episode_attrs(group: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in group.attrs.items():
        if key in EPISODE_ATTRS_LEFT_OUT:
            continue
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value[:1] in "{[":  # robomimic's ep_info is JSON text
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[f"robomimic_{key}"] = value
    return out
