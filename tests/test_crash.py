"""Crash safety and concurrency with real processes: SIGKILL at random moments, a reader
beside a writer, a second writer, a lock left by a dead process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data import EpisodeStore, StoreLockedError
from data.store import EpisodeInfo
from tests.crash_writer import expected

ROOT = Path(__file__).resolve().parents[1]
WRITER = [sys.executable, "-m", "tests.crash_writer"]


def spawn(path: Path, seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*WRITER, str(path), str(seed)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "READY", proc.stderr.read() if proc.stderr else line
    return proc


def check_episode(store: EpisodeStore, info: EpisodeInfo) -> None:
    ep = store.episode(info.index)
    rows = np.arange(info.start, info.start + info.length)
    want = [expected(int(r)) for r in rows]
    np.testing.assert_array_equal(ep["observation.state"], np.stack([w["observation.state"]
                                                                     for w in want]))
    np.testing.assert_array_equal(ep["action"], np.stack([w["action"] for w in want]))
    img = ep["observation.images.cam"].astype(int)
    ref = np.stack([w["observation.images.cam"] for w in want]).astype(int)
    assert np.abs(img - ref).max() <= 4, f"episode {info.index}: camera frames differ"
    assert sum(info.sources.values()) == info.length
    np.testing.assert_array_equal(np.diff(ep["timestamp"]) > 0, True)


def test_sigkill_at_random_moments_never_loses_committed_episodes(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = np.random.default_rng(1)
    committed: dict[int, tuple[int, int]] = {}  # start -> (length, index) reported by children
    recovered = dropped = 0
    for kill in range(25):
        proc = spawn(path, seed=kill)
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        for line in out.splitlines():
            _, idx, start, length = line.split()
            committed[int(start)] = (int(length), int(idx))

        # The store opens read-only while the killed writer's leftovers are still there, and
        # shows every episode the child reported committed, intact.
        with EpisodeStore.open(path, "r") as reader:
            starts = {i.start: i for i in reader.infos()}
            for start, (length, _) in committed.items():
                assert start in starts, f"kill {kill}: committed episode at row {start} lost"
                assert starts[start].length == length
            n_before = len(reader)
            pending = (path / "inflight.json").exists()
        # Opening for writing recovers the in-flight episode up to its last flush (or drops it
        # when nothing was flushed); either way the result verifies clean.
        with EpisodeStore.open(path, "a") as writer:
            grew = len(writer) - n_before
            assert grew in (0, 1) and (grew == 0 or pending)
            if grew:
                info = writer.info(len(writer) - 1)
                assert not info.complete and "recovered" in info.tags
                committed[info.start] = (info.length, info.index)
                recovered += 1
            else:
                dropped += 1
            assert not (path / "inflight.json").exists()
            assert writer.verify() == []
            for info in writer.infos():
                check_episode(writer, info)
    assert len(committed) >= 25
    assert recovered > 0, "no kill landed mid-episode: the test did not exercise recovery"


def test_reader_sees_only_committed_episodes_while_writer_records(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = spawn(path, seed=7)
    try:
        with EpisodeStore.open(path, "r") as reader:
            seen = 0
            deadline = time.time() + 20
            while seen < 12 and time.time() < deadline:
                reader.refresh()  # no reopen: new commits appear, nothing half-written does
                for info in reader.infos()[seen:]:
                    check_episode(reader, info)
                seen = len(reader)
                time.sleep(0.01)
            assert seen >= 12
    finally:
        proc.kill()
        proc.communicate()


def test_second_writer_refused_and_dead_writers_lock_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = spawn(path, seed=3)
    try:
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            EpisodeStore.open(path, "a")
        with EpisodeStore.open(path, "r") as reader:  # readers are never refused
            assert reader.fps == 50
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    t0 = time.monotonic()
    with EpisodeStore.open(path, "a") as writer:  # the kernel dropped the dead process's lock
        assert writer.verify() == []
    assert time.monotonic() - t0 < 5


def test_torn_commit_record_is_ignored_then_truncated(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = spawn(path, seed=5)
    assert proc.stdout is not None
    proc.stdout.readline()  # one episode committed
    proc.kill()
    proc.communicate()
    log = path / "episodes.jsonl"
    with EpisodeStore.open(path, "a") as w:
        n = len(w)
    good = log.read_bytes()
    with open(log, "ab") as f:  # what a kill in the middle of the append leaves
        f.write(b'{"op":"add","id":99,"start":4096,"len')
    with EpisodeStore.open(path, "r") as r:
        assert len(r) == n
        assert any("cut short" in p for p in r.verify())
    with EpisodeStore.open(path, "a") as w:
        assert len(w) == n
    assert log.read_bytes() == good
