"""Conversions between episode stores and other robot-learning formats.

- :mod:`data.interop.lerobot`: export a store as a LeRobotDataset (v3) and import one back.
- :mod:`data.interop.robomimic`: import robomimic's HDF5 files.

Every conversion writes its output beside the requested path under a temporary name and renames
it at the end (:func:`staged_output`), so an output is complete or absent; an existing output is
refused, never written into. Whatever is wrong with an input is a :class:`ConversionError` (a
:class:`~data.schema.StoreError`) naming the file, the episode and the key.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from data.schema import StoreError

# A progress wrapper: ``track(items, description)`` yields the items (robolearn passes a bar).
Track = Callable[[Sequence[int], str], Iterable[int]]


def no_progress(items: Sequence[int], description: str) -> Iterable[int]:
    return items


@dataclass(frozen=True)
class Converted:
    """What a conversion wrote."""

    path: Path  # the output, complete
    episodes: int
    frames: int


class ConversionError(StoreError):
    """An input that cannot be converted, or an output that cannot be written."""


def refuse_existing(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise ConversionError(f"{out}: already exists; refusing to write over it (choose a new "
                              "output path, or remove it first)")


@contextmanager
def staged_output(out: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` (not yet existing) for the block to fill; rename it
    to ``out`` when the block succeeds, remove it when the block fails. ``out`` must not exist."""
    out = Path(out)
    refuse_existing(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConversionError(f"{out}: cannot create its folder {out.parent} "
                              f"({exc.strerror})") from None
    # hidden, and with the output's suffix (writers that pick a format by it still can)
    tmp = out.parent / f".{out.stem}.partial-{uuid.uuid4().hex[:8]}{out.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise ConversionError(f"{out}: nothing was written")
        refuse_existing(out)  # appeared while we worked: keep theirs
        os.rename(tmp, out)
    except OSError as exc:  # full disk, read-only file system, permissions: name the file
        _remove(tmp)
        raise ConversionError(f"{exc.filename or out}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)
