"""What travels on the actor-learner link: named arrays as safetensors bytes (no pickle),
weights cut into chunks, transition rows stacked into batches."""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save


class LinkError(RuntimeError):
    """The link failed or refused something; the message names what."""


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays -> safetensors bytes (no pickle)."""
    return st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def unpack(data: bytes, what: str) -> dict[str, np.ndarray]:
    try:
        return dict(st_load(data))
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise LinkError(f"{what}: not a safetensors payload ({type(exc).__name__}: {exc})") \
            from None


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def stack_rows(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Transition rows (each ``obs/*``, ``next_obs/*``, ``action``, ``reward``, ``terminated``,
    ``intervention``, ...) -> one array per key with a leading batch dim."""
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}
