"""The episode store: demonstrations, interventions and online experience in one Zarr v3 group.

Crash safety rests on three rules (``data/layout.py`` shows the files):

1. Step data is written into the concatenated ``data/<key>`` arrays *before* the episode is
   committed; every chunk file is replaced atomically (zarr's LocalStore writes a temporary file
   and renames it), and committed steps are never rewritten with other values.
2. An episode exists once its record is a complete line of ``episodes.jsonl`` (one ``write`` plus
   ``fsync``). Readers only look at committed ranges, so whatever a killed writer left past them
   is invisible, and the next episode simply overwrites it.
3. The recorder journals its flushed step count in ``inflight.json``; the next writer to open the
   store commits those steps as an incomplete episode (or drops them, ``recover="drop"``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from data import layout
from data.build import build, check_new_store_path, mismatch
from data.fsio import CommitLog, WriterLock, os_problem
from data.records import check_attrs, check_record, jsonable
from data.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    RESERVED,
    Source,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    parse_features,
)

log = logging.getLogger(__name__)

LOG_NAME = "episodes.jsonl"
JOURNAL_NAME = "inflight.json"
LOCK_NAME = "writer.lock"


@dataclass(frozen=True)
class EpisodeInfo:
    """Metadata of one committed episode (what the commit log records)."""

    index: int  # position among the store's live episodes: store.episode(index)
    id: int  # stable id, never reused, kept across delete and copy within a store
    start: int  # first step's row in the concatenated data arrays
    length: int  # number of steps
    success: bool | None  # task outcome as reported by end_episode, None if unknown
    complete: bool  # False for an episode recovered after its recorder died
    task: str | None
    tags: tuple[str, ...]
    sources: dict[str, int]  # action source name -> number of steps
    created: float  # unix time of the commit
    metadata: dict[str, Any] = field(default_factory=dict)  # user's end_episode(**metadata)


@dataclass
class Episode:
    """One episode's arrays, each ``(T, *feature.shape)``, plus its :class:`EpisodeInfo`."""

    info: EpisodeInfo
    data: dict[str, np.ndarray]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]

    def __len__(self) -> int:
        return self.info.length


