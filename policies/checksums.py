"""SHA-256 checksums of the files a checkpoint is made of.

safetensors and ``torch.save`` files carry no checksum: weights overwritten in their last bytes
load and act without complaint. Every directory of checkpoint files therefore gets a
``SHA256SUMS`` beside them, in ``sha256sum``'s format (``sha256sum -c SHA256SUMS`` checks it by
hand), written when saving and verified when loading. A directory saved before checksums existed
still loads, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from data.schema import StoreError

log = logging.getLogger("policies.checksums")

SUMS = "SHA256SUMS"


class CheckpointError(StoreError):
    """A checkpoint file that is missing, damaged or does not fit; the message names the file.
    A kind of :class:`StoreError` (stored data that cannot be used): the CLI prints its one
    line and exits 1."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_sums(directory: Path, names: Iterable[str]) -> None:
    """Record the SHA-256 of each of ``names`` (files in ``directory``) in its ``SHA256SUMS``."""
    lines = "".join(f"{sha256(directory / n)}  {n}\n" for n in names)
    tmp = directory / f".{SUMS}.tmp"
    tmp.write_text(lines)
    os.replace(tmp, directory / SUMS)


def verify(directory: Path, names: Iterable[str]) -> None:
    """Check that each of ``names`` exists in ``directory`` and matches its recorded SHA-256;
    else a :class:`CheckpointError` naming the file. Without a ``SHA256SUMS`` (saved before
    checksums existed) only existence is checked, with a warning."""
    names = list(names)
    for n in names:
        if not (directory / n).is_file():
            raise CheckpointError(f"{directory / n}: missing (the checkpoint is incomplete)")
    sums_path = directory / SUMS
    if not sums_path.is_file():
        log.warning("%s: no %s (saved before checkpoints had checksums); %s loaded unverified",
                    directory, SUMS, ", ".join(names))
        return
    recorded: dict[str, str] = {}
    for i, line in enumerate(sums_path.read_text(errors="replace").splitlines()):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise CheckpointError(f"{sums_path}: line {i + 1} is not '<sha256>  <file>'")
        recorded[name] = digest
    for n in names:
        if n not in recorded:
            raise CheckpointError(f"{sums_path}: no checksum for {n}")
        if sha256(directory / n) != recorded[n]:
            raise CheckpointError(f"{directory / n}: checksum mismatch (not the file that was "
                                  f"saved: damaged or changed since; see {SUMS})")
