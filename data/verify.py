"""``robolearn data verify``: read every committed step back and check it against the log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from data import layout
from data.fsio import dir_size
from data.schema import RESERVED, Source, StoreError

if TYPE_CHECKING:
    from data.store import EpisodeStore


def verify_store(store: EpisodeStore, progress: bool = False) -> list[str]:
    """Return one message per problem (empty: every episode decodes and matches its record)."""
    from robolearn_core.progress import track

    problems: list[str] = []
    if store._log.torn_tail_bytes():
        problems.append(f"{store.name}/episodes.jsonl: ends with a commit record cut short by a "
                        "crash (harmless: the next writer removes it)")
    if (store.path / "inflight.json").exists():
        problems.append(f"{store.name}: an interrupted recording awaits recovery (open the store "
                        "for writing to recover or drop it)")
    schema = _array_problems(store)
    if schema:  # episodes read through a wrong schema would only repeat it
        return problems + schema
    problems += _overlaps(store)
    for info in track(store.infos(), "verifying episodes", enabled=progress):
        where = f"{store.name}: episode {info.index} (id {info.id})"
        for key in store.keys:
            try:
                arr = store.array(key)
            except StoreError as exc:
                problems.append(f"{where}: {exc}")
                continue
            missing = [ck for ck in layout.chunk_keys(arr, info.start, info.start + info.length)
                       if not (store.path / "data" / key / ck).exists()]
            if missing:
                problems.append(f"{where}, array data/{key}: chunk file(s) missing: "
                                f"{', '.join(missing[:3])}")
                continue
            try:
                values = store.read(key, info.start, info.start + info.length, info)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if key == "source":
                counts = np.bincount(values, minlength=len(Source))
                if len(counts) > len(Source):
                    problems.append(f"{where}, array data/source: unknown source code(s)")
                elif {s.name.lower(): int(counts[s]) for s in Source if counts[s]} != info.sources:
                    problems.append(f"{where}, array data/source: per-step sources do not match "
                                    f"the commit record {info.sources}")
            elif key == "timestamp" and info.length > 1 and np.any(np.diff(values) < 0):
                problems.append(f"{where}, array data/timestamp: goes backwards")
            elif values.dtype.kind == "f" and not np.all(np.isfinite(values)):
                bad = int(np.argmax(~np.isfinite(values.reshape(len(values), -1)).all(axis=1)))
                problems.append(f"{where}, array data/{key}: non-finite value at step {bad}")
    return problems


def _array_problems(store: EpisodeStore) -> list[str]:
    """The store's schema (root zarr.json) against every array's own metadata."""

    problems = []
    for key in store.keys:
        feat = store.features.get(key) or RESERVED[key]
        try:
            arr = store.array(key)
        except StoreError as exc:
            problems.append(str(exc))
            continue
        for what in layout.array_mismatches(arr, feat, store.shard_len):
            problems.append(f"{store.name}: data/{key}/zarr.json: {what}")
        if arr.shape[0] < store._end:
            problems.append(f"{store.name}: data/{key}/zarr.json: {arr.shape[0]} rows, but "
                            f"committed episodes reach row {store._end}")
    return problems


def _overlaps(store: EpisodeStore) -> list[str]:
    """Two committed episodes never share rows (a second writer let in would have made them)."""
    infos = sorted(store.infos(), key=lambda i: i.start)
    return [f"{store.name}: episodes {a.index} (id {a.id}) and {b.index} (id {b.id}) share "
            f"rows from {b.start} on" for a, b in zip(infos, infos[1:], strict=False)
            if b.start < a.start + a.length]


def store_summary(store: EpisodeStore, pending_recovery: bool) -> dict[str, Any]:
    """Schema, episodes, frames, sources and size on disk (``robolearn data info``)."""
    sources: dict[str, int] = {}
    for r in store._live():
        for k, v in r["sources"].items():
            sources[k] = sources.get(k, 0) + v
    infos = store.infos()
    return {
        "path": store.name, "format_version": store._attrs["format_version"],
        "fps": store.fps, "robot_type": store.robot_type, "tasks": store.tasks,
        "features": {k: f.to_json() for k, f in store.features.items()},
        "episodes": len(store), "frames": store.num_frames,
        "duration_s": store.num_frames / store.fps, "sources": sources,
        "success": sum(1 for i in infos if i.success),
        "failure": sum(1 for i in infos if i.success is False),
        "incomplete": sum(1 for i in infos if not i.complete),
        "bytes_on_disk": dir_size(store.path),
        "pending_recovery": pending_recovery,
        "metadata": store._attrs.get("metadata", {}),
    }
