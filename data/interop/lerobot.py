"""Episode store <-> LeRobotDataset (format v3.0, lerobot 0.6), through lerobot's own API.

Export writes with lerobot's recording API (``LeRobotDataset.create`` / ``add_frame`` /
``save_episode`` / ``finalize``), so the output is what lerobot itself writes; import reads with
``LeRobotDataset`` (low-dim and PNG columns from its parquet files, video frames with its
``decode_video_frames``). Mapping, per step and per episode:

==========================  ===============================================================
store                       LeRobotDataset
==========================  ===============================================================
feature, shape ``()``       feature of shape ``(1,)`` (lerobot has no 0-d features)
camera ``(H, W, 3)``        ``video`` (AV1 MP4, lerobot's default encoder) or ``image`` (PNG)
camera ``(H, W, 1)``        the same, grey copied into three channels (lerobot writes RGB)
per-step ``source``         feature ``source`` (uint8 code of :class:`~data.schema.Source`)
per-step ``timestamp``      lerobot's ``timestamp`` (``frame_index / fps``); recorded times
                            that differ from it are kept in feature ``robolearn.timestamp``
episode task                the task of every frame (``""`` for an episode without one)
fps                         fps (lerobot needs a whole number)
episode success, complete,  ``meta/robolearn.json``: one record per episode, plus the store's
tags, metadata, sources     tasks, metadata, exact features and fps
==========================  ===============================================================

Import reverses this. ``meta/robolearn.json`` is used only when its episodes match the dataset's
(count and lengths): a dataset edited by other tools since is imported like any other. Without it,
episodes have unknown success, are complete, and every step's source is the ``source`` feature
when there is one, else the ``source`` argument.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping
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
from data.store import EpisodeInfo, EpisodeStore

# lerobot reads these when it is imported: nothing here may reach the network, and its encoder
# and progress bars stay quiet. Already-set values win.
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                     "SVT_LOG": "1"}.items():
    os.environ.setdefault(_key, _value)
warnings.filterwarnings("ignore", message="Cannot enable progress bars")

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
SIDECAR = "meta/robolearn.json"
SIDECAR_FORMAT = "robolearn.lerobot_export"
SOURCE_KEY = "source"
TIMESTAMP_KEY = "robolearn.timestamp"
LEROBOT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index", "task")
# lerobot's default video encoder (libsvtav1) kills the process (SIGFPE) on frames 24 px wide or
# narrower (measured with lerobot 0.6.1); refuse narrow cameras instead of crashing.
MIN_VIDEO_WIDTH = 32
BLOCK = 256  # steps read at a time (bounds memory for long camera episodes)


# ------------------------------------------------------------------------------------- export
def export_lerobot(store_path: str | Path, out: str | Path, *, repo_id: str | None = None,
                   video: bool = True, track: Track = no_progress) -> Converted:
    """Write every episode of the store at ``store_path`` as a new LeRobotDataset at ``out``."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    out = Path(out)
    refuse_existing(out)  # before any work
    with EpisodeStore.open(store_path, "r") as store:
        infos = store.infos()
        if not infos:
            raise ConversionError(f"{store.name}: no episodes to export")
        fps = _whole_fps(store)
        keep_times = any(not _default_times(store, info) for info in infos)
        features = lerobot_features(store, video, keep_times)
        with staged_output(out) as tmp:
            ds = LeRobotDataset.create(repo_id or f"local/{out.name}", fps, features, root=tmp,
                                       robot_type=store.robot_type, use_videos=video)
            try:
                for i in track(range(len(infos)), "exporting episodes"):
                    _export_episode(store, infos[i], ds, keep_times)
            except BaseException:
                # lerobot's writers flush on garbage collection: close them before the partial
                # output is removed, or they would write into it again.
                with contextlib.suppress(Exception):
                    ds.finalize()
                raise
            ds.finalize()
            (tmp / SIDECAR).write_text(json.dumps(_sidecar(store, infos), indent=1))
        return Converted(out, len(infos), sum(i.length for i in infos))


