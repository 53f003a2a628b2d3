"""Chunked policies off the control path: the next action chunk is planned in a background
thread from the latest observation while the current chunk executes, so the control loop only
pops actions (LeRobot's asynchronous inference, in one process)::

    runner = AsyncChunks(policy, period_s=1 / 30, hold=robot.hold_action, threads=1)
    runner.reset(seed=0)                   # at each episode start (the control loop does it)
    action = runner.select_action(obs)     # never waits for the network
    runner.close()

A chunk planned from the observation of step ``s`` holds the actions for steps
``s .. s + H - 1`` (``H = action_horizon``). The schedule:

- **Trigger.** The next chunk is requested once the current one has run for
  ``n_action_steps - lead`` steps, ``lead`` being the planning time in control steps (the
  slowest of the recent plans over the period, rounded up, plus one step of margin). It then
  arrives about when a synchronous policy would re-plan (after ``n_action_steps``), and the
  ``H - n_action_steps`` actions left in the current chunk are the margin for a late plan. A
  policy that executes one action per chunk (ACT), or plans slower than ``n_action_steps``
  periods, plans back to back.
- **Alignment.** A chunk that arrives at step ``t`` replaces what is left of the current one,
  starting from its own action for step ``t``: the ``t - s`` actions for steps executed while it
  was planned are dropped (``stats.dropped``). The first chunk of an episode, planned while
  the robot held still, starts from its first action instead.
- **Late.** When the queue runs dry before the next chunk arrives, the last action is repeated
  (an arm keeps its last target; nothing jumps), or, before the episode's first chunk, the
  robot's ``hold()`` action is sent (no ``hold``: that first step waits for the plan).
  ``stats.starved`` counts those steps; the loop never waits past its period for a plan, and
  lateness never produces a NaN. Repeating for longer than ``stall_s`` raises
  :class:`InferenceStalled` in the loop's thread (the control loop stops the robot).
- **Errors.** An exception in planning is raised by the next :meth:`AsyncChunks.select_action`.

ACT's temporal ensembling needs a chunk every step; run asynchronously, ACT executes its newest
chunk instead (planned back to back). Torch's intra-op thread count is per thread: the planning
thread sets its own (``threads``).

``process=True`` plans in a child process instead (:class:`PlannerProcess`, a copy of the
policy; windows and chunks cross a pipe as tensors, resets are forwarded): a policy made of
many small torch calls (diffusion's denoising loop) takes Python's GIL back between calls, and in
a thread the control loop then waits for it; measured on the emulated SO-101 (README).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor


class ChunkPlanner(Protocol):
    """What :class:`AsyncChunks` needs of a policy (:class:`policies.base.Policy` has it)."""

    @property
    def config(self) -> Any: ...  # has n_action_steps

    def eval(self) -> Any: ...

    def reset(self, seed: int | None = None) -> None: ...

    def observe(self, obs: Any) -> dict[str, Tensor]: ...

    def plan(self, window: Any) -> Tensor: ...


class InferenceStalled(RuntimeError):
    """No chunk arrived for longer than allowed: the planner is stuck or far too slow."""


@dataclass
class AsyncStats:
    plans: int = 0  # chunks planned (this episode)
    starved: int = 0  # steps with no planned action left: the last action repeated (or held)
    dropped: int = 0  # actions dropped from arriving chunks: their steps were already executed
    lead: int = 1  # how many steps before it is needed the next chunk is requested, now
    # each recent plan's duration, ms (the last 10,000: an episode may run for hours)
    plan_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


def _planner_main(policy_bytes: bytes, threads: int, conn: Any) -> None:
    """The planning process: ``("plan", window)`` -> ``("ok", chunk)`` or ``("error", text)``;
    ``("reset", seed)`` resets the copy's history and noise; ``None`` ends it. Tensors cross
    the pipe as numpy arrays (plain pickles; torch's own reducers would pass shared-memory
    file descriptors)."""
    import pickle

    if threads > 0:
        torch.set_num_threads(threads)
    policy = pickle.loads(policy_bytes)
    policy.eval()
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, arg = msg
        if kind == "reset":
            policy.reset(seed=arg)
            continue
        try:
            window = {k: torch.from_numpy(v) for k, v in arg.items()}
            conn.send(("ok", policy.plan(window).numpy()))
        except Exception as exc:  # noqa: BLE001  (sent back, raised in the control thread)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class PlannerProcess:
    """``plan(window)`` computed by a copy of ``policy`` in a child process (spawned: no
    inherited torch threads)."""

    def __init__(self, policy: Any, threads: int = 1) -> None:
        import pickle

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_planner_main,
                                 args=(pickle.dumps(policy), threads, child),
                                 name="robolearn-planner", daemon=True)
        self._proc.start()
        child.close()

    def reset(self, seed: int | None = None) -> None:
        self._conn.send(("reset", seed))

    def plan(self, window: dict[str, Tensor]) -> Tensor:
        self._conn.send(("plan", {k: v.detach().cpu().numpy() for k, v in window.items()}))
        kind, value = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"in the planning process: {value}")
        return torch.from_numpy(value)

    def close(self) -> None:
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


class AsyncChunks:
    """``select_action(obs)`` of a chunked policy whose chunks are planned in a background
    thread (module doc: trigger, alignment, lateness). ``period_s``: the control period;
    ``hold()``: the action that keeps the robot where it is (sent before the first chunk)."""

    def __init__(self, policy: ChunkPlanner, period_s: float, *,
                 hold: Any | None = None, threads: int = 1, stall_s: float = 0.5,
                 process: bool = False) -> None:
        if period_s <= 0 or threads < 0 or stall_s <= 0:
            raise ValueError(f"AsyncChunks: need period_s > 0, threads >= 0, stall_s > 0; got "
                             f"{period_s}, {threads}, {stall_s}")
        self.policy = policy
        policy.eval()
        self.period_s, self.hold, self.threads, self.stall_s = period_s, hold, threads, stall_s
        self.n_exec = int(policy.config.n_action_steps)
        self.stats = AsyncStats()
        self._recent: deque[float] = deque(maxlen=8)  # recent plan durations, s
        self._cv = threading.Condition()
        self._request: tuple[int, int, dict[str, Tensor]] | None = None  # episode, step, window
        self._result: tuple[int, int, Tensor | None, BaseException | None, float] | None = None
        self._planning: int | None = None  # the episode of the plan being computed
        self._closed = False
        self._episode = 0
        # a reset for the planning process, sent by the planning thread before its next plan
        # (the pipe is that thread's alone): the seed, or the no-seed marker
        self._pending_reset: tuple[int | None] | None = None
        self._planner = PlannerProcess(policy, threads) if process else None
        self._new_episode()
        self._thread = threading.Thread(target=self._work, name="robolearn-inference",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control thread
    def reset(self, seed: int | None = None) -> None:
        """A new episode: waits for a plan in flight (at most ``max(30 s, 10 * stall_s)``),
        then forgets the queue and the history and restarts the policy's noise with ``seed``."""
        with self._cv:
            if not self.wait_idle(max(30.0, 10 * self.stall_s)):
                raise InferenceStalled("the policy's planning did not finish at the episode's end")
            self._result = None
            self._episode += 1
            self._pending_reset = (seed,)
        self.policy.reset(seed=seed)
        self._new_episode()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no plan is requested or in flight (at most ``timeout`` s); whether it
        is idle. Safe to call holding the runner's lock (reset does)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._request is None and self._planning is None,
                                     timeout=timeout)

    def restart(self) -> None:
        """Plan afresh from the next observation, without waiting (a human handed the robot
        back: what was queued and the history are stale). A plan in flight is dropped; the
        robot holds (``hold()``) until the new chunk arrives."""
        with self._cv:
            self._result = self._request = None
            self._episode += 1  # a plan in flight is dropped when it arrives (its episode)
            self._pending_reset = (None,)
        self.policy.reset()
        self._new_episode()

    def _new_episode(self) -> None:
        self._t = 0  # steps of this episode so far
        self._queue: deque[np.ndarray] = deque()
        self._origin = 0  # the step the current chunk's first action is for
        self._have_chunk = False
        self._last: np.ndarray | None = None  # last finite action sent
        self._starved_since: float | None = None
        self.stats = AsyncStats(lead=self.stats.lead)

    def select_action(self, obs: Any) -> np.ndarray:
        """The action for this step, ``(A,)`` float32; plans the next chunk in the background
        when it is due. Raises what planning raised, or :class:`InferenceStalled`."""
        t = self._t
        self._t += 1
        window = self.policy.observe(obs)
        with self._cv:
            result, self._result = self._result, None
            busy = self._request is not None or self._planning == self._episode
        if result is not None:
            self._take(result, t)
        if not busy and self._due(t):
            with self._cv:
                self._request = (self._episode, t, window)
                self._cv.notify_all()
            if not self._have_chunk and self.hold is None:  # nothing to send yet: wait
                with self._cv:
                    self._cv.wait_for(lambda: self._result is not None
                                      and self._result[0] == self._episode)
                    result, self._result = self._result, None
                if result is not None:
                    self._take(result, t)
        return self._pop()

    def _due(self, t: int) -> bool:
        if not self._have_chunk or not self._queue:
            return True
        return t - self._origin >= self.n_exec - self.stats.lead

    def _take(self, result: tuple[int, int, Tensor | None, BaseException | None, float],
              t: int) -> None:
        episode, s, chunk, error, seconds = result
        if episode != self._episode:
            return  # planned for an episode that has ended
        if error is not None:
            raise RuntimeError(f"planning the next action chunk failed: "
                               f"{type(error).__name__}: {error}") from error
        assert chunk is not None
        self._recent.append(seconds)
        self.stats.plans += 1
        self.stats.plan_ms.append(1000 * seconds)
        self.stats.lead = math.ceil(max(self._recent) / self.period_s) + 1
        # the first chunk was planned while the robot held still: it starts from its start
        self._origin = s if self._have_chunk else t
        skip = t - self._origin
        actions = chunk.numpy().astype(np.float32)
        self.stats.dropped += min(skip, len(actions))
        self._queue = deque(actions[skip:])
        self._have_chunk = True

    def _pop(self) -> np.ndarray:
        if self._queue:
            action = self._queue.popleft()
            self._starved_since = None
            if np.isfinite(action).all():
                self._last = action
            else:  # returned as it is (the safety filter counts and holds); plan again
                self._queue.clear()
            return action.copy()
        self.stats.starved += 1
        if self._last is None:  # before the first chunk: the robot holds where it is
            assert self.hold is not None
            return np.asarray(self.hold(), dtype=np.float32).copy()
        now = time.perf_counter()
        if self._starved_since is None:
            self._starved_since = now
        elif now - self._starved_since > self.stall_s:
            raise InferenceStalled(f"no action chunk for {now - self._starved_since:.2f} s "
                                   f"(stall_s={self.stall_s:g}); the last plans took "
                                   f"{', '.join(f'{1000 * s:.0f}' for s in self._recent)} ms")
        return self._last.copy()

    # ------------------------------------------------------------------ planning thread
    def _work(self) -> None:
        if self.threads > 0:  # 0: torch's default
            torch.set_num_threads(self.threads)
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._request is not None or self._closed)
                if self._closed:
                    return
                assert self._request is not None
                episode, step, window = self._request
                self._request, self._planning = None, episode
                reset, self._pending_reset = self._pending_reset, None
            t0 = time.perf_counter()
            chunk: Tensor | None = None
            error: BaseException | None = None
            try:
                if self._planner is not None:
                    if reset is not None:
                        self._planner.reset(reset[0])
                    chunk = self._planner.plan(window)
                else:
                    chunk = self.policy.plan(window)
            except BaseException as exc:  # handed to the control thread, raised there
                error = exc
            with self._cv:
                self._result = (episode, step, chunk, error, time.perf_counter() - t0)
                self._planning = None
                self._cv.notify_all()

    def close(self) -> None:
        """Stop the planning thread (a plan in flight is finished, then dropped)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=max(30.0, 10 * self.stall_s))
        if self._planner is not None:
            self._planner.close()

    def __enter__(self) -> AsyncChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
