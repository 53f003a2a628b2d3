"""Helpers shared by the practice tests (``test_practice.py``, ``test_hilserl.py``): a learner's
two callbacks over a dict, waiting on a condition, the CLI as a subprocess, a store's frames."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class FakeLearner:
    """The learner's two callbacks over a plain dict: what arrived, per actor, in order."""

    def __init__(self, have: dict[str, list[float]] | None = None, durable: int = 0) -> None:
        self.rows: dict[str, list[float]] = have or {}
        self.durable = durable
        self.lock = threading.Lock()

    def hello(self, aid: str, spec: dict[str, Any], resend_from: int) -> tuple[int, int, str]:
        with self.lock:
            rows = self.rows.setdefault(aid, [])
            assert resend_from <= len(rows), "the actor forgot transitions the learner lacks"
            return len(rows), min(self.durable, len(rows)), "{}"

    def receive(self, aid: str, first: int, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        with self.lock:
            rows = self.rows[aid]
            assert first <= len(rows), f"gap: batch at {first}, have {len(rows)}"
            rows.extend(arrays["reward"][len(rows) - first:].tolist())
            return len(rows), min(self.durable, len(rows))


def row(i: int) -> dict[str, Any]:
    return {"obs/x": np.full(3, i, np.float32), "reward": np.float32(i)}


def wait(cond: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "robolearn.cli", *args]


def frames(store: Path) -> int:
    from data import EpisodeStore

    with EpisodeStore.open(store, "r") as s:  # readable while the actor writes
        return s.num_frames
