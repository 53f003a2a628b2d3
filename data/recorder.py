"""Streaming episodes into a store one step at a time, with bounded memory and crash recovery."""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data import layout
from data.fsio import atomic_write_json, os_problem
from data.records import check_counts, jsonable
from data.schema import Source, StoreError

if TYPE_CHECKING:
    from data.store import EpisodeInfo, EpisodeStore

log = logging.getLogger(__name__)


class Recorder:
    """Records episodes step by step; use as ``with store.recorder() as rec:``.

    ``add(frame, source=...)`` buffers one step (a dict with every feature of the store). The
    buffer goes to disk, and the journal notes it, once ``flush_seconds`` of wall time have
    passed since the last flush or ``flush_every`` steps are buffered, whichever comes first:
    a killed process loses at most about a second of recording, memory stays bounded, and bulk
    writes (faster than real time) are not slowed down by tiny flushes.
    ``end_episode(success=..., **meta)`` commits the episode; ``discard_episode()`` forgets it.
    Leaving the ``with`` block because of an exception (Ctrl-C included) commits the steps
    recorded so far as an incomplete episode tagged ``interrupted``, unless
    ``keep_interrupted=False``.

    ``background=True`` (what the control loop's real-time commands use): ``add`` hands a due
    flush to a writer thread and returns, so encoding and writing (a 640x480 camera's 30 JPEG
    frames: 56-127 ms here with other jobs running, up to four periods of a 30 Hz arm) never
    stall the robot's loop. Blocks are written in order; at most :data:`QUEUED_BLOCKS` wait
    (then ``add`` waits: memory stays bounded), so a killed process loses at most those and
    the unflushed second. A write that fails there is raised by the next ``add``, ``flush`` or
    ``end_episode``, which writes the failed blocks again first (a full disk: free space, go
    on). ``flush()`` itself always returns with everything on disk.
    """

    def __init__(self, store: EpisodeStore, *, task: str | None = None,
                 flush_every: int | None = None, source: Source | str = Source.SCRIPTED,
                 keep_interrupted: bool = True, flush_seconds: float = 1.0,
                 background: bool = False) -> None:
        if store._busy:
            raise StoreError(f"{store.name}: a recorder or copy is already writing this store")
        self.store = store
        self.task = _check_task(task)
        # Default cap: ten seconds of data at the store's rate, at least one image shard.
        self.flush_every = int(flush_every or max(store.shard_len, 10 * round(store.fps), 1))
        if self.flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        if flush_seconds <= 0:
            raise ValueError(f"flush_seconds must be > 0, got {flush_seconds}")
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self.default_source = Source.parse(source)
        self.keep_interrupted = keep_interrupted
        self._keys = store.keys
        self._in_episode = False
        self._meta: dict[str, Any] = {}  # the episode's metadata from start_episode
        self.episodes_committed = 0
        self._taken = 0  # this episode's steps out of the buffer: written, or queued to be
        self._discarding = False  # discard_episode() began and has not finished
        self._writer = _Writer(self._write_block) if background else None

    # ------------------------------------------------------------------------ context manager
    def __enter__(self) -> Recorder:
        self.store._busy = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self._close(exc_type)
        finally:
            if self._writer is not None:
                self._writer.close()  # every queued block written
            if self._discarding:  # a discard cut short: the writer may have journalled after it
                _remove_journal(self.store)

    def _close(self, exc_type: Any) -> None:
        try:
            if self._in_episode:
                if exc_type is not None and self.keep_interrupted and self.num_steps > 0:
                    self._keep_interrupted(exc_type.__name__)
                else:
                    if self.num_steps:
                        log.warning("%s: dropped an unfinished episode of %d steps",
                                    self.store.name, self.num_steps)
                    self.discard_episode()
        finally:
            self.store._busy = False

    def _keep_interrupted(self, why: str) -> None:
        try:
            info = self.end_episode(success=None, tags=("interrupted",), complete=False)
        except StoreError as exc:  # a full disk, say: the exception in flight says what broke
            log.warning("%s: could not commit the interrupted episode (%s); the steps flushed "
                        "so far are recovered when the store is next opened for writing",
                        self.store.name, exc)
            return
        log.warning("%s: recording interrupted (%s); kept %d steps as incomplete episode %d",
                    self.store.name, why, info.length, info.index)

    # ------------------------------------------------------------------------ episodes
    @property
    def in_episode(self) -> bool:
        """An episode is started (``start_episode``, or ``add``'s implicit start) and not yet
        committed or discarded."""
        return self._in_episode

    @property
    def num_steps(self) -> int:
        return self._taken + len(self._buf["source"]) if self._in_episode else 0

    def start_episode(self, task: str | None = None, **metadata: Any) -> None:
        """Begin an episode (``add`` does this implicitly); ``task`` overrides the recorder's.
        ``metadata`` (JSON data) is journalled with the steps, so an episode recovered after
        its writer died keeps it (which round of a session it belonged to); ``end_episode``'s
        metadata adds to it."""
        if self._in_episode:
            raise StoreError(f"{self.store.name}: end_episode() or discard_episode() the current "
                             "episode before starting another")
        self.store.refresh()
        self._start = self.store.next_start()
        self._task = _check_task(task) if task is not None else self.task
        self._meta = jsonable(metadata, "episode metadata")
        self._flushed = self._taken = 0
        self._unsynced = ""  # why this episode's rows failed to sync (then it cannot commit)
        self._sources = np.zeros(len(Source), dtype=np.int64)
        self._buf: dict[str, list[Any]] = {k: [] for k in self._keys}
        self._t0 = time.time()
        # the flush clock starts with the episode, not with the recorder: a robot's reset (an
        # RC car's arming delay) may outlast flush_seconds, and a flush due at the first step
        # would land right after the robot's first command, where a starved host's write once
        # outlasted the car firmware's 80 ms failsafe (CI, stop 27)
        self._last_flush = time.monotonic()
        self._in_episode = True

    def add(self, frame: Mapping[str, Any], *, source: Source | str | None = None,
            timestamp: float | None = None) -> None:
        """Buffer one step. ``frame`` has one value per feature; ``source`` says where the
        action came from (default: the recorder's); ``timestamp`` defaults to step / fps."""
        if not self._in_episode:
            self.start_episode()
        feats = self.store.features
        missing = [k for k in feats if k not in frame]
        extra = [k for k in frame if k not in feats]
        if missing or extra:
            raise ValueError(f"step {self.num_steps} of the episode being recorded: "
                             + (f"missing features {missing}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"unknown keys {extra} (schema: {list(feats)})" if extra else ""))
        src = self.default_source if source is None else Source.parse(source)
        ts = self.num_steps / self.store.fps if timestamp is None else float(timestamp)
        # check every value before buffering any: a bad step must not leave a partial row
        try:
            values = {key: feat.check_value(key, frame[key]) for key, feat in feats.items()}
        except ValueError as exc:
            raise ValueError(f"{self.store.name}: episode {len(self.store)} (being recorded), "
                             f"step {self.num_steps}: {exc}") from None
        for key, value in values.items():
            self._buf[key].append(value)
        self._buf["timestamp"].append(np.float64(ts))
        self._buf["source"].append(np.uint8(src))
        self._sources[src] += 1
        if len(self._buf["source"]) >= self.flush_every \
                or time.monotonic() - self._last_flush >= self.flush_seconds:
            if self._writer is None:
                self.flush()
            else:
                self._hand_off()

    def flush(self) -> None:
        """Write buffered steps to disk and journal them (recoverable after a crash); with a
        background writer, also wait for the blocks it holds."""
        if self._writer is not None:
            self._hand_off()
            self._settle()
            return
        n = len(self._buf["source"]) if self._in_episode else 0
        self._last_flush = time.monotonic()
        if n == 0:
            return
        self._write_block((self._taken, self._buf, n, self._source_counts()))
        self._taken += n
        self._buf = {k: [] for k in self._keys}

    def _write_block(self, item: tuple[int, dict[str, list[Any]], int, dict[str, int]]
                     ) -> None:
        """Rows ``offset..offset+n`` of the episode (buffered values, stacked here: in the
        background writer's thread a camera's second of frames is copied off the control
        loop's thread too), then the journal that counts them."""
        offset, rows, n, sources = item
        block = {k: np.stack(v) for k, v in rows.items()}
        write_rows(self.store, self._start + offset, block)
        self._flushed = offset + n
        atomic_write_json(self.store.path / "inflight.json", {
            "start": self._start, "flushed": self._flushed, "task": self._task,
            "started": self._t0, "sources": sources, "pid": os.getpid(),
            "metadata": self._meta})

    def _hand_off(self) -> None:
        """Queue the buffer for the background writer (waits only while it is full)."""
        assert self._writer is not None
        self._last_flush = time.monotonic()
        n = len(self._buf["source"]) if self._in_episode else 0
        if self._writer.error is not None:
            self._settle()  # write the failed blocks again first; raises if they fail again
        if n == 0:
            return
        self._writer.put((self._taken, self._buf, n, self._source_counts()))
        self._taken += n
        self._buf = {k: [] for k in self._keys}

    def _settle(self) -> None:
        """Wait for the background writer; blocks it failed to write are written here, in
        order, and a failure is raised (they stay queued for the next try)."""
        assert self._writer is not None
        w = self._writer
        w.drain()
        while w.failed:
            self._write_block(w.failed[0])  # raises: the failed blocks stay for the next try
            w.failed.pop(0)
        w.error = None

    def end_episode(self, success: bool | None = None, *, tags: Iterable[str] = (),
                    complete: bool = True, **metadata: Any) -> EpisodeInfo:
        """Commit the episode; returns its :class:`EpisodeInfo`. ``complete=False`` marks an
        episode cut short (the loop stopped the robot on an error; an import keeps a source's
        incomplete episode incomplete). Extra keyword arguments are stored as the episode's
        metadata (JSON data)."""
        if not self._in_episode or self.num_steps == 0:
            raise StoreError(f"{self.store.name}: end_episode() with no steps recorded")
        if self._writer is not None and self._writer.error is not None:
            log.warning("%s: a background write failed (%s); writing again",
                        self.store.name, self._writer.error)
        if success is not None and not isinstance(success, (bool, np.bool_)):
            raise TypeError(f"end_episode(success=...): expected True, False or None, got "
                            f"{success!r}")
        meta = {**self._meta, **jsonable(metadata, "episode metadata")}
        tags = list(tags)
        if not all(isinstance(t, str) for t in tags):
            raise TypeError(f"end_episode(tags=...): expected strings, got {tags!r}")
        if self._unsynced:
            raise StoreError(f"{self.store.name}: this episode's rows failed to reach the disk "
                             f"({self._unsynced}); a second fsync would report success for data "
                             "that may be lost, so it cannot be committed: discard_episode() "
                             "and record it again")
        self.flush()
        try:
            sync_rows(self.store, self._start, self._start + self._flushed)
        except StoreError as exc:
            # Linux marks the failed pages clean: the next fsync returns 0 whether or not
            # they were written, so a retry must not be believed
            self._unsynced = str(exc)
            raise
        rec = {"op": "add", "id": self.store._next_id, "start": self._start,
               "length": self._flushed, "success": None if success is None else bool(success),
               "complete": complete, "task": self._task, "tags": sorted(set(tags)),
               "sources": self._source_counts(), "created": time.time(),
               "duration_s": time.time() - self._t0, "metadata": meta}
        self.store._commit(rec)
        _remove_journal(self.store)
        self._in_episode = False
        self.episodes_committed += 1
        return self.store.info(len(self.store) - 1)

    def discard_episode(self) -> None:
        """Forget the episode being recorded (its flushed rows are simply reused)."""
        if self._in_episode:
            # ended first: a Ctrl-C while the writer drains must not commit it on the way out
            self._in_episode, self._discarding = False, True
            if self._writer is not None:  # its journal must not be written after the removal
                self._writer.drain()
                self._writer.failed.clear()
                self._writer.error = None
            _remove_journal(self.store)
            self._discarding = False

    def _source_counts(self) -> dict[str, int]:
        return {s.name.lower(): int(self._sources[s]) for s in Source if self._sources[s]}


QUEUED_BLOCKS = 4  # blocks a background writer holds before add() waits for it


class _Writer:
    """The recorder's background writer: one thread writing flushed blocks in order. After a
    failure it writes nothing more; the failed block and those after it wait in ``failed`` for
    the recorder to write them again from its own thread (:meth:`Recorder._settle`)."""

    def __init__(self, write: Any) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self.error: BaseException | None = None
        self.failed: list[Any] = []
        self._thread = threading.Thread(target=self._run, name="recorder-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    try:
                        self._write(item)
                    except BaseException as exc:  # noqa: BLE001  (raised in the recorder's thread)
                        self.error = exc
                        self.failed.append(item)
                else:
                    self.failed.append(item)
            finally:
                self._queue.task_done()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def drain(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


def _check_task(task: str | None) -> str | None:
    if task is not None and not isinstance(task, str):
        raise TypeError(f"task: expected a string or None, got {task!r}")
    return task


# ---------------------------------------------------------------------------- shared writers
def write_rows(store: EpisodeStore, row: int, block: Mapping[str, np.ndarray]) -> None:
    """Write a block of steps (each value ``(n, *shape)``) at ``row`` of every array."""
    n = len(next(iter(block.values())))
    store._log.check_unchanged()  # rows past the log's end may be another writer's episode
    try:
        store._ensure_rows(row + n)
    except OSError as exc:
        raise StoreError(f"{store.name}: growing the arrays to {row + n} rows failed: "
                         f"{os_problem(exc)}") from None
    for key, values in block.items():
        arr = store.writable(key)
        try:
            arr[row:row + n] = values
        except OSError as exc:
            raise StoreError(f"{store.name}: writing rows {row}:{row + n} of data/{key} failed: "
                             f"{os_problem(exc)}") from None
        except Exception as exc:
            raise StoreError(f"{store.name}: writing rows {row}:{row + n} of data/{key} failed: "
                             f"{type(exc).__name__}: {exc}") from exc


def sync_rows(store: EpisodeStore, start: int, stop: int) -> None:
    """fsync the chunk files holding rows [start, stop): committed means on disk."""
    for key in store.keys:
        arr = store.array(key)
        for ck in layout.chunk_keys(arr, start, stop):
            path = store.path / "data" / key / ck
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # an all-fill-value chunk zarr chose not to write
            try:
                os.fsync(fd)
            except OSError as exc:
                raise StoreError(f"{store.name}: data/{key}/{ck}: cannot sync to disk: "
                                 f"{os_problem(exc)}") from None
            finally:
                os.close(fd)


def _remove_journal(store: EpisodeStore) -> None:
    try:
        (store.path / "inflight.json").unlink()
    except FileNotFoundError:
        pass


def recover_inflight(store: EpisodeStore, journal: Path, keep: bool) -> None:
    """Commit (or drop) the steps a dead recorder had flushed; clear its temporary files."""
    for tmp in (store.path / "data").rglob("*.partial"):
        tmp.unlink(missing_ok=True)
    try:
        j = json.loads(journal.read_text())
        start, flushed = int(j["start"]), int(j["flushed"])
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable in-flight journal (%s); dropping the interrupted episode",
                    store.name, exc)
        journal.unlink()
        return
    if start < store._end or flushed <= 0 or not keep:
        if start >= store._end and flushed > 0:
            log.warning("%s: dropped an interrupted episode of %d flushed steps (recover='drop')",
                        store.name, flushed)
        journal.unlink()
        return
    sync_rows(store, start, start + flushed)
    task, sources = j.get("task"), j.get("sources")  # mistyped values are not committed
    meta = j.get("metadata")  # what the writer knew at the episode's start
    meta = {**(meta if isinstance(meta, dict) else {}), "recovered_from_pid": j.get("pid")}
    if not check_counts(sources):
        codes = np.bincount(store.read("source", start, start + flushed), minlength=len(Source))
        sources = {s.name.lower(): int(codes[s]) for s in Source if codes[s]}
    store._commit({"op": "add", "id": store._next_id, "start": start, "length": flushed,
                   "success": None, "complete": False,
                   "task": task if isinstance(task, str) else None, "tags": ["recovered"],
                   "sources": sources,
                   "created": time.time(), "metadata": meta})
    journal.unlink()
    log.warning("%s: recovered an interrupted episode: %d steps kept as incomplete episode %d",
                store.name, flushed, len(store) - 1)


def copy_episodes(src: EpisodeStore, dst: EpisodeStore, indices: list[int],
                  progress: bool = False) -> list[int]:
    """Append episodes of ``src`` to ``dst``. Low-dim rows are copied as values; camera shards
    are copied as files, so JPEG frames are never decoded and re-encoded (no generation loss)."""
    from robolearn_core.progress import track

    if dst._busy:
        raise StoreError(f"{dst.name}: a recorder is writing this store; finish it first")
    new = []
    s = dst.shard_len
    for i in track(indices, "copying episodes", enabled=progress):
        info = src.info(i)
        start = dst.next_start()
        lowdim = [k for k in src.keys if not (k in src.features and src.features[k].image)]
        for a in range(0, info.length, 4096):
            b = min(info.length, a + 4096)
            write_rows(dst, start + a, {k: src.read(k, info.start + a, info.start + b, info)
                                        for k in lowdim})
        for key, feat in src.features.items():
            if not feat.image:
                continue
            for k, ck in enumerate(layout.chunk_keys(src.array(key), info.start,
                                                     info.start + info.length)):
                target = dst.path / "data" / key / "c" / str(start // s + k) / "0" / "0" / "0"
                tmp = target.with_name(target.name + ".copy.partial")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src.path / "data" / key / ck, tmp)
                    os.replace(tmp, target)
                except OSError as exc:
                    tmp.unlink(missing_ok=True)
                    raise StoreError(f"{dst.name}: copying data/{key}/{ck} of {src.name} "
                                     f"failed: {os_problem(exc)}") from None
        sync_rows(dst, start, start + info.length)
        meta = dict(info.metadata)
        meta.setdefault("origin", {"store": src.name, "id": info.id})
        dst._commit({"op": "add", "id": dst._next_id, "start": start, "length": info.length,
                     "success": info.success, "complete": info.complete, "task": info.task,
                     "tags": list(info.tags), "sources": info.sources, "created": info.created,
                     "metadata": meta})
        new.append(len(dst) - 1)
    return new
