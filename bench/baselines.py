"""Training-window sampling benchmark: the baselines (numpy bound, robomimic HDF5, LeRobot).

A *window* around step t of an episode holds the ``obs_horizon`` (To) past observations
t-To+1..t (state and camera) and the ``action_horizon`` (Ta) future actions t..t+Ta-1. Steps
outside the episode repeat the edge frame and are flagged True in ``<key>_is_pad`` (LeRobot's
convention: True = padded). A batch is ``batch_size`` windows at uniformly random frames.

Every contender returns a dict with at least these keys (numpy arrays or torch tensors):
    observation.state (B, To, 32) float32         observation.state_is_pad (B, To) bool
    action            (B, Ta, 8)  float32         action_is_pad            (B, Ta) bool
    observation.images.front (B, To, 96, 96, 3) uint8 if image_layout == "HWC",
                             (B, To, 3, 96, 96) if "CHW"; observation.images.front_is_pad (B, To)

Adding a contender: subclass :class:`Baseline`, implement ``build`` and ``windows`` and, if it has
its own loader, override ``batches``; ``measure`` and ``check_against_bound`` then work unchanged.
Append it to ``contenders`` in ``main``; one with a ``with_workers(n)`` method (as LeRobot) gets a
row per ``--workers`` value.

    .venv/bin/python -m bench.baselines [--episodes 50] [--length 200] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from bench._episodes import (  # re-exported: the common input of every contender
    ACTION,
    ACTION_DIM,
    IMAGE,
    IMAGE_SIZE,
    STATE,
    STATE_DIM,
    Episode,
    make_episodes,
)

Batch = dict[str, Any]  # np.ndarray or torch.Tensor values
__all__ = ["ACTION", "ACTION_DIM", "IMAGE", "IMAGE_SIZE", "STATE", "STATE_DIM", "Batch",
           "Baseline", "Episode", "NumpyBound", "RobomimicHDF5", "WindowSpec", "make_episodes",
           "check_against_bound", "window_indices"]


def pad_key(key: str) -> str:
    return f"{key}_is_pad"


@dataclass(frozen=True)
class WindowSpec:
    obs_horizon: int = 2
    action_horizon: int = 16

    def offsets(self, key: str) -> np.ndarray:
        """Step offsets relative to t that the window reads for ``key``."""
        if key == ACTION:
            return np.arange(self.action_horizon)
        return np.arange(1 - self.obs_horizon, 1)

    def shapes(self, batch: int, with_images: bool,
               layout: Literal["HWC", "CHW"] = "HWC") -> dict[str, tuple[int, ...]]:
        to, ta = self.obs_horizon, self.action_horizon
        out: dict[str, tuple[int, ...]] = {
            STATE: (batch, to, STATE_DIM), pad_key(STATE): (batch, to),
            ACTION: (batch, ta, ACTION_DIM), pad_key(ACTION): (batch, ta)}
        if with_images:
            hwc = (IMAGE_SIZE, IMAGE_SIZE, 3)
            out[IMAGE] = (batch, to, *(hwc if layout == "HWC" else (3, IMAGE_SIZE, IMAGE_SIZE)))
            out[pad_key(IMAGE)] = (batch, to)
        return out


def window_indices(t: np.ndarray, length: np.ndarray,
                   offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-episode step indices (N, K), clamped to the episode, and the pad mask (N, K)."""
    raw = t[:, None] + offsets[None, :]
    pad = (raw < 0) | (raw >= length[:, None])
    return np.clip(raw, 0, length[:, None] - 1), pad


# ── the interface ─────────────────────────────────────────────────────────────────────────────

