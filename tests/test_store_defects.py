"""Defects of the episode store found by attacking it (issue 13), each with real files: a full
disk (a 3 MiB tmpfs, and a write cut short deterministically), a second writer let in by a
deleted lock file, values that do not fit their dtype, non-JSON metadata, bad store paths,
and schema edits in zarr.json. The ``data`` commands' side: ``test_data_cmd_errors.py``."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import data.store
from data import EpisodeStore, StoreError, StoreLockedError
from tests.conftest import CAM, FEATURES, FPS, StoreFactory
from tests.mounts import fill_disk, tmpfs
from tests.test_crash import check_episode, spawn

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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (the issue's reproduction); skipped where mounting is not possible."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        yield disk


# ------------------------------------------------------------------------------- full disk


def test_commit_write_cut_short_is_undone_and_raised(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write of the commit record writes half, then the disk is full: end_episode must
    raise (it returned normally, and the next commit appended behind the torn line)."""
    path = tmp_path / "s"
    log = path / "episodes.jsonl"
    real_write = os.write
    calls: list[int] = []

    def half_then_full(fd: int, blob: Any) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("episodes.jsonl"):
            return real_write(fd, blob)
        calls.append(len(blob))
        if len(calls) == 1:
            return real_write(fd, bytes(blob)[:len(blob) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with EpisodeStore.create(path, LOWDIM, fps=FPS) as store, store.recorder() as rec:
        record(rec, 0, 5)
        rec.end_episode(success=True)
        good = log.read_bytes()
        record(rec, 1, 7)
        with monkeypatch.context() as m:
            m.setattr(os, "write", half_then_full)
            with pytest.raises(StoreError, match="disk is full") as err:
                rec.end_episode(success=True)
        assert str(path) in str(err.value) and "nothing was committed" in str(err.value)
        assert len(calls) == 2  # the rest of the short write was tried, then undone
        assert log.read_bytes() == good
        assert len(store) == 1
        info = rec.end_episode(success=True)  # space again: the same episode commits whole
        assert (info.index, info.length) == (1, 7)
    with EpisodeStore.open(path, "r") as store:
        assert [i.length for i in store.infos()] == [5, 7]
        assert_episode(store, 0, 0)
        assert_episode(store, 1, 1)
        assert store.verify() == []


def test_full_disk_at_the_commit_log_write_on_tmpfs(small_disk: Path) -> None:
    """The issue's case for real: the commit record crosses into a page the full tmpfs cannot
    give, so os.write writes only what fits in the log's last page."""
    path = small_disk / "s"
    log = path / "episodes.jsonl"
    page = os.sysconf("SC_PAGE_SIZE")
    with EpisodeStore.create(path, LOWDIM, fps=FPS) as store, store.recorder() as rec:
        record(rec, 0, 5)
        rec.end_episode(success=True)
        record(rec, 1, 9)
        rec.flush()  # rows and journal on disk: only the commit record is left to write
        overhead = len(json.dumps({"op": "task", "task": ""}, separators=(",", ":"))) + 1
        gap = (-log.stat().st_size - 16) % page
        store.add_task("x" * (gap - overhead + (page if gap < overhead else 0)))
        assert log.stat().st_size % page == page - 16  # 16 bytes left in the last page
        good = log.read_bytes()
        filler = fill_disk(small_disk)
        with pytest.raises(StoreError, match="disk is full"):
            rec.end_episode(success=True)
        assert log.read_bytes() == good
        with EpisodeStore.open(path, "r") as reader:  # opens while the disk is full
            assert len(reader) == 1
        with pytest.raises(StoreError, match="other: cannot create: the disk is full"):
            EpisodeStore.create(small_disk / "other", LOWDIM, fps=FPS)
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "s"]
        filler.unlink()
        info = rec.end_episode(success=True)
        assert info.length == 9
        record(rec, 2, 3)  # the next commit lands on a clean line
        rec.end_episode(success=False)
    with EpisodeStore.open(path, "r") as store:
        assert [i.length for i in store.infos()] == [5, 9, 3]
        for i in range(3):
            assert_episode(store, i, i)
        assert store.verify() == []


def test_journal_write_failing_leaves_the_last_journal(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills while the in-flight journal is written (fsync reports ENOSPC, as NFS
    and thin-provisioned disks do): flush raises, the previous journal stays, no temporary
    file is left, and the steps it names are recovered."""
    path = tmp_path / "s"
    journal = path / "inflight.json"
    real_fsync = os.fsync

    def full_at_journal(fd: int) -> None:
        if ".inflight.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    store = EpisodeStore.create(path, LOWDIM, fps=FPS)
    rec = store.recorder().__enter__()
    record(rec, 0, 4)
    rec.flush()
    before = journal.read_bytes()
    record(rec, 0, 6)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full_at_journal)
        with pytest.raises(StoreError, match="inflight.json: cannot write: the disk is full"):
            rec.flush()
    assert journal.read_bytes() == before
    assert sorted(p.name for p in path.iterdir()) == [
        "data", "episodes.jsonl", "inflight.json", "writer.lock", "zarr.json"]
    store.close()  # the recorder dies here: its journal says 4 steps
    with EpisodeStore.open(path, "a") as store:
        assert [(i.length, i.complete) for i in store.infos()] == [(4, False)]
        assert_episode(store, 0, 0)
        assert store.verify() == []


NOISY = {**LOWDIM, CAM: {"dtype": "uint8", "shape": [32, 32, 3]}}


def test_store_stays_openable_after_a_full_disk_anywhere(small_disk: Path) -> None:
    """Record until the 3 MiB disk is full, with varied free space and flush sizes, so the
    failure lands in chunk writes, the journal or the commit log: every acknowledged episode
    survives, the store opens while full, and after freeing space it records again."""
    rng = np.random.default_rng(0)
    failures = []
    for _trial in range(4):
        for p in small_disk.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        filler = small_disk / "filler"
        filler.write_bytes(b"\xff" * int(rng.integers(1900, 2700) << 10))  # 0.3-1.1 MiB free
        path = small_disk / "s"
        acked: dict[int, tuple[int, int]] = {}  # start -> (length, episode)
        with EpisodeStore.create(path, NOISY, fps=FPS) as store:
            with pytest.raises(StoreError, match="disk is full") as err, \
                    store.recorder(flush_every=int(rng.integers(3, 30))) as rec:
                for ep in itertools.count():
                    for t in range(int(rng.integers(5, 40))):
                        noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                        rec.add({**lowdim_frame(ep, t), CAM: noise})
                    info = rec.end_episode(success=True, episode=ep)
                    acked[info.start] = (info.length, ep)
            failures.append(str(err.value))
        leftovers = [p for p in path.rglob("*") if p.name.endswith((".partial", ".tmp"))]
        assert leftovers == []
        with EpisodeStore.open(path, "r") as reader:
            got = {i.start: i for i in reader.infos()}
            for start, (length, ep) in acked.items():
                assert got[start].length == length and got[start].metadata["episode"] == ep
                assert_episode(reader, got[start].index, ep)
                reader.episode(got[start].index, [CAM])  # decodes
        filler.unlink()
        with EpisodeStore.open(path, "a") as writer:  # recovers what was flushed
            with writer.recorder() as rec:
                for t in range(5):
                    rec.add({**lowdim_frame(99, t), CAM: np.zeros((32, 32, 3), np.uint8)})
                rec.end_episode(success=True)
        with EpisodeStore.open(path, "r") as reader:
            assert reader.verify() == [] and reader.info(-1).length == 5
    assert len(failures) == 4


# ------------------------------------------------------------------------------- second writer


def test_deleted_writer_lock_does_not_let_a_second_writer_in(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = spawn(path, seed=4)
    assert proc.stdout is not None
    committed = [proc.stdout.readline()]
    try:
        (path / "writer.lock").unlink()
        with pytest.raises(StoreLockedError, match="another writer"):
            EpisodeStore.open(path, "a")
        committed += [proc.stdout.readline() for _ in range(3)]  # the first writer carries on
    finally:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    committed += out.splitlines()
    with EpisodeStore.open(path, "a") as store:
        starts = {i.start: i for i in store.infos()}
        for line in committed:
            _, _, start, length = line.split()
            assert starts[int(start)].length == int(length)
            check_episode(store, starts[int(start)])
        assert store.verify() == []


class _LockFileOnly:
    """The lock of a writer that trusted writer.lock alone (robolearn before this fix) after
    the file was deleted: it takes nothing."""

    def __init__(self, path: Path, store_name: str) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False


def test_writer_stops_when_another_committed_behind_its_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A records; writer B, let in without the lock, records at the same rows and
    commits. A's next flush used to overwrite B's acknowledged episode; now A stops."""
    path = tmp_path / "s"
    a = EpisodeStore.create(path, LOWDIM, fps=FPS)
    rec_a = a.recorder().__enter__()
    record(rec_a, 0, 3)
    rec_a.end_episode(success=True)
    record(rec_a, 1, 4)
    rec_a.flush()
    with monkeypatch.context() as m:
        m.setattr(data.store, "WriterLock", _LockFileOnly)
        b = EpisodeStore.open(path, "a")
    with b, b.recorder() as rec_b:
        record(rec_b, 7, 20)
        info_b = rec_b.end_episode(success=True)
    assert info_b.start == rec_a._start + rec_a.num_steps  # where A writes next
    good = (path / "episodes.jsonl").read_bytes()
    record(rec_a, 1, 40)
    with pytest.raises(StoreLockedError, match="another process wrote to the store"):
        rec_a.flush()  # rows 7.. of A's episode would overwrite B's
    with pytest.raises(StoreLockedError):
        rec_a.end_episode(success=True)
    rec_a.discard_episode()
    rec_a.__exit__(None, None, None)
    a.close()
    assert (path / "episodes.jsonl").read_bytes() == good
    with EpisodeStore.open(path, "r") as store:
        assert [i.length for i in store.infos()] == [3, 4, 20]  # B recovered A's flushed steps
        assert [i.complete for i in store.infos()] == [True, False, True]
        for index, episode in enumerate((0, 1, 7)):
            assert_episode(store, index, episode)  # B's acknowledged episode is intact


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


# ------------------------------------------------------------------------------- minor items


@pytest.mark.parametrize(("meta", "needle"), [
    ({"ret": float("nan")}, "episode metadata.ret: nan"),
    ({"stats": {"max": [1.0, np.float32("inf")]}}, "episode metadata.stats.max[1]: inf"),
])
def test_non_finite_metadata_is_refused_naming_the_key(tmp_path: Path, meta: dict[str, Any],
                                                       needle: str) -> None:
    """NaN was written into episodes.jsonl as the bare word NaN, which is not JSON."""
    path = tmp_path / "s"
    with pytest.raises(ValueError, match="metadata.gain: inf"):
        EpisodeStore.create(path, LOWDIM, fps=FPS, gain=float("inf"))
    with EpisodeStore.create(path, LOWDIM, fps=FPS) as store, store.recorder() as rec:
        record(rec, 0, 3)
        with pytest.raises(ValueError) as err:
            rec.end_episode(**meta)
        assert needle in str(err.value) and "not JSON" in str(err.value)
        rec.end_episode(ret=None)
    for line in (path / "episodes.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda word: pytest.fail(f"{word} in the commit log"))


@pytest.mark.parametrize("name", ["tab\there.zarr", "new\nline.zarr", "bell\x07.zarr"])
def test_store_path_with_control_characters_is_refused(tmp_path: Path, name: str) -> None:
    """zarr drops such characters from paths: create left a stray .creating-* directory."""
    with pytest.raises(StoreError, match="control characters"):
        EpisodeStore.create(tmp_path / name, LOWDIM, fps=FPS)
    assert list(tmp_path.iterdir()) == []


def _edit_root(path: Path, edit: Any) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"]["robolearn"])
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("edit", "needles"), [
    (lambda a: a.update(shard_len=a["shard_len"] * 2), [f"data/{CAM}/zarr.json", "shard_len"]),
    (lambda a: a["features"]["observation.state"].update(shape=[5], names=None),
     ["data/observation.state/zarr.json", "(4,)", "(5,)"]),
    (lambda a: a["features"]["action"].update(dtype="float64"),
     ["data/action/zarr.json", "dtype float32", "float64"]),
])
def test_verify_compares_the_schema_with_every_array(make_store: StoreFactory, edit: Any,
                                                     needles: list[str]) -> None:
    """Edits of zarr.json passed verify and failed later (in training, reading frames)."""
    path = make_store(lengths=(3, 4))
    _edit_root(path, edit)
    with EpisodeStore.open(path, "r") as store:
        problems = store.verify()
    assert problems and all(n in problems[0] for n in needles), problems


def test_verify_reports_episodes_sharing_rows(make_store: StoreFactory) -> None:
    """What two writers let in at once left behind (before the lock fix) now shows."""
    path = make_store(lengths=(3, 4))
    log = path / "episodes.jsonl"
    second = json.loads(log.read_text().splitlines()[1])
    with open(log, "a") as f:
        f.write(json.dumps({**second, "id": 9}) + "\n")  # the rows of episode 1 again
    with EpisodeStore.open(path, "r") as store:
        problems = store.verify()
    assert problems == [f"{path}: episodes 1 (id 1) and 2 (id 9) share rows from "
                        f"{second['start']} on"]


def test_records_readers_would_refuse_are_never_written(tmp_path: Path) -> None:
    """Commit records are checked on read; a writer must not commit one that would make its
    own store unreadable: a mistyped task or tags fail at once, and a journal whose task or
    sources a crash (or a hand) garbled is recovered without them."""
    path = tmp_path / "s"
    store = EpisodeStore.create(path, LOWDIM, fps=FPS)
    with pytest.raises(TypeError, match="task: expected a string or None, got 5"):
        store.recorder(task=5)  # type: ignore[arg-type]
    rec = store.recorder(task="pick").__enter__()
    record(rec, 0, 3)
    with pytest.raises(TypeError, match=r"tags=...\): expected strings, got \[1\]"):
        rec.end_episode(tags=[1])  # type: ignore[list-item]
    rec.flush()
    journal = json.loads((path / "inflight.json").read_text())
    (path / "inflight.json").write_text(json.dumps({**journal, "task": 5, "sources": "all"}))
    store.close()  # the recorder dies with its journal garbled
    with EpisodeStore.open(path, "a") as store:
        info = store.info(0)
        assert (info.length, info.task, info.sources) == (3, None, {"scripted": 3})
        assert store.verify() == []
    assert len(EpisodeStore.open(path, "r")) == 1


def test_an_episode_whose_rows_failed_to_sync_is_never_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of a chunk fails (EIO, or ENOSPC on thin-provisioned disks): Linux marks the pages
    clean, so a retried end_episode's fsync succeeds for rows that may never reach the disk. The
    retry used to commit them; it must refuse, and a re-recorded episode commits normally."""
    real_fsync = os.fsync
    failing = [True]

    def fsync_fails_once(fd: int) -> None:
        if failing[0] and "/data/" in os.readlink(f"/proc/self/fd/{fd}"):
            failing[0] = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    with EpisodeStore.create(tmp_path / "s", LOWDIM, fps=FPS) as store, store.recorder() as rec:
        record(rec, 0, 5)
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", fsync_fails_once)
            with pytest.raises(StoreError, match="cannot sync to disk"):
                rec.end_episode(success=True)
            with pytest.raises(StoreError, match="cannot be committed: discard_episode"):
                rec.end_episode(success=True)  # the retry's fsync would have returned 0
        assert len(store) == 0
        rec.discard_episode()
        record(rec, 0, 5)
        rec.end_episode(success=True)
        assert len(store) == 1
        assert_episode(store, 0, 0)
