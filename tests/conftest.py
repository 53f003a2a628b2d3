"""Shared helpers for the store, sampling and CLI tests: a small camera schema, deterministic
per-step values, and a factory that records a real store on disk; the interactive-imitation
tests' small start (``tiny_demo``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import EpisodeStore

CAM = "observation.images.cam"
FPS = 10.0
FEATURES: dict[str, dict[str, Any]] = {
    "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "grip"]},
    CAM: {"dtype": "uint8", "shape": [32, 32, 3]},
    "action": {"dtype": "float32", "shape": [2]},
}


def smooth_image(shape: Sequence[int], seed: int) -> np.ndarray:
    """A smooth colour gradient (JPEG reproduces it within a few grey levels)."""
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = seed % 100
    img = base + 2 * yy[..., None] + 2 * xx[..., None] + 10 * np.arange(c)[None, None, :]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_frame(features: Mapping[str, Mapping[str, Any]], episode: int,
               step: int) -> dict[str, np.ndarray]:
    """The values of one step; every value depends on (episode, step, feature)."""
    out: dict[str, np.ndarray] = {}
    for i, (key, spec) in enumerate(features.items()):
        shape = tuple(spec["shape"])
        if len(shape) == 3:
            out[key] = smooth_image(shape, 31 * episode + 3 * step + 11 * i)
        else:
            n = int(np.prod(shape))
            out[key] = (np.arange(n).reshape(shape) + 1000 * episode + step + 0.25 * i) \
                .astype(spec["dtype"])
    return out


def record_store(path: Path, lengths: Sequence[int] = (12, 7, 20), *,
                 features: Mapping[str, Mapping[str, Any]] = FEATURES,
                 fps: float = FPS) -> Path:
    """Record one episode per length into a new store at ``path`` and close it.

    Episode ``e`` has task ``"pick"`` (even e) or ``"place"`` (odd e), success ``e % 2 == 0``,
    tag ``f"ep{e}"``, steps from ``make_frame(features, e, t)`` and alternating policy (even t)
    and teleop (odd t) sources.
    """
    with EpisodeStore.create(path, features, fps=fps, robot_type="arm") as store:
        with store.recorder() as rec:
            for ep, n in enumerate(lengths):
                rec.start_episode(task="pick" if ep % 2 == 0 else "place")
                for t in range(n):
                    rec.add(make_frame(features, ep, t), source="teleop" if t % 2 else "policy")
                rec.end_episode(success=ep % 2 == 0, tags=[f"ep{ep}"])
    return path


StoreFactory = Callable[..., Path]


@pytest.fixture
def make_store(tmp_path: Path) -> StoreFactory:
    """``make_store(name, lengths, features=..., fps=...)``: :func:`record_store` in tmp_path."""

    def make(name: str = "store", lengths: Sequence[int] = (12, 7, 20), **kwargs: Any) -> Path:
        return record_store(tmp_path / name, lengths, **kwargs)

    return make


def shard_file(store: EpisodeStore, row: int) -> Path:
    """The camera shard file holding ``row``."""
    return store.path / "data" / CAM / "c" / str(row // store.shard_len) / "0" / "0" / "0"


def episode_arrays(store: EpisodeStore, index: int) -> dict[str, np.ndarray]:
    return dict(store.episode(index).data)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 40-step scripted demonstration on the oval's first straight: a small BC policy."""
    path = tmp_path_factory.mktemp("demo") / "tiny.zarr"
    from robolearn.cli import main

    assert main(["collect", str(path), "env=robolearn/SimCar-v0", "episodes=1",
                 "max_steps=40", "-q"]) == 0
    return path
