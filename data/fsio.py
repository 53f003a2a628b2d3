"""Small file-system primitives the episode store's crash safety rests on.

- :class:`WriterLock`: one writer per store. ``fcntl.flock`` on the store directory itself (and
  on ``writer.lock``, which older robolearn versions lock) is released by the kernel when its
  holder dies (even by SIGKILL), so a lock left by a dead process never blocks; deleting
  ``writer.lock`` does not release it. The file's text (pid, host, time) only names the holder.
- :func:`atomic_write_json`: write to a temporary file, fsync, rename over the target, fsync the
  directory. A reader or a crash sees the old file or the new one, never half of one.
- :class:`CommitLog`: the append-only JSON-lines log whose fsync'd lines are the commit points.
  A line without its trailing newline is an append cut short by a crash: readers ignore it and
  the next writer truncates it. An append that fails (disk full) is truncated back at once.
- :class:`Staging`: a hidden directory beside a new store where it is built; renamed into place
  when complete, so a store appears whole or not at all.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from data.records import check_record
from data.schema import StoreCorruptError, StoreError, StoreLockedError

log = logging.getLogger(__name__)

STAGING_MARK = ".robolearn-staging"  # inside a staging directory, flock'd by its builder


def os_problem(exc: OSError) -> str:
    """What an OSError means for the user, in words ("the disk is full ...")."""
    if exc.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False).encode()
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"{path}: cannot write: {os_problem(exc)}") from None


def _holder_text() -> bytes:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    return f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode()


class WriterLock:
    """An exclusive, non-blocking lock on the store directory ``path.parent`` and on ``path``;
    held until :meth:`release` or process death."""

    def __init__(self, path: Path, store_name: str) -> None:
        self.path = path
        self.store_name = store_name
        self._dir_fd: int | None = None
        self._fd: int | None = None
        try:
            # The directory cannot be deleted from under a live store: its lock holds even when
            # someone removes writer.lock (which then let a second writer in).
            self._dir_fd = self._lock(os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY))
            self._fd = self._lock(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as exc:
            self.release()
            raise StoreError(f"{store_name}: cannot open the store for writing: "
                             f"{os_problem(exc)}") from None
        except BaseException:
            self.release()
            raise
        try:  # informational only (names the holder in the error): a full disk must not stop us
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, _holder_text(), 0)
        except OSError:
            pass

    def _lock(self, fd: int) -> int:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = self.path.read_text(errors="replace").strip()
            except OSError:
                holder = ""
            raise StoreLockedError(
                f"{self.store_name}: another writer holds the store "
                f"({holder or 'unknown process'}). Only one process may record into a store at "
                "a time; open it with mode='r' to read while it records.") from None
        return fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    @property
    def held(self) -> bool:
        return self._dir_fd is not None


class CommitLog:
    """Append-only JSON lines; :meth:`read_new` returns the complete records since the last call."""

    def __init__(self, path: Path, store_name: str) -> None:
        self.path = path
        self.store_name = store_name
        self.offset = 0  # bytes of complete lines consumed so far
        self.line_no = 0

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                blob = f.read()
        except FileNotFoundError:
            raise StoreCorruptError(f"{self.store_name}: commit log {self.path.name} is missing; "
                                    "the store cannot tell which episodes are committed") from None
        end = blob.rfind(b"\n") + 1  # a tail without newline is an append still in flight
        records = []
        for line in blob[:end].splitlines():
            self.line_no += 1
            where = f"{self.store_name}/{self.path.name} line {self.line_no} (byte offset " \
                    f"{self.offset})"
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "op" not in rec:
                    raise ValueError("not a record")
            except ValueError:
                raise StoreCorruptError(
                    f"{where} is not a valid commit record: {line[:80]!r}") from None
            check_record(rec, where)
            records.append(rec)
            self.offset += len(line) + 1
        return records

    def torn_tail_bytes(self) -> int:
        """Bytes after the last complete line (left by a crash during an append)."""
        return os.path.getsize(self.path) - self._complete_size()

    def _complete_size(self) -> int:
        with open(self.path, "rb") as f:
            blob = f.read()
        return blob.rfind(b"\n") + 1

    def truncate_torn_tail(self) -> int:
        size = self._complete_size()
        torn = os.path.getsize(self.path) - size
        if torn:
            with open(self.path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        return torn

    def check_unchanged(self, size: int | None = None) -> None:
        """Refuse to write when the log holds more than this writer has read: another process
        committed behind its back (its lock was bypassed), so rows it means to write may belong
        to an episode already committed there."""
        size = os.path.getsize(self.path) if size is None else size
        if size != self.offset:
            raise StoreLockedError(
                f"{self.store_name}: {self.path.name} changed from {self.offset} to {size} bytes "
                "while this process held the store's writer lock: another process wrote to the "
                "store (was writer.lock deleted?). Stopped before writing; nothing committed is "
                "lost. Close every writer and open the store again.")

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync: when this returns, the record is committed. When it
        raises, the log is as it was (a write cut short, by a full disk say, is undone)."""
        line = (json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)
                + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise StoreError(f"{self.store_name}: cannot commit to {self.path.name}: "
                             f"{os_problem(exc)}; nothing was committed") from None
        try:
            size = os.fstat(fd).st_size
            self.check_unchanged(size)
            try:
                done = 0
                while done < len(line):  # a short write means the rest did not fit: retry it
                    done += os.write(fd, line[done:])
                os.fsync(fd)
            except OSError as exc:
                self._undo(fd, size)
                raise StoreError(f"{self.store_name}: cannot commit to {self.path.name}: "
                                 f"{os_problem(exc)}; nothing was committed, the store is as it "
                                 "was (free space, then commit again)") from None
        finally:
            os.close(fd)

    def _undo(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        except OSError as exc:  # readers still ignore a tail without newline; writers cut it
            log.error("%s: could not truncate the failed append to %s (%s)", self.store_name,
                      self.path.name, os_problem(exc))


class Staging:
    """A hidden directory ``.<name>.creating-<random>`` beside ``target`` to build a new store
    in; :meth:`finish` renames it onto ``target``, :meth:`abandon` removes it.

    It holds a marker file flock'd by its builder: a staging directory whose marker nobody holds
    was left by a builder that died (a SIGKILLed merge), and :func:`clean_stale_staging` removes
    it. Directories without the marker are not robolearn's and are never touched.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        clean_stale_staging(target.parent)
        self.path = target.with_name(f".{target.name}.creating-{uuid.uuid4().hex[:8]}")
        self._fd: int | None = None
        self._made = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir()
            self._made = True
            # The marker appears under its name already locked, so a concurrent clean-up never
            # takes a directory being built for stale.
            tmp = self.path / f"{STAGING_MARK}.tmp"
            self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.write(self._fd, b"robolearn staging directory for " + str(target).encode()
                     + b": " + _holder_text())
            os.rename(tmp, self.path / STAGING_MARK)
        except OSError as exc:
            self.abandon()
            raise StoreError(f"{target}: cannot create: {os_problem(exc)}") from None

    def finish(self) -> None:
        """Rename the built directory onto the target (an empty directory there is replaced)."""
        try:
            if self.target.is_dir() and not self.target.is_symlink() \
                    and not any(self.target.iterdir()):
                self.target.rmdir()
            os.rename(self.path, self.target)
        except OSError as exc:
            self.abandon()
            why = "something appeared there meanwhile" if exc.errno in (
                errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR) else os_problem(exc)
            raise StoreError(f"{self.target}: cannot create: {why}") from None
        (self.target / STAGING_MARK).unlink(missing_ok=True)
        fsync_dir(self.target.parent)
        self._release()

    def abandon(self) -> None:
        if self._made:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove staging directories in ``parent`` whose builder died; return them."""
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.glob(".*.creating-*")
                      if p.is_dir() and not p.is_symlink() and (p / STAGING_MARK).is_file()]
    except OSError:
        return removed
    for path in candidates:
        try:
            fd = os.open(path / STAGING_MARK, os.O_RDONLY)
        except OSError:
            continue  # removed by someone else meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its builder is alive
        finally:
            os.close(fd)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            log.warning("%s: cannot remove a stale staging directory (%s)", path,
                        os_problem(exc))
            continue
        log.warning("removed %s, left by an interrupted store creation or merge", path)
        removed.append(path)
    return removed


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
