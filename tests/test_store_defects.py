"""Defects of the episode store found by attacking it (issue 13), each with real files: a full
disk (a 3 MiB tmpfs, and a write cut short deterministically), a second writer let in by a
deleted lock file, values that do not fit their dtype, non-JSON metadata, bad store paths,
and schema edits in zarr.json. The ``data`` commands' side: ``test_data_cmd_errors.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import EpisodeStore
from tests.conftest import CAM, FEATURES, FPS

LOWDIM = {k: v for k, v in FEATURES.items() if k != CAM}


def lowdim_frame(episode: int, step: int) -> dict[str, np.ndarray]:
    return {"observation.state": np.array([episode, step, episode * step, 1], np.float32),
            "action": np.array([step, -episode], np.float32)}


def record(rec: Any, episode: int, steps: int) -> None:
    for t in range(steps):
        rec.add(lowdim_frame(episode, t))


def assert_episode(store: EpisodeStore, index: int, episode: int) -> None:
    ep = store.episode(index)
    want = [lowdim_frame(episode, t) for t in range(len(ep))]
    for key in LOWDIM:
        np.testing.assert_array_equal(ep[key], np.stack([w[key] for w in want]))


# ------------------------------------------------------------------------------- lossy values

TYPED = {
    "u8": {"dtype": "uint8", "shape": [2]},
    "f32": {"dtype": "float32", "shape": [2]},
    "i32": {"dtype": "int32", "shape": []},
    "f16": {"dtype": "float16", "shape": []},
}


def typed_frame(**changes: Any) -> dict[str, Any]:
    return {"u8": np.array([1, 255], np.uint16), "f32": np.array([0.1, -np.inf]),
            "i32": 7, "f16": np.float64(0.5), **changes}


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("u8", np.array([3, 300], np.uint16), "value 300 does not fit uint8"),  # was stored as 44
    ("u8", np.array([-1, 2]), "value -1 does not fit uint8"),  # was 255
    ("f32", np.array([1e40, 0.0]), "value 1e+40 does not fit float32"),  # was inf
    ("f16", np.int64(70000), "value 70000 does not fit float16"),  # was inf
    ("i32", np.float64("nan"), "cannot become int32 (it holds NaN)"),
    ("i32", np.int64(2**40), f"value {2**40} does not fit int32"),  # wrapped to 0
])
def test_values_that_do_not_fit_the_dtype_are_refused(tmp_path: Path, key: str, value: Any,
                                                      needle: str) -> None:
    with EpisodeStore.create(tmp_path / "s", TYPED, fps=FPS) as store, store.recorder() as rec:
        rec.add(typed_frame())
        rec.add(typed_frame())
        with pytest.raises(ValueError) as err:
            rec.add(typed_frame(**{key: value}))
        msg = str(err.value)
        assert f"frame['{key}']" in msg and needle in msg and "episode 0" in msg \
            and "step 2" in msg, msg
        rec.end_episode()
        ep = store.episode(0)
    assert len(ep) == 2
    np.testing.assert_array_equal(ep["u8"], [[1, 255]] * 2)
    np.testing.assert_array_equal(ep["f32"], np.array([[0.1, -np.inf]] * 2, np.float32))
    np.testing.assert_array_equal(ep["i32"], [7, 7])  # a Python int fits int32
    np.testing.assert_array_equal(ep["f16"], [0.5, 0.5])