class Baseline(ABC):
    """One contender. ``build`` once, then ``windows`` (fixed positions), ``sample`` (one random
    batch), ``batches`` (endless iterator, the contender's own loader) and ``measure``."""

    image_layout: Literal["HWC", "CHW"] = "HWC"
    lossless_images: bool = True

    def __init__(self, spec: WindowSpec | None = None, name: str = "", storage: str = "") -> None:
        self.spec = spec or WindowSpec()
        self.name, self.storage = name, storage
        self.path: Path | None = None  # what build wrote, if anything (for the on-disk size)
        self.lengths: np.ndarray = np.zeros(0, dtype=np.int64)  # per episode
        self.starts: np.ndarray = np.zeros(0, dtype=np.int64)  # first global frame per episode
        self.with_images = False

    def _register(self, episodes: Sequence[Episode]) -> None:
        self.lengths = np.array([len(ep[ACTION]) for ep in episodes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.with_images = IMAGE in episodes[0]

    @abstractmethod
    def build(self, episodes: Sequence[Episode], workdir: Path) -> None:
        """Store the episodes (on disk under ``workdir`` if the contender has a disk format)."""

    @abstractmethod
    def windows(self, positions: np.ndarray) -> Batch:
        """Windows at ``positions``, an (N, 2) int array of (episode, step) rows."""

    def random_positions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 2) (episode, step) rows, uniform over all frames of all episodes."""
        g = rng.integers(0, int(self.lengths.sum()), n)
        e = np.searchsorted(self.starts, g, side="right") - 1
        return np.stack([e, g - self.starts[e]], axis=1)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        return self.windows(self.random_positions(batch_size, rng))

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        while True:
            yield self.sample(batch_size, rng)

    @property
    def warmup_batches(self) -> int:
        return 1

    def measure(self, n_batches: int = 20, batch_size: int = 256, seed: int = 0,
                max_seconds: float | None = None) -> float:
        """Windows/s over ``n_batches`` (fewer if ``max_seconds`` runs out), after warm-up."""
        it = self.batches(batch_size, seed)
        for _ in range(self.warmup_batches):
            next(it)
        n, t0 = 0, time.perf_counter()
        for _ in range(n_batches):
            n += len(next(it)[ACTION])
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
        elapsed = time.perf_counter() - t0
        getattr(it, "close", lambda: None)()
        return n / elapsed

    def close(self) -> None:
        """Release files, loaders and worker processes."""
        return None


# ── (a) the upper bound: everything in RAM, one gather per key ────────────────────────────────

class NumpyBound(Baseline):
    def __init__(self, spec: WindowSpec | None = None) -> None:
        super().__init__(spec, "numpy bound", "RAM, concatenated arrays")

    def build(self, episodes: Sequence[Episode], workdir: Path) -> None:
        self._register(episodes)
        self.keys = [k for k in (STATE, ACTION, IMAGE) if k in episodes[0]]
        self.data = {k: np.concatenate([ep[k] for ep in episodes]) for k in self.keys}
        episode_of = np.repeat(np.arange(len(episodes)), self.lengths)
        t = np.arange(len(episode_of)) - self.starts[episode_of]
        self.tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key in self.keys:  # per frame: global row of every window step, and its pad flag
            idx, pad = window_indices(t, self.lengths[episode_of], self.spec.offsets(key))
            self.tables[key] = (idx + self.starts[episode_of][:, None], pad)

    def _gather(self, g: np.ndarray) -> Batch:
        out: Batch = {}
        for key in self.keys:
            rows, pad = self.tables[key]
            out[key] = self.data[key][rows[g]]
            out[pad_key(key)] = pad[g]
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        return self._gather(rng.integers(0, len(self.data[ACTION]), batch_size))

    def windows(self, positions: np.ndarray) -> Batch:
        return self._gather(self.starts[positions[:, 0]] + positions[:, 1])


# ── (b) robomimic: HDF5 file, SequenceDataset with hdf5_cache_mode=None ───────────────────────

class RobomimicHDF5(Baseline):
    """robomimic's layout (data/demo_N/{obs/<key>, actions, rewards, dones}, attrs num_samples),
    written like robomimic's dataset_states_to_obs.py: contiguous uncompressed datasets by default,
    gzip with ``compress=True`` (its --compress flag), no next_obs (its --exclude-next-obs).
    Reads follow SequenceDataset.get_sequence_from_demo with hdf5_cache_mode=None: per sample and
    key, look the dataset up by path, slice the in-episode part, pad by repeating the edge row."""

    OBS_NAMES = {STATE: "state", IMAGE: "front_image"}

    def __init__(self, spec: WindowSpec | None = None, compress: bool = False) -> None:
        storage = "HDF5 " + ("gzip" if compress else "uncompressed contiguous")
        super().__init__(spec, "robomimic HDF5", storage)
        self.compress = compress
        self._file: h5py.File | None = None

    def build(self, episodes: Sequence[Episode], workdir: Path) -> None:
        self._register(episodes)
        self.path = workdir / "robomimic.hdf5"
        obs_kwargs: dict[str, Any] = {"compression": "gzip"} if self.compress else {}
        with h5py.File(self.path, "w") as f:
            data = f.create_group("data")
            for i, ep in enumerate(episodes):
                demo = data.create_group(f"demo_{i}")
                n = len(ep[ACTION])
                demo.create_dataset("actions", data=ep[ACTION])
                demo.create_dataset("rewards", data=np.zeros(n))
                demo.create_dataset("dones", data=(np.arange(n) == n - 1).astype(np.int64))
                for key, name in self.OBS_NAMES.items():
                    if key in ep:
                        demo.create_dataset(f"obs/{name}", data=ep[key], **obs_kwargs)
                demo.attrs["num_samples"] = n
            data.attrs["total"] = int(self.lengths.sum())
            data.attrs["env_args"] = json.dumps({"env_name": "robolearn-bench", "type": 1})

    @property
    def file(self) -> h5py.File:  # lazily opened exactly as SequenceDataset.hdf5_file does
        if self._file is None:
            assert self.path is not None, "build() first"
            self._file = h5py.File(self.path, "r", swmr=True, libver="latest", rdcc_nbytes=1e10)
        return self._file

    def _sequence(self, demo: str, key: str, t: int, length: int, frames_to_stack: int,
                  seq_length: int) -> tuple[np.ndarray, np.ndarray]:
        begin, end = max(0, t - frames_to_stack), min(length, t + seq_length)
        begin_pad, end_pad = max(0, frames_to_stack - t), max(0, t + seq_length - length)
        rows = self.file[f"data/{demo}/{key}"][begin:end]
        rows = np.concatenate([np.repeat(rows[:1], begin_pad, axis=0), rows,
                               np.repeat(rows[-1:], end_pad, axis=0)])
        valid = np.array([False] * begin_pad + [True] * (end - begin) + [False] * end_pad)
        return rows, valid

    def windows(self, positions: np.ndarray) -> Batch:
        obs_keys = [k for k in (STATE, IMAGE) if k != IMAGE or self.with_images]
        cols: dict[str, list[np.ndarray]] = {k: [] for k in [*obs_keys, ACTION, "obs_valid",
                                                              "action_valid"]}
        to, ta = self.spec.obs_horizon, self.spec.action_horizon
        for e, t in positions.tolist():
            demo, length = f"demo_{e}", int(self.lengths[e])
            for key in obs_keys:
                rows, valid = self._sequence(demo, f"obs/{self.OBS_NAMES[key]}", t, length,
                                             to - 1, 1)
                cols[key].append(rows)
            cols["obs_valid"].append(valid)
            rows, valid = self._sequence(demo, "actions", t, length, 0, ta)
            cols[ACTION].append(rows)
            cols["action_valid"].append(valid)
        out: Batch = {k: np.stack(cols[k]) for k in [*obs_keys, ACTION]}
        obs_pad = ~np.stack(cols["obs_valid"])  # robomimic's pad_mask is True where *valid*
        for key in obs_keys:
            out[pad_key(key)] = obs_pad
        out[pad_key(ACTION)] = ~np.stack(cols["action_valid"])
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ── correctness check and the benchmark ───────────────────────────────────────────────────────

def check_positions(lengths: np.ndarray, spec: WindowSpec, seed: int = 1) -> np.ndarray:
    """(episode, step) rows covering both episode edges plus random interior steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in sorted(set(rng.integers(0, len(lengths), 6).tolist()) | {0, len(lengths) - 1}):
        n = int(lengths[e])
        edges = {0, 1, spec.obs_horizon - 1, n - spec.action_horizon, n - 2, n - 1}
        for t in sorted(edges | set(rng.integers(0, n, 3).tolist())):
            if 0 <= t < n:
                rows.append((e, t))
    return np.array(rows, dtype=np.int64)


def _np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def check_against_bound(bound: NumpyBound, other: Baseline, video_mae_max: float = 12.0) -> str:
    """Assert ``other`` returns the bound's windows at fixed positions; returns a short note."""
    positions = check_positions(bound.lengths, bound.spec)
    ref, got = bound.windows(positions), other.windows(positions)
    shapes = other.spec.shapes(len(positions), bound.with_images, other.image_layout)
    note = "exact"
    for key, shape in shapes.items():
        value = _np(got[key])
        assert value.shape == shape, f"{other.name}: {key} {value.shape} != {shape}"
        if key != IMAGE:
            assert np.array_equal(value, ref[key]), f"{other.name}: {key} differs from the bound"
            continue
        if other.image_layout == "CHW":
            value = np.moveaxis(value, 2, -1)
        if value.dtype != np.uint8:  # LeRobot's image (not video) path returns float in [0, 1]
            value = np.round(value.astype(np.float64) * 255).astype(np.uint8)
        err = np.abs(value.astype(np.int16) - ref[key].astype(np.int16))
        if other.lossless_images:
            assert err.max() == 0, f"{other.name}: lossless images differ (max {err.max()})"
        else:
            mae = float(err.mean())
            assert mae <= video_mae_max, f"{other.name}: video MAE {mae:.1f} > {video_mae_max}"
            note = f"low-dim exact, video MAE {mae:.1f}/255"
    return note


def _disk_mb(path: Path | None) -> float | None:
    if path is None:
        return None
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def _print_targets(console: Any, rates: dict[tuple[str, str, int], float]) -> None:
    """The ratios the targets are stated in: robolearn against each named baseline."""
    def r(section: str, name: str, workers: int = 0) -> float | None:
        return rates.get((section, name, workers))

    mine = r("low-dim", "robolearn sampler")
    bound = r("low-dim", "numpy bound")
    if mine and bound:
        console.print(f"low-dim: robolearn sampler / numpy bound = {mine / bound:.2f} "
                      f"(bound is {bound / mine:.2f}x faster; target: within 2x)")
    for section in ("low-dim", "camera"):
        h5 = r(section, "robomimic HDF5")
        ours = r(section, "robolearn sampler")
        if h5 and ours:
            console.print(f"{section}: robolearn sampler / robomimic HDF5 = {ours / h5:.1f}x")
    for workers, ours_name in ((0, "robolearn sampler"), (2, "robolearn DataLoader")):
        ours, theirs = r("camera", ours_name, workers), r("camera", "LeRobot video", workers)
        if ours and theirs:
            console.print(f"camera, {workers} workers: robolearn / LeRobotDataset (video) = "
                          f"{ours / theirs:.1f}x (target: >= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--length", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per contender")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="time cap per contender")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader num_workers values for LeRobot")
    parser.add_argument("--no-lerobot", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench-baselines-")
    workdir = args.workdir or Path(tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    camera = make_episodes(args.episodes, args.length, with_images=True, seed=0)
    lowdim = [{k: v for k, v in ep.items() if k != IMAGE} for ep in camera]
    console.print(f"{args.episodes} episodes x {args.length} steps generated in "
                  f"{time.perf_counter() - t0:.1f} s; workdir {workdir}")

    spec, load = WindowSpec(), os.getloadavg()[0]  # the load says whether others share the CPUs
    table = Table(title=f"window sampling, batch {args.batch_size}, To={spec.obs_horizon}, "
                        f"Ta={spec.action_horizon}, {os.cpu_count()} CPU cores, "
                        f"load average at start {load:.1f}")
    numeric = ("workers", "build s", "disk MB", "windows/s", "of bound")
    for col in ("data", "contender", "storage", *numeric, "check"):
        table.add_column(col, justify="right" if col in numeric else "left")
    rates: dict[tuple[str, str, int], float] = {}
    for section, episodes in (("low-dim", lowdim), ("camera", camera)):
        sub = workdir / section.replace("-", "")
        sub.mkdir(exist_ok=True)
        from bench._robolearn_contender import Robolearn

        contenders: list[Baseline] = [NumpyBound(), Robolearn(), RobomimicHDF5()]
        if not args.no_lerobot:
            os.environ.setdefault("HF_DATASETS_CACHE", str(workdir / "hf_datasets_cache"))
            from bench._lerobot_baseline import LeRobot

            contenders += [LeRobot(use_videos=v) for v in
                           ([True, False] if section == "camera" else [True])]
        bound = contenders[0]
        assert isinstance(bound, NumpyBound)
        bound_rate = 0.0
        for contender in contenders:
            t0 = time.perf_counter()
            contender.build(episodes, sub)
            build_s = time.perf_counter() - t0
            note = "reference" if contender is bound else check_against_bound(bound, contender)
            variants: list[tuple[Baseline, int | None]] = [(contender, None)]
            if hasattr(contender, "with_workers"):
                variants = [(contender.with_workers(n), n) for n in args.workers]
            for variant, workers in variants:
                rate = variant.measure(args.batches, args.batch_size,
                                       max_seconds=args.max_seconds)
                bound_rate = bound_rate or rate
                rates[(section, variant.name, workers or 0)] = rate
                table.add_row(section, variant.name, variant.storage,
                              "-" if workers is None else str(workers), f"{build_s:.1f}",
                              f"{_disk_mb(variant.path):.1f}" if variant.path else "-",
                              f"{rate:,.0f}", f"{100 * rate / bound_rate:.3g}%", note)
                console.print(f"  {section:8s} {variant.name:16s} workers={workers}: "
                              f"{rate:,.0f} windows/s")
        for contender in contenders:
            contender.close()
    console.print(table)
    _print_targets(console, rates)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
