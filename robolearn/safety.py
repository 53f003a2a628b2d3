"""Safety between any policy or teleop device and any robot.

- :class:`SafetyFilter`: every action goes through it before ``robot.act``: non-finite actions
  are rejected (the previous safe action is held, or the robot is stopped), each element is
  clamped to the robot's bounds, and its change per step is limited (FastRLAP uses 0.2 on
  [-1, 1] car actions). A learner never sends a NaN to a robot.
- :class:`Watchdog`: calls ``on_timeout`` (``robot.stop``) when ``feed`` stops being called
  for ``timeout_s``: a stalled policy, a dead teleop link or a hung loop stops the robot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from robolearn_core.config import InvalidValue


@dataclass
class SafetyConfig:
    clip: bool = True  # clamp every action element to the robot's action bounds
    max_delta: float | None = None  # max change of an action element per step (action units)
    on_nonfinite: str = "hold"  # NaN/inf action: "hold" the last safe action, or "stop"
    nonfinite_hold_steps: int = 5  # consecutive NaN/inf actions held before the robot is stopped
    watchdog_s: float = 0.5  # stop the robot when no action arrives for this long (seconds)

    def __post_init__(self) -> None:
        if self.max_delta is not None and self.max_delta <= 0:
            raise InvalidValue("max_delta", f"must be > 0 or null, got {self.max_delta}")
        if self.on_nonfinite not in ("hold", "stop"):
            raise InvalidValue("on_nonfinite", f"must be 'hold' or 'stop', got "
                                               f"{self.on_nonfinite!r}")
        if self.watchdog_s <= 0:
            raise InvalidValue("watchdog_s", f"must be > 0, got {self.watchdog_s}")
        if self.nonfinite_hold_steps < 0:
            raise InvalidValue("nonfinite_hold_steps", f"must be >= 0, got "
                                                       f"{self.nonfinite_hold_steps}")


@dataclass
class SafetyStats:
    steps: int = 0
    clipped: int = 0  # steps where at least one element hit a bound
    rate_limited: int = 0  # steps where the change per step was limited
    nonfinite: int = 0  # steps whose action had NaN or inf
    events: list[str] = field(default_factory=list)  # the first few, for the log


class SafetyFilter:
    """Makes any action safe to send: finite, within bounds, within a rate limit."""

    def __init__(self, low: np.ndarray, high: np.ndarray, cfg: SafetyConfig | None = None,
                 neutral: np.ndarray | None = None,
                 stop_action: Callable[[], np.ndarray] | None = None) -> None:
        """``stop_action()``: what stops the robot where it is, asked at the moment of a stop
        (``Robot.hold_action``: a car's zero throttle, an arm's current joint positions; an
        arm sent all zeros would swing to its zero pose). Default: the ``neutral`` action."""
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        if self.low.shape != self.high.shape or np.any(self.low > self.high):
            raise ValueError(f"safety filter: bad action bounds {self.low} .. {self.high}")
        self.cfg = cfg or SafetyConfig()
        self.stop_action = stop_action
        self.neutral = (np.clip(np.zeros_like(self.low), self.low, self.high)
                        if neutral is None else np.asarray(neutral, dtype=np.float64))
        self.reset()

    def reset(self, last: np.ndarray | None = None) -> None:
        """Start of an episode: rate limits count from ``last`` (default: neutral action), and
        ``stats`` count this episode (a new object: the last episode's result keeps its own)."""
        self.last = self.neutral.copy() if last is None else np.asarray(last, np.float64).copy()
        self.stop_requested = False
        self.stats = SafetyStats()
        self._nonfinite_run = 0  # consecutive non-finite actions up to now

    def rebase(self, action: np.ndarray) -> None:
        """Something other than this filter moved the robot (the watchdog stopped it): the
        next change per step counts from ``action``, the command that holds it where it is."""
        a = np.asarray(action, dtype=np.float64).reshape(self.low.shape)
        self.last = np.clip(a, self.low, self.high)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64).reshape(self.low.shape)
        self.stats.steps += 1
        self.stop_requested = False
        if not np.all(np.isfinite(a)):
            self.stats.nonfinite += 1
            self._nonfinite_run += 1
            # "hold" rides out a glitch; a policy that stays non-finite would otherwise replay
            # its last action for the rest of the episode (a car keeping its throttle)
            stopping = (self.cfg.on_nonfinite == "stop"
                        or self._nonfinite_run > self.cfg.nonfinite_hold_steps)
            self._event(f"non-finite action {a.tolist()} replaced "
                        f"({'stop' if stopping else 'hold'})")
            if stopping:  # at once: a stop is not rate-limited
                self.stop_requested = True
                stop = self.neutral if self.stop_action is None else self.stop_action()
                self.last = np.clip(np.asarray(stop, np.float64), self.low, self.high)
                return self.last.copy()
            a = self.last.copy()
        else:
            self._nonfinite_run = 0
        if self.cfg.clip:
            clipped = np.clip(a, self.low, self.high)
            if np.any(clipped != a):
                self.stats.clipped += 1
            a = clipped
        if self.cfg.max_delta is not None:
            limited = np.clip(a, self.last - self.cfg.max_delta, self.last + self.cfg.max_delta)
            if np.any(limited != a):
                self.stats.rate_limited += 1
            a = limited
        self.last = a
        return a.copy()

    def _event(self, msg: str) -> None:
        if len(self.stats.events) < 20:
            self.stats.events.append(f"step {self.stats.steps}: {msg}")


class Watchdog:
    """A daemon thread that calls ``on_timeout`` once per silence longer than ``timeout_s``."""

    def __init__(self, timeout_s: float, on_timeout: Callable[[], None],
                 enabled: bool = True) -> None:
        """``enabled=False``: feeds and closes like a watchdog but never runs a thread (for a
        robot that cannot move while nobody commands it)."""
        self.enabled = enabled
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.trips = 0
        self._last = time.monotonic()
        self._tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="robolearn-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self._last = time.monotonic()
        if self.enabled:
            self._thread.start()
        return self

    def feed(self) -> None:
        self._last = time.monotonic()
        self._tripped = False

    def _run(self) -> None:
        period = min(0.02, self.timeout_s / 5)
        while not self._stop.wait(period):
            if not self._tripped and time.monotonic() - self._last > self.timeout_s:
                self._tripped = True
                self.trips += 1
                self.on_timeout()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
