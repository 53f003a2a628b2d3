"""The episode store with real Zarr v3 groups on disk: round trips, filters, delete, copy and
merge. The recorder: ``test_recorder.py``. Locking, foreign and corrupt data:
``test_store_integrity.py``."""

from __future__ import annotations

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