def lerobot_features(store: EpisodeStore, video: bool, keep_times: bool) -> dict[str, dict]:
    """The LeRobot features of a store's schema (plus ``source``, and recorded times)."""
    out: dict[str, dict[str, Any]] = {}
    for key, f in store.features.items():
        if key in LEROBOT_KEYS or key in (SOURCE_KEY, TIMESTAMP_KEY):
            raise ConversionError(f"{store.name}: feature {key!r} has a name lerobot (or this "
                                  "export) uses for its own column")
        if f.image:
            h, w, _ = f.shape
            if video and w < MIN_VIDEO_WIDTH:
                raise ConversionError(
                    f"{store.name}: camera {key!r} is {w} px wide; lerobot's video encoder "
                    f"needs >= {MIN_VIDEO_WIDTH} px: export with video=false (PNG frames)")
            out[key] = {"dtype": "video" if video else "image", "shape": (h, w, 3),
                        "names": ["height", "width", "channels"]}
        else:
            out[key] = {"dtype": f.dtype, "shape": f.shape or (1,),
                        "names": list(f.names) if f.names else None}
    out[SOURCE_KEY] = {"dtype": "uint8", "shape": (1,), "names": None}
    if keep_times:
        out[TIMESTAMP_KEY] = {"dtype": "float64", "shape": (1,), "names": None}
    return out


def _whole_fps(store: EpisodeStore) -> int:
    if store.fps != round(store.fps):
        raise ConversionError(f"{store.name}: {store.fps:g} fps; a LeRobotDataset needs a whole "
                              "number of frames per second")
    return int(round(store.fps))


def _default_times(store: EpisodeStore, info: EpisodeInfo) -> bool:
    """Whether the episode's timestamps are ``step / fps`` (what lerobot writes itself)."""
    ts = store.read("timestamp", info.start, info.start + info.length, info)
    return bool(np.allclose(ts, np.arange(info.length) / store.fps, rtol=0, atol=1e-9))


def _export_episode(store: EpisodeStore, info: EpisodeInfo, ds: Any, keep_times: bool) -> None:
    task = info.task or ""
    keys = [*store.features, "source", "timestamp"]
    for a in range(0, info.length, BLOCK):
        b = min(info.length, a + BLOCK)
        block = {k: store.read(k, info.start + a, info.start + b, info) for k in keys}
        for t in range(b - a):
            frame: dict[str, Any] = {"task": task}
            for key, f in store.features.items():
                value = block[key][t]
                if f.image:
                    frame[key] = np.repeat(value, 3, axis=2) if f.shape[2] == 1 else value
                else:
                    frame[key] = value.reshape(f.shape or (1,))
            frame[SOURCE_KEY] = block["source"][t].reshape(1)
            if keep_times:
                frame[TIMESTAMP_KEY] = block["timestamp"][t].reshape(1)
            ds.add_frame(frame)
    ds.save_episode(parallel_encoding=False)


def _sidecar(store: EpisodeStore, infos: list[EpisodeInfo]) -> dict[str, Any]:
    return {
        "format": SIDECAR_FORMAT, "version": 1,
        "store": {"fps": store.fps, "robot_type": store.robot_type, "tasks": store.tasks,
                  "features": {k: f.to_json() for k, f in store.features.items()},
                  "metadata": store.summary()["metadata"]},  # the user's, as create() took it
        "episodes": [{"length": i.length, "success": i.success, "complete": i.complete,
                      "task": i.task, "tags": list(i.tags), "sources": i.sources,
                      "metadata": i.metadata, "id": i.id, "created": i.created}
                     for i in infos],
    }


