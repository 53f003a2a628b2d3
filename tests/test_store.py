"""The episode store with real Zarr v3 groups on disk: round trips, filters, delete, copy and
merge, recorder limits and misuse. Locking, foreign and corrupt data:
``test_store_integrity.py``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import (
    EpisodeStore,
    Source,
    StoreError,
    layout,
)
from tests.conftest import (
    CAM,
    FEATURES,
    FPS,
    StoreFactory,
    episode_arrays,
    make_frame,
    shard_file,
)

LOWDIM = ("observation.state", "action")


def assert_frames_close(got: np.ndarray, want: np.ndarray) -> None:
    """Camera frames after JPEG: same shape and dtype, small mean error, no outliers."""
    assert got.shape == want.shape and got.dtype == np.uint8
    err = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert err.mean() < 3.0, f"mean abs error {err.mean():.2f}"
    assert err.max() <= 24, f"max abs error {err.max()}"


# ------------------------------------------------------------------------------- round trip


def test_round_trip_keeps_steps_sources_timestamps_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "demos.zarr"
    srcs: list[Source | str | int] = ["teleop", "teleop", "intervention", Source.POLICY, 1,
                                      "teleop", "intervention"]
    written: list[list[dict[str, np.ndarray]]] = [[], []]
    with EpisodeStore.create(path, FEATURES, fps=FPS, robot_type="panda", tasks=["lift"],
                             operator="ann", calibration={"cam": [1, 2]}) as store:
        with store.recorder(task="lift", source="teleop") as rec:
            for t, src in enumerate(srcs):  # episode 0: default timestamps, mixed sources
                frame = make_frame(FEATURES, 0, t)
                written[0].append(frame)
                rec.add(frame, source=src)
            first = rec.end_episode(success=True, tags=["b", "a", "b"], operator="bob",
                                    params={"gains": [1.5, 2], "note": None})
            rec.start_episode(task="stack")
            for t in range(5):  # episode 1: explicit timestamps, the recorder's default source
                frame = make_frame(FEATURES, 1, t)
                written[1].append(frame)
                rec.add(frame, timestamp=0.25 * t + 0.01)
            second = rec.end_episode(success=False)
        assert first.index == 0 and second.index == 1 and first.id != second.id

    store = EpisodeStore.open(path, "r")
    assert len(store) == 2 and store.num_frames == len(srcs) + 5
    assert store.fps == FPS and store.robot_type == "panda"
    assert store.tasks == ["lift", "stack"]
    assert store.metadata["operator"] == "ann" and store.metadata["calibration"] == {"cam": [1, 2]}
    assert store.features["observation.state"].names == ("x", "y", "z", "grip")
    assert store.features[CAM].image and not store.features["action"].image
    assert set(store.keys) == {*FEATURES, "timestamp", "source"}

    for index, frames in enumerate(written):
        ep = store.episode(index)
        assert len(ep) == len(frames)
        for key in LOWDIM:
            want = np.stack([f[key] for f in frames])
            assert ep[key].dtype == np.float32
            np.testing.assert_array_equal(ep[key], want)
        assert_frames_close(ep[CAM], np.stack([f[CAM] for f in frames]))

    ep0, ep1 = store.episode(0), store.episode(1)
    np.testing.assert_allclose(ep0["timestamp"], np.arange(len(srcs)) / FPS)
    np.testing.assert_allclose(ep1["timestamp"], 0.25 * np.arange(5) + 0.01)
    assert ep0["source"].tolist() == [int(Source.parse(s)) for s in srcs]
    assert ep1["source"].tolist() == [int(Source.TELEOP)] * 5

    info0, info1 = store.info(0), store.info(1)
    assert info0.sources == {"teleop": 4, "intervention": 2, "policy": 1}
    assert info1.sources == {"teleop": 5}
    assert (info0.success, info0.complete, info0.task, info0.tags) == (True, True, "lift",
                                                                       ("a", "b"))
    assert info0.metadata == {"operator": "bob", "params": {"gains": [1.5, 2], "note": None}}
    assert (info1.success, info1.task, info1.tags, info1.metadata) == (False, "stack", (), {})
    assert store.info(-1) == info1
    with pytest.raises(IndexError):
        store.info(2)
    # subsets of keys
    assert set(store.episode(1, keys=["action"]).data) == {"action"}


def test_camera_episodes_start_on_shard_boundaries(make_store: StoreFactory) -> None:
    lengths = (12, 7, 20, 1)
    store = EpisodeStore.open(make_store(lengths=lengths), "r")
    assert store.shard_len > 1
    infos = store.infos()
    assert [i.length for i in infos] == list(lengths)
    assert len(store) == 4 and store.num_frames == sum(lengths)
    for prev, info in zip(infos, infos[1:], strict=False):
        assert info.start % store.shard_len == 0
        assert info.start >= prev.start + prev.length
    # each episode's frames live in shard files of its own
    shards = [{info.start // store.shard_len + k
               for k in range(-(-info.length // store.shard_len))} for info in infos]
    assert all(a.isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1:])


def test_low_dim_store_packs_episodes_back_to_back(make_store: StoreFactory) -> None:
    feats = {k: v for k, v in FEATURES.items() if k != CAM}
    store = EpisodeStore.open(make_store(lengths=(5, 3, 9), features=feats), "r")
    assert store.shard_len == 1
    assert [(i.start, i.length) for i in store.infos()] == [(0, 5), (5, 3), (8, 9)]
    for e, n in enumerate((5, 3, 9)):
        want = np.stack([make_frame(feats, e, t)["observation.state"] for t in range(n)])
        np.testing.assert_array_equal(store.episode(e)["observation.state"], want)


def test_reader_refresh_sees_new_commits(make_store: StoreFactory) -> None:
    path = make_store(lengths=(4,))
    reader = EpisodeStore.open(path, "r")
    assert len(reader) == 1
    with EpisodeStore.open(path, "a") as writer, writer.recorder() as rec:
        for t in range(6):
            rec.add(make_frame(FEATURES, 9, t))
        assert reader.refresh() == 0  # nothing committed yet
        rec.end_episode(success=True)
    assert len(reader) == 1  # until refreshed
    assert reader.refresh() == 1
    assert len(reader) == 2 and reader.info(1).length == 6
    np.testing.assert_array_equal(reader.episode(1)["action"][:, 0],
                                  [make_frame(FEATURES, 9, t)["action"][0] for t in range(6)])


def test_summary_counts(make_store: StoreFactory) -> None:
    s = EpisodeStore.open(make_store(lengths=(4, 5, 6)), "r").summary()
    assert (s["episodes"], s["frames"], s["success"], s["failure"], s["incomplete"]) == \
        (3, 15, 2, 1, 0)
    # sources alternate policy/teleop starting with policy: ceil(n/2) policy steps
    assert s["sources"] == {"policy": 2 + 3 + 3, "teleop": 2 + 2 + 3}
    assert s["duration_s"] == pytest.approx(15 / FPS)
    assert s["bytes_on_disk"] > 0 and not s["pending_recovery"]


# ------------------------------------------------------------------------------- select


@pytest.fixture(scope="module")
def varied_store(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    """Six small low-dim episodes with known sources, outcomes, tasks, tags, completeness
    (read-only use: shared by the select tests)."""
    feats = {"observation.state": {"dtype": "float32", "shape": [2]},
             "action": {"dtype": "float32", "shape": [1]}}
    plan: list[tuple[list[str], bool | None, str, list[str]]] = [
        (["teleop"] * 3, True, "pick", ["demo"]),
        (["policy", "intervention", "policy"], False, "pick", ["dagger"]),
        (["policy"] * 4, True, "place", ["eval", "dagger"]),
        (["scripted"] * 2, None, "place", []),
        (["autonomous", "policy"], False, "pick", ["rl"]),
    ]
    store = EpisodeStore.create(tmp_path_factory.mktemp("select") / "varied", feats, fps=5)
    step = {"observation.state": np.zeros(2), "action": np.zeros(1)}
    with store.recorder() as rec:
        for sources, success, task, tags in plan:
            rec.start_episode(task=task)
            for s in sources:
                rec.add(step, source=s)
            rec.end_episode(success=success, tags=tags)
    with pytest.raises(RuntimeError), store.recorder(task="place") as rec:  # 5: interrupted
        rec.add(step, source="teleop")
        raise RuntimeError("operator pulled the plug")
    return store


@pytest.mark.parametrize(("criteria", "expected"), [
    ({}, [0, 1, 2, 3, 4, 5]),
    ({"source": "teleop"}, [0, 5]),
    ({"source": Source.INTERVENTION}, [1]),
    ({"source": ["intervention", "autonomous"]}, [1, 4]),
    ({"source": "policy"}, [1, 2, 4]),
    ({"success": True}, [0, 2]),
    ({"success": False}, [1, 4]),
    ({"task": "place"}, [2, 3, 5]),
    ({"task": "unknown"}, []),
    ({"tags": ["dagger"]}, [1, 2]),
    ({"tags": ["dagger", "eval"]}, [2]),
    ({"tags": ["interrupted"]}, [5]),
    ({"complete": False}, [5]),
    ({"complete": True}, [0, 1, 2, 3, 4]),
    ({"source": "policy", "success": False}, [1, 4]),
    ({"source": "policy", "success": False, "task": "pick", "tags": ["rl"]}, [4]),
    ({"task": "place", "complete": True, "success": True}, [2]),
])
def test_select_filters(varied_store: EpisodeStore, criteria: dict[str, Any],
                        expected: list[int]) -> None:
    assert varied_store.select(**criteria) == expected


def test_select_rejects_unknown_source(varied_store: EpisodeStore) -> None:
    with pytest.raises(ValueError, match="human"):
        varied_store.select(source="human")


# ------------------------------------------------------------------------------- delete


def test_delete_hides_episodes_and_keeps_the_rest(make_store: StoreFactory) -> None:
    path = make_store(lengths=(5, 6, 7, 8, 9))
    before = EpisodeStore.open(path, "r")
    kept = [0, 2, 4]
    want = [(before.info(i), episode_arrays(before, i)) for i in kept]
    with EpisodeStore.open(path, "a") as store:
        with pytest.raises(IndexError, match="out of range"):
            store.delete([7])
        assert len(store) == 5  # a bad index deletes nothing
        store.delete([3, 1, -4])  # -4 is episode 1 again
        assert len(store) == 3
    for reopened in (EpisodeStore.open(path, "r"), before):
        reopened.refresh()  # the old reader sees the delete once it refreshes
        assert len(reopened) == 3 and reopened.num_frames == 5 + 7 + 9
        for index, (info, arrays) in enumerate(want):
            got = reopened.info(index)
            assert (got.index, got.id, got.start, got.length, got.tags) == \
                (index, info.id, info.start, info.length, info.tags)
            for key, value in episode_arrays(reopened, index).items():
                np.testing.assert_array_equal(value, arrays[key], err_msg=key)


def test_ids_are_never_reused_after_delete(make_store: StoreFactory) -> None:
    with EpisodeStore.open(make_store(lengths=(3, 3)), "a") as store:
        store.delete([1])
        with store.recorder() as rec:
            rec.add(make_frame(FEATURES, 5, 0))
            info = rec.end_episode()
        assert info.id == 2 and info.index == 1
        assert info.start >= 3  # deleted rows are not reused either


# ------------------------------------------------------------------------------- copy, merge


def assert_same_episodes(a: EpisodeStore, a_idx: list[int], b: EpisodeStore,
                         b_idx: list[int]) -> None:
    assert len(a_idx) == len(b_idx)
    for i, j in zip(a_idx, b_idx, strict=True):
        ia, ib = a.info(i), b.info(j)
        assert (ia.length, ia.success, ia.complete, ia.task, ia.tags, ia.sources) == \
            (ib.length, ib.success, ib.complete, ib.task, ib.tags, ib.sources)
        ea, eb = a.episode(i), b.episode(j)
        for key in a.keys:  # camera frames included: shards are copied as files
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"{key} of episode {i}")


def test_copy_to_subset_reproduces_identical_episodes(make_store: StoreFactory,
                                                      tmp_path: Path) -> None:
    src = EpisodeStore.open(make_store(lengths=(9, 4, 30, 6)), "r")
    out = src.copy_to(tmp_path / "subset", [2, 0])
    try:
        assert len(out) == 2 and out.num_frames == 30 + 9
        assert out.features == src.features and out.fps == src.fps
        assert out.robot_type == "arm" and out.tasks == src.tasks
        assert_same_episodes(src, [2, 0], out, [0, 1])
        assert all(i.start % out.shard_len == 0 for i in out.infos())
        assert out.info(0).metadata["origin"] == {"store": src.name, "id": src.info(2).id}
        # shard files are copied, not re-encoded
        assert shard_file(out, out.info(0).start).read_bytes() == \
            shard_file(src, src.info(2).start).read_bytes()
        assert out.verify() == []
    finally:
        out.close()
    reopened = EpisodeStore.open(tmp_path / "subset", "r")
    assert_same_episodes(src, [2, 0], reopened, [0, 1])


def test_copy_to_compacts_a_store_with_deleted_episodes(make_store: StoreFactory,
                                                        tmp_path: Path) -> None:
    path = make_store(lengths=(5, 6, 7))
    with EpisodeStore.open(path, "a") as store:
        store.delete([0])
        with store.copy_to(tmp_path / "compact") as out:
            assert [i.start for i in out.infos()] == [0, out.shard_len]
            assert_same_episodes(store, [0, 1], out, [0, 1])


def test_append_from_merges_stores(make_store: StoreFactory) -> None:
    a = EpisodeStore.open(make_store("a", lengths=(5, 8)), "r")
    b_path = make_store("b", lengths=(3, 17, 2))
    with EpisodeStore.open(b_path, "a") as b:
        new = b.append_from(a)
        assert new == [3, 4]
        new = b.append_from(a, [1])
        assert new == [5]
    merged = EpisodeStore.open(b_path, "r")
    assert len(merged) == 6 and merged.num_frames == 3 + 17 + 2 + 5 + 8 + 8
    assert_same_episodes(a, [0, 1, 1], merged, [3, 4, 5])
    original_b = [make_frame(FEATURES, 1, t)["observation.state"] for t in range(17)]
    np.testing.assert_array_equal(merged.episode(1)["observation.state"], np.stack(original_b))
    assert len({i.id for i in merged.infos()}) == 6
    assert merged.verify() == []


@pytest.mark.parametrize(("change", "needle"), [
    (lambda f, fps: ({**f, "action": {"dtype": "float32", "shape": [3]}}, fps), "action"),
    (lambda f, fps: ({k: v for k, v in f.items() if k != CAM}, fps), CAM),
    (lambda f, fps: (f, fps * 2), "fps"),
])
def test_merge_refuses_mismatched_stores(
        make_store: StoreFactory, tmp_path: Path,
        change: Callable[[dict[str, Any], float], tuple[dict[str, Any], float]],
        needle: str) -> None:
    src = EpisodeStore.open(make_store(lengths=(3,)), "r")
    feats, fps = change(FEATURES, FPS)
    with EpisodeStore.create(tmp_path / "other", feats, fps=fps) as dst:
        with pytest.raises(StoreError) as err:
            dst.append_from(src)
        msg = str(err.value)
        assert needle in msg and src.name in msg and dst.name in msg, msg
        assert len(dst) == 0


def test_merge_refuses_stores_with_other_shard_length(make_store: StoreFactory,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written when shards held another number of frames (an older robolearn) has
    the same features; its shard files cannot be copied as they are."""
    dst = EpisodeStore.open(make_store("new", lengths=(2,)), "a")
    with monkeypatch.context() as m:
        m.setattr(layout, "shard_len_for", lambda features: 2 * dst.shard_len)
        old = EpisodeStore.open(make_store("old", lengths=(3,)), "r")
    assert old.features == dst.features and old.shard_len != dst.shard_len
    with pytest.raises(StoreError, match="camera shards"):
        dst.append_from(old)
    assert len(dst) == 1 and dst.verify() == []
    dst.close()


def test_copy_to_refuses_existing_target(make_store: StoreFactory) -> None:
    a = EpisodeStore.open(make_store("a", lengths=(2,)), "r")
    b = make_store("b", lengths=(2,))
    with pytest.raises(StoreError, match="already exists"):
        a.copy_to(b)
    assert len(EpisodeStore.open(b, "r")) == 1


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
