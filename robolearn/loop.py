"""The fixed-rate control loop: policy, teleop, or policy with a human able to take over.

Each step: observe -> choose an action (a teleop action, when the human gives one, overrides
the policy and is marked ``intervention``) -> safety filter -> ``env.step`` -> record the step
(the observation the action was chosen from, the action actually sent, its source, the reward)
-> sleep until the next period. The watchdog stops the robot if a step stalls past
``safety.watchdog_s``. Timing jitter (how late each step started) is reported per episode.

However an episode ends (done, Ctrl-C, the policy raising or returning an action of the wrong
shape, the robot's link failing), the robot is stopped first and the steps recorded so far are
committed; an error then goes on up, naming the step and what was done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from data.schema import Feature, Source
from data.store import EpisodeStore
from robolearn.env import RobotEnv
from robolearn.safety import SafetyConfig, SafetyFilter, SafetyStats, Watchdog
from robolearn_core.config import InvalidValue

log = logging.getLogger(__name__)

# obs -> action; the loop starts an episode with ``reset(seed=episode seed)`` of the callable,
# or of the object whose bound method it is, where there is one (learned policies, experts)
Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


class ActionError(RuntimeError):
    """The policy or teleop device gave no usable action: it raised, or its action does not
    have the robot's action shape. :meth:`ControlLoop.run_episode` raises it once the robot is
    stopped and the steps recorded so far are committed; the message says all of that."""


class Teleop(Protocol):
    """A human input device: an action while the human drives, None while hands are off."""

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None: ...


@dataclass
class LoopConfig:
    fps: float | None = None  # control rate in Hz; None: the robot's own rate
    realtime: bool = True  # hold the rate with sleeps (False: as fast as possible, sim only)
    max_steps: int | None = None  # per episode; None: the environment's limit
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise InvalidValue("fps", f"must be > 0, got {self.fps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidValue("max_steps", f"must be >= 1, got {self.max_steps}")


@dataclass
class Timing:
    """How late each step started relative to its schedule, in milliseconds."""

    period_ms: float
    late_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        late = np.asarray(self.late_ms) if self.late_ms else np.zeros(1)
        return {"period_ms": self.period_ms, "mean_late_ms": float(late.mean()),
                "p99_late_ms": float(np.percentile(late, 99)), "max_late_ms": float(late.max()),
                "overruns": int(np.sum(late > self.period_ms))}


@dataclass
class EpisodeResult:
    steps: int
    ret: float  # sum of rewards
    success: bool
    terminated: bool
    reward_terms: dict[str, float]  # summed over the episode
    sources: dict[str, int]
    timing: dict[str, float]
    safety: SafetyStats


@dataclass
class Transition:
    """One step as the loop made it: the observation the action was chosen from, the action
    actually sent (after the safety filter and the robot's own limits), the reward, the next
    observation, how the step ended the episode, who chose the action, and the step's info."""

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    next_obs: dict[str, np.ndarray]
    terminated: bool
    truncated: bool
    source: Source
    info: dict[str, Any]


def step_features(env: RobotEnv) -> dict[str, Feature]:
    """Schema for a store that records this env through the loop: observations, the action
    actually sent, and the step's reward (``next.reward``, LeRobot's name)."""
    return {**env.features, "action": env.robot.action_feature,
            "next.reward": Feature("float32", ())}


def create_store(path: str, env: RobotEnv, env_id: str | None,
                 overrides: dict[str, Any], extra_features: dict[str, Feature] | None = None,
                 **metadata: Any) -> EpisodeStore:
    """A new store for recording ``env`` through the loop; its metadata says how to rebuild
    the env (``env_id``, ``env_overrides``) so evaluation matches what was recorded, plus
    ``metadata`` (JSON data: a deployment's checkpoint and robot). ``extra_features``: more
    per-step values the caller records (``run_episode``'s ``step_extras``)."""
    features = {**step_features(env), **(extra_features or {})}
    return EpisodeStore.create(path, {k: f.to_json() for k, f in features.items()},
                               env.robot.fps, robot_type=env.robot.name,
                               tasks=[env.task.description or env.task.name], env_id=env_id,
                               env_overrides=overrides, **metadata)


class ControlLoop:
    def __init__(self, env: RobotEnv, cfg: LoopConfig | None = None,
                 recorder: Any | None = None) -> None:
        self.env = env
        self.cfg = cfg or LoopConfig()
        self.recorder = recorder
        low, high = env.robot.action_bounds
        self.safety = SafetyFilter(low, high, self.cfg.safety,
                                   stop_action=env.robot.hold_action)
        self.fps = self.cfg.fps or env.robot.fps
        self._watchdog_stops = 0  # robot stops by the watchdog, counted from its thread
        self.timing: Timing | None = None  # the episode in progress's, for a live status

    def run_episode(self, policy: Policy | None = None, teleop: Teleop | None = None, *,
                    seed: int | None = None, source: Source | str | None = None,
                    record: bool = True, observer: Callable[[RobotEnv], None] | None = None,
                    stop_when: Callable[[], bool] | None = None,
                    review: Callable[[EpisodeResult], tuple[bool, bool | None]] | None = None,
                    step_extras: Callable[[], dict[str, Any]] | None = None,
                    sink: Callable[[Transition], None] | None = None,
                    start_obs: dict[str, np.ndarray] | None = None,
                    tags: Callable[[], Sequence[str]] | None = None,
                    **episode_metadata: Any) -> EpisodeResult:
        """Run one episode. ``source`` labels the non-intervention steps (default: teleop
        when there is no policy, else policy). ``observer(env)`` is called after the reset
        and after every step (e.g. to render a video frame); ``stop_when()`` ends the episode
        early when it returns True (a "done" button); ``review(result) -> (keep, success)``
        decides, before the commit, whether the recorded episode is kept and how it is
        labelled (None: the task's own verdict). ``step_extras()`` returns more values to record
        with each step (features the store was created with: what an interactive method asked
        and was told at that step), called after the action was chosen. ``sink(transition)``
        gets every step as a :class:`Transition` (practice: the actor hands it to its learner).
        ``start_obs``: go on from this observation instead of resetting the env (practice after
        a recovery manoeuvre: the task's laps and clock continue; a new stored episode starts,
        so no stored step is paired with an observation from after the manoeuvre). ``tags()``:
        the stored episode's tags, asked when it is committed (why it ended: ``recovery``)."""
        if policy is None and teleop is None:
            raise ValueError("run_episode needs a policy, a teleop device, or both")
        base = Source.parse(source) if source is not None else (
            Source.TELEOP if policy is None else Source.POLICY)
        try:  # a reset may move the robot (a real arm homes): a failure here stops it too
            if start_obs is None:
                obs, _ = self.env.reset(seed=seed)
            else:
                obs = start_obs
            if observer is not None:
                observer(self.env)
            self.safety.reset(last=self.env.robot.hold_action())
            # a policy object, or its bound method (``policy.select_action``): either way its
            # history, queued chunk and sampling noise (seeded by the episode's) start afresh
            owner = getattr(policy, "__self__", policy)
            if owner is not None and hasattr(owner, "reset") and start_obs is None:
                owner.reset(seed=seed)
            rec = self.recorder if record else None
            if rec is not None and not rec.in_episode:
                # here, not implicitly at the first add(): starting an episode reads the store
                # (file I/O), which would land between the robot's first and second commands
                rec.start_episode(seed=seed, **episode_metadata)  # kept if it is cut off
        except BaseException as exc:
            exc.add_note(f"episode seed={seed}, before its first step: {self._halt(exc, None)}")
            raise
        period = 1.0 / self.fps
        self.timing = timing = Timing(period_ms=1000 * period)
        ret, steps, success, terminated = 0.0, 0, False, False
        terms_sum: dict[str, float] = {}
        sources: dict[str, int] = {}
        limit = self.cfg.max_steps
        # the watchdog guards a robot that moves while the loop waits: any that keeps real
        # time, and a real robot always. A simulated robot stepped as fast as it goes (an
        # evaluation) waits for its next step, and a stop from the watchdog's thread in the
        # middle of a slow step (a diffusion policy's denoising on a busy CPU) would change
        # the episode, nondeterministically
        guard = self.cfg.realtime or not self.env.robot.simulated
        stops_seen = self._watchdog_stops
        try:
            with Watchdog(self.cfg.safety.watchdog_s, self._watchdog_stop, enabled=guard) as dog:
                next_t = time.perf_counter()
                while limit is None or steps < limit:
                    if self.cfg.realtime:
                        now = time.perf_counter()
                        if next_t > now:
                            time.sleep(next_t - now)
                        timing.late_ms.append(1000 * max(0.0, time.perf_counter() - next_t))
                        next_t = max(next_t + period, time.perf_counter() - period)
                    action, src = self._choose(obs, policy, teleop, base)
                    if self._watchdog_stops != stops_seen:
                        # the watchdog stopped the robot while the loop waited: the rate limit
                        # counts from where the stop left it, not from the command before it
                        stops_seen = self._watchdog_stops
                        self.safety.rebase(self.env.robot.hold_action())
                    safe = self.safety(action)
                    if self.safety.stop_requested:
                        self.env.robot.stop()
                    new_obs, reward, terminated, truncated, info = self.env.step(safe)
                    if observer is not None:
                        observer(self.env)
                    sent = np.asarray(info.get("action_sent", safe), dtype=np.float32)
                    if rec is not None:
                        extra = step_extras() if step_extras is not None else {}
                        rec.add({**obs, "action": sent, "next.reward": np.float32(reward),
                                 **extra}, source=src)
                    if sink is not None:
                        sink(Transition(obs, sent, float(reward), new_obs, bool(terminated),
                                        bool(truncated), src, info))
                    sources[src.name.lower()] = sources.get(src.name.lower(), 0) + 1
                    for k, v in info.get("reward_terms", {}).items():
                        terms_sum[k] = terms_sum.get(k, 0.0) + float(v)
                    ret += float(reward)
                    steps += 1
                    success = success or bool(info.get("success", False))
                    obs = new_obs
                    dog.feed()
                    if terminated or truncated or (stop_when is not None and stop_when()):
                        break
        except BaseException as exc:  # Ctrl-C included: stop, keep the steps, then go on up
            done = self._halt(exc, rec, ret=ret, seed=seed, **episode_metadata)
            where = f"step {steps}" + ("" if seed is None else f" of the episode of seed {seed}")
            if isinstance(exc, ActionError):
                raise ActionError(f"{where}: {exc}; {done}") from exc.__cause__
            exc.add_note(f"robolearn control loop, {where}: {done}")
            raise
        self.env.robot.stop()
        result = EpisodeResult(steps, ret, success, bool(terminated), terms_sum, sources,
                               timing.summary(), self.safety.stats)
        keep, label = review(result) if review is not None else (True, None)
        if rec is not None and keep:
            # terminated (the task ended it: success, or a failure such as a dropped cube) vs
            # cut by the step limit: an offline RL reader bootstraps only past the latter
            verdict = success if self.env.task.judges_success else None  # None: unknown
            rec.end_episode(success=verdict if label is None else label,
                            tags=tuple(tags()) if tags is not None else (),
                            **{"ret": ret, "seed": seed, "terminated": bool(terminated),
                               **episode_metadata})
        elif rec is not None:
            rec.discard_episode()
        return result

    def _watchdog_stop(self) -> None:
        """The watchdog's action, from its thread: stop the robot, then count the stop (the
        loop re-bases its rate limit on the next step it sees a new count). A stop that fails
        (the link is gone) is logged here; the loop's own next call to the robot meets the same
        failure and ends the episode."""
        try:
            self.env.robot.stop()
        except Exception as exc:
            log.error("watchdog: stopping %s failed: %s", self.env.robot.name, exc)
        self._watchdog_stops += 1

    def _halt(self, exc: BaseException, rec: Any | None, **metadata: Any) -> str:
        """After ``exc`` ended an episode: stop the robot first, then commit the steps recorded
        so far (tagged ``interrupted``, success unknown). Returns what was done."""
        robot = self.env.robot
        try:
            robot.stop()
            done = f"{robot.name} stopped"
        except Exception as err:  # the link itself may be what failed; the first error wins
            done = f"stopping {robot.name} failed too ({type(err).__name__}: {err})"
        if rec is not None and rec.num_steps:
            error = type(exc).__name__ + (f": {exc}" if str(exc) else "")
            # the recorder's own path for an interrupted episode (its ``with`` block left by
            # an exception), taken here so a caller that goes on to the next episode keeps it
            info = rec.end_episode(None, tags=("interrupted",), complete=False, error=error,
                                   **metadata)
            done += f"; the {info.length} steps recorded kept as interrupted episode {info.index}"
        elif rec is not None:
            rec.discard_episode()  # started, no step recorded: nothing to keep
        return done

    def _choose(self, obs: dict[str, np.ndarray], policy: Policy | None,
                teleop: Teleop | None, base: Source) -> tuple[np.ndarray, Source]:
        if teleop is not None:
            human = _ask("teleop device", teleop.get_action, obs)
            if human is not None:
                return self._shaped("teleop device", human), Source.INTERVENTION \
                    if policy is not None else Source.TELEOP
        if policy is None:  # teleop only and the human is idle: repeat the last command
            return self.safety.last.copy(), base
        return self._shaped("policy", _ask("policy", policy, obs)), base

    def _shaped(self, who: str, raw: Any) -> np.ndarray:
        """``raw`` as the robot's action, ``(A,)``; anything else is an :class:`ActionError`."""
        shape = self.safety.low.shape
        try:
            action = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ActionError(f"the {who}'s action is not an array of numbers ({exc})") from exc
        if action.shape != shape:
            raise ActionError(f"the {who}'s action has shape {action.shape}; "
                              f"{self.env.robot.name} takes actions of shape {shape}")
        return action


def _ask(who: str, fn: Callable[[dict[str, np.ndarray]], Any], obs: dict[str, np.ndarray]
         ) -> Any:
    """``fn(obs)``; an exception of the policy or device becomes an :class:`ActionError`."""
    try:
        return fn(obs)
    except Exception as exc:
        raise ActionError(f"the {who} raised {type(exc).__name__}: {exc}") from exc