# ------------------------------------------------------------------------------------- import
def import_lerobot(src: str | Path, out: str | Path, *, repo_id: str | None = None,
                   source: Source | str = Source.TELEOP, skip: Iterable[str] = (),
                   track: Track = no_progress) -> Converted:
    """Write the LeRobotDataset at ``src`` (a local folder) as a new episode store at ``out``.
    ``skip``: LeRobot features to leave out; ``source``: every step's action source when the
    dataset has no ``source`` feature."""
    src = Path(src)
    refuse_existing(Path(out))  # before any work
    _check_dataset_dir(src)
    reader = _Reader(src, repo_id or f"local/{src.name}", set(skip))
    default_source = Source.parse(source)
    store_meta = dict(reader.sidecar["store"]["metadata"]) if reader.sidecar else {}
    store_meta["imported_from"] = {"format": "lerobot", "path": str(src),
                                   "repo_id": reader.meta.repo_id}
    with staged_output(out) as tmp:
        store = EpisodeStore.create(tmp, {k: f.to_json() for k, f in reader.features.items()},
                                    reader.fps, robot_type=reader.meta.robot_type,
                                    tasks=reader.tasks, **store_meta)
        with store, store.recorder(keep_interrupted=False) as rec:
            for e in track(range(reader.meta.total_episodes), "importing episodes"):
                reader.copy_episode(e, rec, default_source)
        frames = store.num_frames
    return Converted(Path(out), reader.meta.total_episodes, frames)


