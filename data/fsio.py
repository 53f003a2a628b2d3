"""Small file-system primitives the episode store's crash safety rests on.

- :class:`WriterLock`: one writer per store. ``fcntl.flock`` is released by the kernel when its
  holder dies (even by SIGKILL), so a lock left by a dead process never blocks; the lock file's
  text (pid, host, time) is only there to name the live holder in the error.
- :func:`atomic_write_json`: write to a temporary file, fsync, rename over the target, fsync the
  directory. A reader or a crash sees the old file or the new one, never half of one.
- :class:`CommitLog`: the append-only JSON-lines log whose fsync'd lines are the commit points.
  A line without its trailing newline is an append cut short by a crash: readers ignore it and
  the next writer truncates it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from data.schema import StoreCorruptError, StoreLockedError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class WriterLock:
    """An exclusive, non-blocking lock on ``path``; held until :meth:`release` or process death."""

    def __init__(self, path: Path, store_name: str) -> None:
        self.path = path
        self._fd: int | None = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise StoreLockedError(
                f"{store_name}: another writer holds the store ({holder}). Only one process may "
                "record into a store at a time; open it with mode='r' to read while it records."
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


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
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or "op" not in rec:
                    raise ValueError("not a record")
            except ValueError:
                raise StoreCorruptError(
                    f"{self.store_name}: {self.path.name} line {self.line_no} (byte offset "
                    f"{self.offset}) is not a valid commit record: {line[:80]!r}") from None
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

    def append(self, record: dict[str, Any]) -> None:
        """Append one record and fsync: when this returns, the record is committed."""
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)  # one write: a crash leaves a prefix without newline, never a mix
            os.fsync(fd)
        finally:
            os.close(fd)


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total
