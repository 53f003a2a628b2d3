"""Creating a store whole or not at all: the new store (and, for a copy or a merge, every
episode copied into it) is built in a hidden staging directory beside its path and renamed
into place at the end (:class:`data.fsio.Staging`). A failure removes the staging directory;
a kill leaves it, marked as robolearn's, and the next creation beside it removes it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zarr

from data import layout
from data.fsio import Staging, os_problem
from data.schema import Feature, StoreError

if TYPE_CHECKING:
    from data.store import EpisodeStore


def check_new_store_path(path: Path) -> None:
    """Refuse, before touching the disk, a path no store can be created at."""
    bad = sorted({repr(c) for c in str(path) if ord(c) < 32 or ord(c) == 127})
    if bad:  # zarr drops them from paths, so the store would land elsewhere
        raise StoreError(f"{str(path)!r}: a store path cannot contain control characters "
                         f"({', '.join(bad)}); choose another")
    if path.name in ("", ".", ".."):
        raise StoreError(f"{str(path)!r}: name the store's own directory (e.g. demos.zarr)")
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: exists and is not a directory; refusing to create a store "
                         "there")
    if path.is_dir() and any(path.iterdir()):
        raise StoreError(f"{path}: directory exists and is not empty; refusing to create a "
                         "store over foreign files")


def build(path: Path, attrs: dict[str, Any], arrays: dict[str, Feature], log_name: str,
          fill: Callable[[Path], None] | None = None) -> None:
    """Write a store's skeleton (root attributes ``attrs``, one array per feature, an empty
    commit log) into a staging directory, let ``fill`` copy episodes into it, rename it to
    ``path``."""
    staging = Staging(path)
    try:
        # mode "a": "w" would delete the staging marker already in the directory
        root = zarr.open_group(str(staging.path), mode="a", zarr_format=3)
        data = root.create_group("data")
        for key, feat in arrays.items():
            layout.create_feature_array(data, key, feat, attrs["shard_len"])
        (staging.path / log_name).write_bytes(b"")
        root.attrs["robolearn"] = attrs  # written last: a store without it is not a store
        if fill is not None:
            fill(staging.path)
    except OSError as exc:
        staging.abandon()
        raise StoreError(f"{path}: cannot create the store: {os_problem(exc)}") from None
    except BaseException:
        staging.abandon()
        raise
    staging.finish()


def mismatch(src: EpisodeStore, dst: EpisodeStore) -> str | None:
    """Why episodes of ``src`` cannot be copied into ``dst`` as they are (None: they can)."""
    if src.features != dst.features:
        diff = sorted({k for k, _ in set(src.features.items()) ^ set(dst.features.items())})
        return f"features differ ({', '.join(diff)})"
    if src.fps != dst.fps:
        return f"{src.fps:g} fps vs {dst.fps:g} fps"
    if src.shard_len != dst.shard_len:  # camera shards are copied as whole files
        return (f"camera shards hold {src.shard_len} and {dst.shard_len} frames (stores "
                "written by different robolearn versions)")
    return None