def _check_dataset_dir(src: Path) -> None:
    """What lerobot would otherwise fetch from the Hub (or fail on deep inside) must be here."""
    info_path = src / "meta" / "info.json"
    if not src.is_dir():
        raise ConversionError(f"{src}: no such folder")
    if not info_path.is_file():
        raise ConversionError(f"{src}: not a LeRobotDataset folder (no meta/info.json)")
    try:
        info = json.loads(info_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{info_path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise ConversionError(f"{info_path}: no 'features' mapping; not a LeRobotDataset")
    version = info.get("codebase_version")
    if version != CODEBASE_VERSION:
        raise ConversionError(f"{src}: LeRobot format {version}, this import reads "
                              f"{CODEBASE_VERSION} (convert it with lerobot's "
                              "convert_dataset_v21_to_v30 first)")
    if not info.get("total_episodes"):
        raise ConversionError(f"{src}: no episodes to import (meta/info.json: total_episodes "
                              f"{info.get('total_episodes')})")
    for name, what in (("tasks.parquet", "tasks"), ("episodes", "episode index")):
        if not (src / "meta" / name).exists():
            raise ConversionError(f"{src}: meta/{name} is missing (the {what} of the dataset)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in sorted(src.glob("meta/**/*.parquet")) + sorted(src.glob("data/**/*.parquet")):
        try:
            pq.read_metadata(path)  # the footer: a truncated or foreign file fails here
        except (OSError, pa.ArrowException) as exc:
            raise ConversionError(f"{path}: not a readable parquet file ({exc})") from None


class _Reader:
    """One LeRobotDataset, opened with lerobot, and the store schema it maps to."""

    def __init__(self, src: Path, repo_id: str, skip: set[str]) -> None:
        import pyarrow as pa
        from datasets.exceptions import DatasetGenerationError
        from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata

        self.src = src
        try:
            meta = LeRobotDatasetMetadata(repo_id, root=src)
            self._check_files(meta)
            self.ds = LeRobotDataset(repo_id, root=src)
        except (OSError, ValueError, KeyError, pa.ArrowException,
                DatasetGenerationError) as exc:
            cause = exc.__cause__ or exc  # datasets wraps what pyarrow said
            raise ConversionError(f"{src}: lerobot cannot load it ({type(cause).__name__}: "
                                  f"{str(cause).splitlines()[0] if str(cause) else ''})") \
                from None
        self.meta = self.ds.meta
        unknown = sorted(skip - set(self.meta.features))
        if unknown:
            raise ConversionError(f"skip: {unknown} not among the features of {src} "
                                  f"({sorted(self.meta.features)})")
        self.sidecar = self._read_sidecar()
        saved = self.sidecar["store"] if self.sidecar else {}
        self.features: dict[str, Feature] = {}
        columns = ["timestamp"]
        for key, ft in self.meta.features.items():
            if key in LEROBOT_KEYS or key in skip:
                continue
            if ft["dtype"] != "video":
                columns.append(key)
            if key not in (SOURCE_KEY, TIMESTAMP_KEY):
                self.features[key] = self._store_feature(key, ft, saved.get("features", {}))
        self.fps = float(saved.get("fps", self.meta.fps))
        tasks = [str(t) for t in self.meta.tasks.index] if self.meta.tasks is not None else []
        self.tasks = saved.get("tasks", [t for t in tasks if t])
        # One view per column, read as its declared dtype: datasets' numpy format otherwise
        # turns every float into float32 and every integer into int64.
        self.hf = {k: self.ds.hf_dataset.select_columns([k]).with_format(
            "numpy", dtype=np.dtype("uint8" if self.meta.features[k]["dtype"] == "image"
                                    else self.meta.features[k]["dtype"])) for k in columns}
        self.rows = self.ds.absolute_to_relative_idx
        self._check_episodes()

    def _first_row(self, e: int) -> tuple[int, int]:
        """(row of episode ``e``'s first frame in the loaded data, its number of frames)."""
        row = self.meta.episodes[e]
        start = int(row["dataset_from_index"])
        return (self.rows[start] if self.rows else start), int(row["dataset_to_index"]) - start

    def _check_episodes(self) -> None:
        """Everything that could stop the import half-way is checked before it starts."""
        episode_of = self.ds.hf_dataset.select_columns(["episode_index"]).with_format(
            "numpy")[:]["episode_index"]
        sources = self.hf[SOURCE_KEY][:][SOURCE_KEY] if SOURCE_KEY in self.hf else None
        for e in range(self.meta.total_episodes):
            where = f"{self.src}: episode {e}"
            first, n = self._first_row(e)
            if len(episode_of) < first + n or not (episode_of[first:first + n] == e).all():
                raise ConversionError(f"{where}: its rows in data/ are not where meta/episodes "
                                      "says")
            tasks = list(self.meta.episodes[e]["tasks"])
            if len(tasks) > 1:
                raise ConversionError(f"{where}: {len(tasks)} tasks ({tasks}); a robolearn "
                                      "episode has one task")
            if sources is not None:
                bad = sorted({int(c) for c in sources[first:first + n]} - {int(s) for s in Source})
                if bad:
                    codes = ", ".join(f"{int(s)} {s.name.lower()}" for s in Source)
                    raise ConversionError(f"{where}: source codes {bad} in its '{SOURCE_KEY}' "
                                          f"column are not robolearn action sources ({codes})")

    def _check_files(self, meta: Any) -> None:
        for e in range(meta.total_episodes):
            paths = [meta.get_data_file_path(e)]
            paths += [meta.get_video_file_path(e, k) for k in meta.video_keys]
            for p in paths:
                if not (self.src / p).is_file():
                    raise ConversionError(f"{self.src}: {p} is missing (episode {e})")

    def _read_sidecar(self) -> dict[str, Any] | None:
        path = self.src / SIDECAR
        if not path.is_file():
            return None
        try:
            side = json.loads(path.read_text())
            lengths = [int(e["length"]) for e in side["episodes"]]
            ok = side.get("format") == SIDECAR_FORMAT and isinstance(side["store"], dict)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable (%s); importing without it", path, exc)
            return None
        if not ok or lengths != [int(x) for x in self.meta.episodes["length"]]:
            log.warning("%s: its episodes do not match the dataset's (edited since the export?); "
                        "importing without it", path)
            return None
        return side

    def _store_feature(self, key: str, ft: Mapping[str, Any],
                       saved: Mapping[str, Any]) -> Feature:
        where = f"{self.src}: feature {key!r}"
        shape = tuple(int(s) for s in ft["shape"])
        if ft["dtype"] in ("video", "image"):
            axes = list(ft.get("names") or [])
            if axes[:1] == ["channels"] or (len(shape) == 3 and shape[0] in (1, 3)
                                              and shape[2] not in (1, 3)):
                shape = (shape[1], shape[2], shape[0])  # (C, H, W) -> (H, W, C)
            spec: dict[str, Any] = {"dtype": "uint8", "shape": shape, "image": True}
        else:
            spec = {"dtype": ft["dtype"], "shape": shape}
            names = ft.get("names")
            if isinstance(names, list) and len(shape) == 1 and len(names) == shape[0]:
                spec["names"] = names
        if key in saved:  # what the store had: 0-d values, grey cameras
            spec = dict(saved[key])
        try:
            return Feature.from_spec(key, spec)
        except ValueError as exc:
            raise ConversionError(f"{where}: no robolearn equivalent ({exc}); leave it out with "
                                  f"skip=[{key}]") from None

    def copy_episode(self, e: int, rec: Any, default_source: Source) -> None:
        """Record episode ``e`` of the dataset as the recorder's next episode."""
        row = self.meta.episodes[e]
        first, n = self._first_row(e)
        where = f"{self.src}: episode {e}"
        saved = self.sidecar["episodes"][e] if self.sidecar else None
        if saved is not None:
            task = saved["task"]
        else:  # one task at most (checked); lerobot's "" is an episode without one
            task = next(iter(row["tasks"]), None) or None
        rec.start_episode(task=task)
        for a in range(0, n, BLOCK):
            block = {k: view[first + a:first + min(n, a + BLOCK)][k]
                     for k, view in self.hf.items()}
            m = len(block["timestamp"])
            values = {k: self._column(k, block, row, where) for k in self.features}
            sources = block.get(SOURCE_KEY, np.full(m, int(default_source))).reshape(m)
            times = (block[TIMESTAMP_KEY].reshape(m) if TIMESTAMP_KEY in block
                     else (a + np.arange(m)) / self.fps)
            for t in range(m):
                rec.add({k: v[t] for k, v in values.items()}, source=Source(int(sources[t])),
                        timestamp=float(times[t]))
        if saved is not None:
            # complete: an episode the store kept after its recorder died stays incomplete
            rec.end_episode(saved["success"], tags=saved["tags"], complete=saved["complete"],
                            **saved["metadata"])
        else:
            rec.end_episode(None, lerobot_episode=e)

    def _column(self, key: str, block: Mapping[str, np.ndarray], row: Mapping[str, Any],
                where: str) -> np.ndarray:
        feat = self.features[key]
        if self.meta.features[key]["dtype"] == "video":
            arr = self._decode(key, block["timestamp"], row)
        else:
            arr = block[key]  # PNG frames decode to (N, H, W, C), or (N, H, W) when grey
        if feat.image and feat.shape[2] == 1 and arr.ndim == 4 and arr.shape[-1] == 3:
            arr = arr[..., :1]  # a grey camera exported as RGB
        if arr.size != len(arr) * int(np.prod(feat.shape)):
            raise ConversionError(f"{where}, {key}: values of shape {arr.shape[1:]}, its feature "
                                  f"says {feat.shape}")
        return arr.reshape(len(arr), *feat.shape)

    def _decode(self, key: str, ts: np.ndarray, row: Mapping[str, Any]) -> np.ndarray:
        from lerobot.datasets.video_utils import decode_video_frames
        from lerobot.utils.import_utils import get_safe_default_video_backend

        start = float(row[f"videos/{key}/from_timestamp"])
        path = self.src / self.meta.get_video_file_path(int(row["episode_index"]), key)
        try:
            frames = decode_video_frames(path, [start + float(t) for t in ts],
                                         self.ds.tolerance_s, get_safe_default_video_backend(),
                                         return_uint8=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{path}: cannot decode the frames of episode "
                                  f"{int(row['episode_index'])} ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0]})") from None
        return frames.numpy().transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)


__all__ = ["export_lerobot", "import_lerobot", "lerobot_features"]
