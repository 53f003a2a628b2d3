"""The episode store's recorder with real Zarr v3 groups on disk: memory and flush limits,
bad input named, interrupted and discarded episodes, one recorder at a time, frames as they
come. Round trips, filters, delete, copy and merge: ``test_store.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import EpisodeStore, StoreError
from tests.conftest import CAM, FEATURES, FPS, make_frame

LOWDIM = ("observation.state", "action")


# ------------------------------------------------------------------------------- recorder


@pytest.mark.parametrize("flush_every", [1, 4, 7])
def test_recorder_memory_is_bounded_by_flush_every(tmp_path: Path, flush_every: int) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    journal = store.path / "inflight.json"
    n = 17
    with store.recorder(flush_every=flush_every) as rec:
        for t in range(n):
            rec.add(make_frame(FEATURES, 0, t))
            buffered = {len(v) for v in rec._buf.values()}
            assert buffered == {(t + 1) % flush_every}, "buffer holds more than flush_every"
            assert rec.num_steps == t + 1
            flushed = (t + 1) // flush_every * flush_every
            if flushed:  # the journal says how many steps are on disk
                assert json.loads(journal.read_text())["flushed"] == flushed
                on_disk = np.asarray(store.array("action")[0:flushed])
                np.testing.assert_array_equal(
                    on_disk, np.stack([make_frame(FEATURES, 0, s)["action"]
                                       for s in range(flushed)]))
            else:
                assert not journal.exists()
        info = rec.end_episode()
    assert info.length == n and not journal.exists()
    assert store.episode(0)["action"][:, 0].tolist() == [
        make_frame(FEATURES, 0, t)["action"][0] for t in range(n)]


def test_flush_happens_after_flush_seconds_or_flush_every_steps(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    journal = tmp_path / "s" / "inflight.json"
    with store.recorder(flush_every=5, flush_seconds=3600) as rec:
        for t in range(4):
            rec.add(make_frame(FEATURES, 0, t))
        assert not journal.exists()  # neither limit reached: nothing flushed yet
        rec.add(make_frame(FEATURES, 0, 4))
        assert json.loads(journal.read_text())["flushed"] == 5
        rec.end_episode()
    with store.recorder(flush_every=1000, flush_seconds=0.05) as rec:
        for t in range(3):
            rec.add(make_frame(FEATURES, 1, t))
        time.sleep(0.06)
        rec.add(make_frame(FEATURES, 1, 3))  # a second of wall time (here 50 ms) has passed
        assert json.loads(journal.read_text())["flushed"] == 4
        rec.end_episode()


def test_the_flush_clock_starts_with_the_episode(tmp_path: Path) -> None:
    """A recorder opened before a slow reset (an RC car arming) does not flush at the
    episode's first step, right after the robot's first command, nor between episodes."""
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    journal = tmp_path / "s" / "inflight.json"
    with store.recorder(flush_every=1000, flush_seconds=0.2) as rec:
        for ep in range(2):
            time.sleep(0.3)  # the reset: longer than flush_seconds
            rec.add(make_frame(FEATURES, ep, 0))
            rec.add(make_frame(FEATURES, ep, 1))
            assert not journal.exists(), f"episode {ep}: flushed at its first steps"
            time.sleep(0.25)
            rec.add(make_frame(FEATURES, ep, 2))
            assert json.loads(journal.read_text())["flushed"] == 3
            rec.end_episode()


@pytest.mark.parametrize(("bad", "needle"), [
    ({"note": object()}, "episode metadata.note: object"),
    ({"params": {"gains": [1.0, {1, 2}]}}, "episode metadata.params.gains[1]: set"),
    ({"arr": np.zeros(3)}, "episode metadata.arr: ndarray"),
])
def test_end_episode_rejects_non_json_metadata_naming_key(
        tmp_path: Path, bad: dict[str, Any], needle: str) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder() as rec:
        for t in range(3):
            rec.add(make_frame(FEATURES, 0, t))
        with pytest.raises(TypeError) as err:
            rec.end_episode(success=True, **bad)
        assert needle in str(err.value)
        assert len(store) == 0
        # the episode is still open: fixing the metadata commits every step
        info = rec.end_episode(success=True, note="fixed", n=np.int64(3))
    assert info.length == 3 and info.metadata == {"note": "fixed", "n": 3}


def test_end_episode_rejects_non_bool_success(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder() as rec:
        rec.add(make_frame(FEATURES, 0, 0))
        with pytest.raises(TypeError, match="success"):
            rec.end_episode(success="yes")  # type: ignore[arg-type]
        rec.discard_episode()
        with pytest.raises(StoreError, match="no steps"):
            rec.end_episode()
    assert len(store) == 0


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda f: {k: v for k, v in f.items() if k != "action"}, "missing features ['action']"),
    (lambda f: {**f, "reward": 1.0}, "unknown keys ['reward']"),
    (lambda f: {**f, "observation.state": np.zeros(5)}, "frame['observation.state']: shape"),
    (lambda f: {**f, CAM: np.zeros((32, 32), np.uint8)}, f"frame['{CAM}']: shape"),
    (lambda f: {**f, CAM: np.zeros((32, 32, 3), np.float32)}, f"frame['{CAM}']: camera"),
    (lambda f: {**f, "action": np.array([1 + 2j, 0])}, "frame['action']: dtype"),
])
def test_bad_frames_raise_naming_the_key(
        tmp_path: Path, edit: Callable[[dict[str, np.ndarray]], dict[str, Any]],
        needle: str) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder() as rec:
        rec.add(make_frame(FEATURES, 0, 0))
        with pytest.raises(ValueError) as err:
            rec.add(edit(make_frame(FEATURES, 0, 1)))
        assert needle in str(err.value)
        assert rec.num_steps == 1  # the bad step was not buffered
        rec.add(make_frame(FEATURES, 0, 1))
        info = rec.end_episode()
    assert info.length == 2
    np.testing.assert_array_equal(store.episode(0)["action"][1],
                                  make_frame(FEATURES, 0, 1)["action"])


def test_bad_source_is_rejected(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder() as rec:
        with pytest.raises(ValueError, match="unknown action source 'human'"):
            rec.add(make_frame(FEATURES, 0, 0), source="human")
    with pytest.raises(ValueError, match="unknown action source"):
        store.recorder(source="robot")


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_exception_in_recorder_block_keeps_incomplete_episode(
        tmp_path: Path, exc_type: type[BaseException]) -> None:
    path = tmp_path / "s"
    store = EpisodeStore.create(path, FEATURES, fps=FPS)
    with pytest.raises(exc_type), store.recorder(task="pour", flush_every=3) as rec:
        for t in range(5):
            rec.add(make_frame(FEATURES, 0, t), source="teleop")
        rec.end_episode(success=True)
        for t in range(4):
            rec.add(make_frame(FEATURES, 1, t), source="intervention")
        raise exc_type("stop")
    store.close()
    store = EpisodeStore.open(path, "r")
    assert len(store) == 2
    done, cut = store.info(0), store.info(1)
    assert (done.complete, done.success, done.tags) == (True, True, ())
    assert (cut.complete, cut.success, cut.tags, cut.length, cut.task) == \
        (False, None, ("interrupted",), 4, "pour")
    assert cut.sources == {"intervention": 4}
    np.testing.assert_array_equal(
        store.episode(1)["observation.state"],
        np.stack([make_frame(FEATURES, 1, t)["observation.state"] for t in range(4)]))
    assert not (path / "inflight.json").exists()
    assert store.select(complete=False) == [1]


def test_interrupted_episode_can_be_dropped(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with pytest.raises(RuntimeError), store.recorder(keep_interrupted=False) as rec:
        rec.add(make_frame(FEATURES, 0, 0))
        raise RuntimeError("stop")
    assert len(store) == 0 and not (store.path / "inflight.json").exists()
    with store.recorder() as rec:  # the store stays usable; the dropped rows are reused
        rec.add(make_frame(FEATURES, 1, 0))
        assert rec.end_episode().start == 0


def test_discarded_episode_leaves_nothing(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder(flush_every=2) as rec:
        for t in range(5):
            rec.add(make_frame(FEATURES, 0, t))
        rec.discard_episode()
        for t in range(3):
            rec.add(make_frame(FEATURES, 1, t))
        rec.end_episode()
    assert len(store) == 1 and store.num_frames == 3
    np.testing.assert_array_equal(
        store.episode(0)["action"],
        np.stack([make_frame(FEATURES, 1, t)["action"] for t in range(3)]))


def test_only_one_recorder_at_a_time(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder():
        with pytest.raises(StoreError, match="already writing"):
            with store.recorder():
                pass
    with store.recorder():  # released on exit
        pass


def test_black_frames_are_real_frames(tmp_path: Path) -> None:
    """An all-zero camera frame equals zarr's fill value; it must still be written to disk, so
    verify() never mistakes it for a lost chunk."""
    store = EpisodeStore.create(tmp_path / "s", FEATURES, fps=FPS)
    with store.recorder() as rec:
        for t in range(3):
            rec.add({**make_frame(FEATURES, 0, t), CAM: np.zeros((32, 32, 3), np.uint8),
                     "action": np.zeros(2, np.float32)})
        rec.end_episode()
    assert store.verify() == []
    assert not store.episode(0)[CAM].any()


def test_non_contiguous_camera_frames_are_recorded(tmp_path: Path) -> None:
    """Frames that are views with odd strides (a crop, a channel flip) record like any other."""
    yy, xx = np.mgrid[0:40, 0:40]
    big = np.stack([np.stack([xx * 6, yy * 6, (xx + yy + 3 * t) * 3], -1)
                    for t in range(20)]).astype(np.uint8)
    frames = big[:, 4:36, 4:36, ::-1]  # a crop + BGR->RGB flip: a view with odd strides
    assert not frames[0].flags["C_CONTIGUOUS"]
    store = EpisodeStore.create(tmp_path / "s", {"observation.images.cam": {
        "dtype": "uint8", "shape": [32, 32, 3]}}, fps=10)
    with store.recorder() as rec:
        for f in frames:
            rec.add({"observation.images.cam": f})
        rec.end_episode()
    got = store.episode(0)["observation.images.cam"]
    assert got.shape == (20, 32, 32, 3)
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 6  # JPEG error only
    assert np.abs(got.astype(int) - frames[..., ::-1].astype(int)).mean() > 20  # order kept


def test_scalar_features_round_trip(tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", {"next.reward": {"dtype": "float32",
                                                                 "shape": []}}, fps=10)
    with store.recorder() as rec:
        for k in range(12):
            rec.add({"next.reward": np.float32(k) / 2})
        rec.end_episode()
    np.testing.assert_array_equal(store.episode(0)["next.reward"], np.arange(12) / 2)
