"""The recorder's background writer (``background=True``, what the real-time commands use):
``add`` never waits for the disk, blocks land in order with their journal, a failed write is
raised on the recorder's thread and written again once the disk has room, and a discarded
episode leaves no journal behind. Slow and full disks are made at the system call (``os.fsync``
of the journal), as in ``test_store_defects.py``; SIGKILL: ``test_crash.py`` (its writer records
in background mode half of the time)."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from data import EpisodeStore, StoreError
from tests.conftest import FPS
from tests.test_store_defects import LOWDIM, assert_episode, lowdim_frame, record


def _journal_fsync(action: str) -> object:
    real = os.fsync

    def fsync(fd: int) -> None:
        if ".inflight.json." in os.readlink(f"/proc/self/fd/{fd}"):
            if action == "slow":
                time.sleep(0.3)
            else:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)
    return fsync


@pytest.mark.parametrize("background", [False, True])
def test_a_slow_disk_stalls_add_only_without_the_background_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: bool) -> None:
    store = EpisodeStore.create(tmp_path / "s", LOWDIM, fps=FPS)
    monkeypatch.setattr(os, "fsync", _journal_fsync("slow"))
    with store.recorder(flush_every=5, background=background) as rec:
        longest = 0.0
        for t in range(12):
            t0 = time.perf_counter()
            rec.add(lowdim_frame(0, t))
            longest = max(longest, time.perf_counter() - t0)
        assert rec.num_steps == 12
        rec.end_episode(success=True)
    if background:
        assert longest < 0.15  # two flushes were due; neither waited for the 0.3 s fsync
    else:
        assert longest >= 0.3
    with EpisodeStore.open(tmp_path / "s") as store:
        assert [i.length for i in store.infos()] == [12]
        assert_episode(store, 0, 0)


def test_flush_waits_for_the_background_writer_and_the_journal_counts_every_block(
        tmp_path: Path) -> None:
    store = EpisodeStore.create(tmp_path / "s", LOWDIM, fps=FPS)
    with store.recorder(flush_every=3, background=True) as rec:
        record(rec, 0, 10)  # three blocks handed to the writer, one step buffered
        rec.flush()
        journal = (store.path / "inflight.json").read_text()
        assert '"flushed": 10' in journal
        rec.end_episode()
        record(rec, 1, 4)
        rec.discard_episode()  # its block (written or queued) leaves no journal behind
        assert not (store.path / "inflight.json").exists()
        record(rec, 2, 7)
        rec.end_episode()
    with EpisodeStore.open(tmp_path / "s") as store:
        assert [i.length for i in store.infos()] == [10, 7]
        assert_episode(store, 0, 0)
        assert_episode(store, 1, 2)


def test_a_full_disk_in_the_background_is_raised_and_written_again_once_there_is_room(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EpisodeStore.create(tmp_path / "s", LOWDIM, fps=FPS)
    with store.recorder(flush_every=4, background=True) as rec:
        record(rec, 0, 4)
        rec.flush()
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", _journal_fsync("full"))
            with pytest.raises(StoreError, match="inflight.json: cannot write: the disk is full"):
                for t in range(4, 40):  # the writer fails at the block of steps 4..7
                    rec.add(lowdim_frame(0, t))
            raised_at = t
            assert raised_at > 7  # on the recorder's thread, at a later add
        for t in range(raised_at + 1, 40):  # room again: the failed blocks are written first
            rec.add(lowdim_frame(0, t))
        info = rec.end_episode(success=True)
    # the step whose add raised was buffered before the hand-off failed, so it is kept
    assert info.length == 40
    with EpisodeStore.open(tmp_path / "s") as store:
        assert_episode(store, 0, 0)
        assert store.verify() == []


def test_ctrl_c_while_a_discard_waits_for_the_writer_keeps_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A discard waits for the writer's queued blocks (0.3 s a journal here); Ctrl-C in that
    wait must not commit the discarded episode on the way out, nor leave a journal that the
    next writer would recover."""
    path = tmp_path / "s"
    store = EpisodeStore.create(path, LOWDIM, fps=FPS)
    monkeypatch.setattr(os, "fsync", _journal_fsync("slow"))

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), \
                store.recorder(flush_every=2, background=True) as rec:
            record(rec, 0, 6)  # three blocks handed to the writer
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            rec.discard_episode()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    monkeypatch.undo()
    store.close()
    with EpisodeStore.open(path, "a") as store:
        assert len(store) == 0 and not (path / "inflight.json").exists()
