"""What ``robolearn deploy`` shows while it runs, and its adapters between the control loop,
the policy and a teleop device.

The status line (rich, redrawn 4 times a second on a terminal): episode, step, actual rate,
p99 lateness and overruns, who drives (policy or HUMAN), the safety filter's counts and the
inference time. Every episode ends with one summary line, on a terminal or not.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from policies.async_inference import AsyncChunks
from robolearn.loop import ControlLoop, EpisodeResult
from robolearn_core.progress import console

KEEP = 10_000  # recent timings kept for the status (an episode may run for hours)


def say(line: str) -> None:
    """One line on stderr, as it is (no markup, never wrapped)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


class Inline:
    """The policy called in the control loop's thread (a re-plan that is cheap next to the
    period: an MLP), timed."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.plan_ms: deque[float] = deque(maxlen=KEEP)  # calls that planned a chunk
        self.call_ms: deque[float] = deque(maxlen=KEEP)  # every call

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed=seed)
        self.plan_ms.clear()
        self.call_ms.clear()

    def restart(self) -> None:
        """Plan afresh from the next observation (a human handed the robot back)."""
        self.policy.reset()

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        planning = self.policy.queued == 0
        t0 = time.perf_counter()
        action: np.ndarray = self.policy.select_action(obs)
        ms = 1000 * (time.perf_counter() - t0)
        self.call_ms.append(ms)
        if planning:
            self.plan_ms.append(ms)
        return action


class Driver:
    """A teleop device as the control loop sees it: notes who drives, and when the human hands
    the robot back the policy plans afresh from where it is (``on_release``)."""

    def __init__(self, device: Any, on_release: Callable[[], None]) -> None:
        self.device, self.on_release = device, on_release
        self.human = False  # the human drove the last step
        self.takeovers = 0  # this episode

    def reset(self) -> None:
        if hasattr(self.device, "reset"):
            self.device.reset()
        self.human, self.takeovers = False, 0

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        action = self.device.get_action(obs)
        if action is None and self.human:
            self.on_release()
        self.takeovers += action is not None and not self.human
        self.human = action is not None
        return action  # type: ignore[no-any-return]

    def ended(self) -> bool:
        """The human ended the episode (a device's ``end`` event: keyboard Enter)."""
        poll = getattr(self.device, "poll_events", None)
        return poll is not None and "end" in poll()


def inference_summary(inference: Inline | AsyncChunks) -> str:
    """``plan 18.2 ms async (p99 25.0), 0 starved`` / ``plan 1.1 ms inline (p99 2.0)``."""
    if isinstance(inference, AsyncChunks):
        ms, extra = list(inference.stats.plan_ms), f", {inference.stats.starved} starved"
        kind = "async"
    else:
        ms, extra, kind = list(inference.plan_ms), "", "inline"
    if not ms:
        return f"no plan yet ({kind})"
    return f"plan {np.mean(ms):.1f} ms {kind} (p99 {np.percentile(ms, 99):.1f}){extra}"


class Status:
    """The control loop's observer: a live status line on a terminal, a summary per episode."""

    def __init__(self, loop: ControlLoop, inference: Inline | AsyncChunks,
                 driver: Driver | None, episodes: int) -> None:
        self.loop, self.inference, self.driver, self.episodes = loop, inference, driver, episodes
        self.episode, self.steps = 0, 0
        self._times: deque[float] = deque(maxlen=60)  # recent step times, for the rate
        self._live: Any = None
        self._shown = 0.0

    @contextlib.contextmanager
    def live(self) -> Iterator[None]:
        if not console.is_terminal:  # a pipe or a log: the summary lines only
            yield
            return
        from rich.live import Live

        with Live(console=console, transient=True, refresh_per_second=4) as self._live:
            yield
        self._live = None

    def start(self, episode: int) -> None:
        self.episode, self.steps = episode, -1
        self._times.clear()

    def __call__(self, env: Any) -> None:
        """After the reset and after every step."""
        self.steps += 1
        now = time.perf_counter()
        self._times.append(now)
        if self._live is not None and now - self._shown >= 0.25:
            from rich.text import Text

            self._shown = now
            self._live.update(Text(self.line(), no_wrap=True, overflow="ellipsis"),
                              refresh=True)

    def line(self) -> str:
        times = self._times
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0
        late = list(self.loop.timing.late_ms[-1000:]) if self.loop.timing else []
        p99 = float(np.percentile(late, 99)) if late else 0.0
        period = 1000 / self.loop.fps
        overruns = sum(1 for x in self.loop.timing.late_ms if x > period) \
            if self.loop.timing else 0
        who = "policy"
        if self.driver is not None:
            who = f"{'HUMAN' if self.driver.human else 'policy'} ({self.driver.takeovers} " \
                  "takeovers)"
        s = self.loop.safety.stats
        total = str(self.episodes) if self.episodes else "until Ctrl-C"
        return (f"episode {self.episode + 1}/{total}  step {self.steps}  {rate:.1f} Hz  "
                f"late p99 {p99:.1f} ms, {overruns} overruns  driving: {who}  safety: "
                f"{s.clipped} clipped, {s.rate_limited} rate-limited, {s.nonfinite} non-finite"
                f"  {inference_summary(self.inference)}")

    def done(self, result: EpisodeResult, judges_success: bool) -> None:
        t, s = result.timing, result.safety
        success = ("yes" if result.success else "no") if judges_success else "unknown"
        sources = ", ".join(f"{k} {v}" for k, v in sorted(result.sources.items()))
        say(f"episode {self.episode + 1}: {result.steps} steps ({sources}), success "
            f"{success}, return {result.ret:.2f}; late p99 {t['p99_late_ms']:.1f} ms, "
            f"{t['overruns']} overruns; safety {s.clipped} clipped, {s.rate_limited} "
            f"rate-limited, {s.nonfinite} non-finite; {inference_summary(self.inference)}")