class EpisodeStore:
    """A directory of episodes; see the module docstring and README for the format."""

    def __init__(self, path: Path, mode: Literal["r", "a"], *, recover: str = "keep",
                 _name: str | None = None) -> None:
        self.path = Path(path)
        self.name = _name or str(self.path)  # a store being built is named by its target
        self.mode = mode
        self._lock: WriterLock | None = None
        self._busy = False  # a recorder or a copy is writing
        self._check_is_store()
        try:
            self._root = zarr.open_group(str(self.path), mode="r" if mode == "r" else "r+")
            attrs: Any = dict(self._root.attrs)["robolearn"]
        except StoreError:
            raise
        except Exception as exc:
            raise StoreFormatError(f"{self.name}: cannot read the store's root metadata "
                                   f"(zarr.json): {exc}") from None
        self._attrs: dict[str, Any] = attrs
        version = attrs.get("format_version", -1)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.name}: written by a newer robolearn (store format {version}, this "
                f"version reads up to {FORMAT_VERSION}); upgrade robolearn to read it")
        check_attrs(attrs, f"{self.name}/zarr.json attributes.robolearn")
        self.features = parse_features(attrs["features"])
        self.fps = float(attrs["fps"])
        self.shard_len = int(attrs["shard_len"])
        self._arrays: dict[str, zarr.Array] = {}  # read-only handles
        self._warrays: dict[str, zarr.Array] = {}  # writable handles (writer only)
        self._log = CommitLog(self.path / LOG_NAME, self.name)
        self._records: dict[int, dict[str, Any]] = {}  # live episodes by id, in commit order
        self._live_cache: list[dict[str, Any]] | None = None
        self._end = 0  # first free row after every committed (even deleted) episode
        self._next_id = 0
        if mode == "a":
            self._lock = WriterLock(self.path / LOCK_NAME, self.name)
        try:
            self.refresh()
            if mode == "a":
                self._recover(recover)
        except BaseException:
            self.close()  # a store that fails to open holds no lock
            raise

    # ----------------------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str | Path, features: Mapping[str, Any], fps: float, *,
               robot_type: str | None = None, tasks: Iterable[str] = (),
               exist_ok: bool = False, _shard_len: int | None = None,
               _fill: Callable[[EpisodeStore], Any] | None = None,
               **metadata: Any) -> EpisodeStore:
        """Create a store and open it for writing. ``features`` maps names to ``{dtype, shape,
        names?}``; extra keyword metadata (JSON-serialisable) is kept in the store's attributes.

        The store is built in a hidden directory beside ``path`` and renamed into place when
        complete (``_fill``, given the store being built, copies episodes into it first): a
        failure or a kill leaves no ``path`` behind."""
        path = Path(path)
        if (path / "zarr.json").exists():
            if exist_ok:
                return cls.open(path, "a")
            raise StoreError(f"{path}: a store already exists here (use EpisodeStore.open, or "
                             "exist_ok=True)")
        check_new_store_path(path)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        feats = parse_features(features)
        attrs = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "fps": float(fps),
            "robot_type": robot_type, "tasks": list(dict.fromkeys(tasks)),
            "features": {k: f.to_json() for k, f in feats.items()},
            "shard_len": _shard_len or layout.shard_len_for(feats),  # copies keep the source's
            "created": time.time(), "metadata": jsonable(metadata, "metadata"),
        }

        def fill(staging: Path) -> None:
            assert _fill is not None
            with cls(staging, "a", _name=str(path)) as building:
                _fill(building)

        build(path, attrs, {**feats, **RESERVED}, LOG_NAME, fill if _fill else None)
        log.info("created store %s (%d features, %.1f fps)", path, len(feats), fps)
        return cls(path, "a")

    @classmethod
    def merge(cls, path: str | Path,
              sources: Sequence[tuple[EpisodeStore, Iterable[int] | None]], *,
              progress: bool = False) -> EpisodeStore:
        """A new store at ``path`` holding the chosen episodes (None: all) of each source, in
        order; returned open for writing. Every source is checked against the first before
        anything is written, and ``path`` appears only once every episode is copied."""
        if not sources:
            raise StoreError(f"{path}: nothing to merge (no input stores)")
        first = sources[0][0]
        for other, _ in sources[1:]:
            why = mismatch(other, first)
            if why:
                raise StoreError(f"cannot merge {other.name} with {first.name} into {path}: "
                                 f"{why}")
        picks = [(src, list(range(len(src))) if idx is None else list(idx))
                 for src, idx in sources]

        def fill(out: EpisodeStore) -> None:
            for src, idx in picks:
                out.append_from(src, idx, progress=progress)

        return cls.create(path, {k: f.to_json() for k, f in first.features.items()}, first.fps,
                          robot_type=first.robot_type,
                          tasks=[t for src, _ in sources for t in src.tasks],
                          _shard_len=first.shard_len, _fill=fill,
                          **first._attrs.get("metadata", {}))

    @classmethod
    def open(cls, path: str | Path, mode: Literal["r", "a"] = "r", *,
             recover: Literal["keep", "drop"] = "keep") -> EpisodeStore:
        """Open a store: ``"r"`` reads (many readers, even while a writer records), ``"a"`` also
        writes (one writer; an episode left by a dead writer is recovered or dropped)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if recover not in ("keep", "drop"):
            raise ValueError(f"recover must be 'keep' or 'drop', got {recover!r}")
        return cls(Path(path), mode, recover=recover)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        self._arrays.clear()
        self._warrays.clear()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EpisodeStore({self.name!r}, mode={self.mode!r}, episodes={len(self)}, "
                f"frames={self.num_frames})")

    # ----------------------------------------------------------------------------- metadata
    @property
    def robot_type(self) -> str | None:
        return self._attrs.get("robot_type")

    @property
    def tasks(self) -> list[str]:
        seen = dict.fromkeys(self._attrs.get("tasks", []))
        seen.update(dict.fromkeys(r["task"] for r in self._records.values() if r.get("task")))
        return list(seen)

    @property
    def metadata(self) -> dict[str, Any]:
        """Store-level metadata: fps, robot type, tasks, format version and user metadata."""
        return {"fps": self.fps, "robot_type": self.robot_type, "tasks": self.tasks,
                "format_version": self._attrs["format_version"],
                **self._attrs.get("metadata", {})}

    @property
    def keys(self) -> list[str]:
        """Every per-step array: the features plus ``timestamp`` and ``source``."""
        return [*self.features, *RESERVED]

    @property
    def num_frames(self) -> int:
        return sum(r["length"] for r in self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def _check_is_store(self) -> None:
        if not self.path.is_dir():
            raise StoreFormatError(f"{self.name}: no such store (not a directory)")
        if not (self.path / "zarr.json").exists():
            raise StoreFormatError(f"{self.name}: not a robolearn episode store (no zarr.json)")
        try:
            meta = json.loads((self.path / "zarr.json").read_text())
        except ValueError as exc:
            raise StoreFormatError(f"{self.name}/zarr.json: not valid JSON ({exc})") from None
        except OSError as exc:
            raise StoreFormatError(f"{self.name}/zarr.json: cannot read ({os_problem(exc)})") \
                from None
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        attrs = attrs.get("robolearn") if isinstance(attrs, dict) else None
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3 \
                or not isinstance(attrs, dict) \
                or attrs.get("format") != FORMAT_NAME:
            raise StoreFormatError(f"{self.name}: a zarr group, but not a robolearn episode "
                                   "store (no 'robolearn' attributes)")

    # ----------------------------------------------------------------------------- commit log
    def refresh(self) -> int:
        """Read episodes committed since the last refresh; return how many appeared."""
        added = 0
        for rec in self._log.read_new():
            self._apply(rec)
            added += rec["op"] == "add"
        return added

    def _apply(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        self._live_cache = None
        if op == "add":
            self._records[rec["id"]] = rec
            self._end = max(self._end, rec["start"] + rec["length"])
            self._next_id = max(self._next_id, rec["id"] + 1)
        elif op == "delete":
            for eid in rec["ids"]:
                self._records.pop(eid, None)
        elif op == "task":
            self._attrs.setdefault("tasks", []).append(rec["task"])
        else:
            raise StoreCorruptError(f"{self.name}/{LOG_NAME}: unknown record op {op!r} "
                                    f"(line {self._log.line_no}); written by a newer robolearn?")

    def _commit(self, rec: dict[str, Any]) -> None:
        self._require_writer()
        check_record(rec, f"{self.name}: refusing to commit a {LOG_NAME} record", StoreError)
        self._log.append(rec)
        self.refresh()

    def _require_writer(self) -> None:
        if self._lock is None:
            raise StoreError(f"{self.name}: opened read-only; open with mode='a' to write")

    # ----------------------------------------------------------------------------- reading
    def array(self, key: str) -> zarr.Array:
        """The concatenated zarr array of one key (rows of every episode, plus unused space)."""
        arr = self._arrays.get(key)
        if arr is None or arr.shape[0] < self._end:
            if key not in self.features and key not in RESERVED:
                raise KeyError(f"{self.name}: no feature {key!r}; features: {self.keys}")
            try:
                arr = zarr.open_array(str(self.path / "data" / key), mode="r")
            except Exception as exc:
                raise StoreCorruptError(f"{self.name}: array data/{key} cannot be opened: "
                                        f"{exc}") from None
            self._arrays[key] = arr
        return arr

    def info(self, index: int) -> EpisodeInfo:
        recs = self._live()
        if not -len(recs) <= index < len(recs):
            raise IndexError(f"{self.name}: episode {index} out of range ({len(recs)} episodes)")
        i = index % len(recs)
        return _info(i, recs[i])

    def infos(self) -> list[EpisodeInfo]:
        return [_info(i, r) for i, r in enumerate(self._live())]

    def __iter__(self) -> Iterator[EpisodeInfo]:
        return iter(self.infos())

    def _live(self) -> list[dict[str, Any]]:
        if self._live_cache is None:  # rebuilt only after a commit: O(1) lookups by index
            self._live_cache = list(self._records.values())
        return self._live_cache

    def episode(self, index: int, keys: Iterable[str] | None = None) -> Episode:
        """Arrays of episode ``index`` (``keys`` restricts which), each ``(T, *shape)``."""
        info = self.info(index)
        data = {key: self.read(key, info.start, info.start + info.length, info)
                for key in (keys if keys is not None else self.keys)}
        return Episode(info, data)

    def read(self, key: str, start: int, stop: int, info: EpisodeInfo | None = None) -> np.ndarray:
        """Rows [start, stop) of one array, with errors that name the store, episode and array."""
        arr = self.array(key)
        where = f"episode {info.index} (id {info.id})" if info else f"rows {start}:{stop}"
        # zarr reads a missing chunk as fill values; a missing file here means lost data.
        for ck in layout.chunk_keys(arr, start, stop):
            if not (self.path / "data" / key / ck).exists():
                raise StoreCorruptError(f"{self.name}: {where}, array data/{key}: chunk file "
                                        f"{ck} is missing")
        try:
            return np.asarray(arr[start:stop])
        except Exception as exc:
            raise StoreCorruptError(f"{self.name}: {where}, array data/{key}: cannot read "
                                    f"({type(exc).__name__}: {exc})") from None

    def select(self, *, source: str | int | Source | Iterable[str | int | Source] | None = None,
               success: bool | None = None, task: str | None = None,
               tags: Iterable[str] | None = None, complete: bool | None = None) -> list[int]:
        """Indices of the episodes matching every given filter.

        ``source``: contains at least one step from that source (or any of several);
        ``tags``: carries all of these tags.
        """
        if source is not None:
            srcs = [source] if isinstance(source, (str, int, Source)) else list(source)
            names = {Source.parse(s).name.lower() for s in srcs}
        want_tags = set(tags or ())
        out = []
        for info in self.infos():
            if source is not None and not names & {k for k, v in info.sources.items() if v}:
                continue
            if success is not None and info.success is not success:
                continue
            if task is not None and info.task != task:
                continue
            if complete is not None and info.complete is not complete:
                continue
            if not want_tags <= set(info.tags):
                continue
            out.append(info.index)
        return out

    # ----------------------------------------------------------------------------- writing
    def recorder(self, *, task: str | None = None, flush_every: int | None = None,
                 source: Source | str = Source.SCRIPTED, keep_interrupted: bool = True,
                 flush_seconds: float = 1.0, background: bool = False) -> Any:
        """A context manager that records steps one at a time; see :class:`data.Recorder`."""
        from data.recorder import Recorder

        self._require_writer()
        return Recorder(self, task=task, flush_every=flush_every, source=source,
                        keep_interrupted=keep_interrupted, flush_seconds=flush_seconds,
                        background=background)

    def writable(self, key: str) -> zarr.Array:
        """The array of ``key`` opened for writing (cached: opening costs milliseconds)."""
        self._require_writer()
        arr = self._warrays.get(key)
        if arr is None:
            arr = self._warrays[key] = layout.open_for_write(str(self.path / "data" / key))
        return arr

    def _ensure_rows(self, rows: int) -> None:
        """Grow every array to at least ``rows`` (by 25% at least, to keep resizes rare)."""
        for key in self.keys:
            arr = self.writable(key)
            if arr.shape[0] < rows:
                arr.resize((max(rows, int(arr.shape[0] * 1.25)), *arr.shape[1:]))
                self._arrays.pop(key, None)

    def next_start(self) -> int:
        """Row where the next episode begins: past every committed row, on a shard boundary."""
        s = self.shard_len
        return -(-self._end // s) * s

    def add_task(self, task: str) -> None:
        if task not in self.tasks:
            self._commit({"op": "task", "task": task})

    def delete(self, indices: Iterable[int]) -> None:
        """Remove episodes (by index). Their rows stay on disk until :meth:`copy_to` rewrites
        the store; deleting is one committed record, so it is atomic too."""
        recs = self._live()
        ids = []
        for i in indices:
            if not -len(recs) <= i < len(recs):
                raise IndexError(f"{self.name}: cannot delete episode {i}: out of range "
                                 f"({len(recs)} episodes)")
            ids.append(recs[i]["id"])
        if ids:
            self._commit({"op": "delete", "ids": sorted(set(ids)), "time": time.time()})

    def copy_to(self, path: str | Path, episodes: Iterable[int] | None = None,
                progress: bool = False) -> EpisodeStore:
        """Write the chosen episodes (default: all) into a new store at ``path``; returns it
        open for writing. This is also how a store with deleted episodes is compacted. The
        copy appears at ``path`` only when complete."""
        return EpisodeStore.merge(path, [(self, episodes)], progress=progress)

    def append_from(self, other: EpisodeStore, episodes: Iterable[int] | None = None,
                    progress: bool = False) -> list[int]:
        """Append episodes of another store (merge). Features and fps must match."""
        from data.recorder import copy_episodes

        self._require_writer()
        why = mismatch(other, self)
        if why:
            raise StoreError(f"cannot merge {other.name} into {self.name}: {why}")
        idx = list(range(len(other))) if episodes is None else list(episodes)
        return copy_episodes(other, self, idx, progress=progress)

    # ----------------------------------------------------------------------------- recovery
    def _recover(self, policy: str) -> None:
        torn = self._log.truncate_torn_tail()
        if torn:
            log.warning("%s: dropped %d bytes of a commit record cut short by a crash",
                        self.name, torn)
        journal = self.path / JOURNAL_NAME
        if not journal.exists():
            return
        from data.recorder import recover_inflight

        recover_inflight(self, journal, keep=policy == "keep")

    # ----------------------------------------------------------------------------- reports
    def summary(self) -> dict[str, Any]:
        """Schema, episodes, frames, sources and size on disk (``robolearn data info``)."""
        from data.verify import store_summary

        return store_summary(self, pending_recovery=(self.path / JOURNAL_NAME).exists())

    def verify(self, progress: bool = False) -> list[str]:
        """Read every chunk of every committed episode; return one message per problem."""
        from data.verify import verify_store

        return verify_store(self, progress=progress)


def _info(index: int, rec: dict[str, Any]) -> EpisodeInfo:
    return EpisodeInfo(index=index, id=rec["id"], start=rec["start"], length=rec["length"],
                       success=rec.get("success"), complete=rec.get("complete", True),
                       task=rec.get("task"), tags=tuple(rec.get("tags", ())),
                       sources=dict(rec.get("sources", {})), created=rec.get("created", 0.0),
                       metadata=dict(rec.get("metadata", {})))


def remove_store(path: str | Path) -> None:
    """Delete a store directory (refuses a directory that is not a store)."""
    p = Path(path)
    if not (p / "zarr.json").exists() or not (p / LOG_NAME).exists():
        raise StoreFormatError(f"{p}: not an episode store; refusing to delete it")
    shutil.rmtree(p)
