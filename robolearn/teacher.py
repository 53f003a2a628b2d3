"""Who answers a query or takes over during interactive learning (``robolearn improve``).

A teacher has four answers (:class:`Teacher`): the action it would take here (``label``: an
annotation), whether the novice's planned action is acceptable (``judge``: a validation), whether
it takes control now (``wants_control``: HG-DAgger's and RLIF's human gate), and ``reset`` at
an episode start.

:class:`SimulatedTeacher` is the scripted expert (``robolearn.experts``), optionally degraded,
so every method runs unattended and reproducibly:

- ``noise``: Gaussian action noise (std, in action units) on what it labels and does;
- ``delay``: reaction delay in steps (it answers for the state ``delay`` steps ago);
- ``bias``: a constant offset on its actions (a mis-trimmed controller);
- ``weak``: a weaker policy (a checkpoint) that acts in its place;
- ``rule``: its intervention rule: ``distance`` (take over when the novice's action is farther
  than ``threshold`` from its own, for ``hold`` steps), ``random`` (with probability ``p``
  a step, for ``hold`` steps), ``risk`` (when the robot heads for a failure a person would
  prevent: per robot, :data:`robolearn.experts.RISK_RULES`; the car's: near a wall, stuck or
  crawling), ``value`` (when the expert's value of the novice's plan falls below
  ``value_ratio`` of its value of the reference action: RLIF's value-based gate, where the
  reference's ground-truth critic compares Q(s, plan) with Q(s, its action); per robot,
  :data:`robolearn.experts.VALUE_RULES`; the car's plays both forward in the simulator), or
  ``never``.
``tolerance`` is how far (max-norm, action units) a plan may be from its own action and still
be judged acceptable; ``reference=expert`` compares plans with the undegraded expert's action
instead (it judges like the expert, acts like the degraded teacher: RLIF's simulated teacher,
whose gate is a strong agent's value and whose takeovers are a weaker policy's).

:class:`HumanTeacher` is a person at any teleop device: takeovers as in ``deploy``, and for
ASkDAgger's queries the robot pauses, shows its plan, and takes approve or reject.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from robolearn_core.registry import resolve


class Teacher(Protocol):
    def reset(self, seed: int | None = None) -> None: ...

    def label(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...

    def judge(self, obs: dict[str, np.ndarray], plan: np.ndarray, drive: bool = True
              ) -> bool | None: ...

    def wants_control(self, obs: dict[str, np.ndarray], plan: np.ndarray) -> bool: ...

    def see(self, obs: dict[str, np.ndarray], plan: np.ndarray, ok: bool | None = None
            ) -> None: ...  # the plan (and, for a plan of several steps, its verdict), every
    # step, before ``holding`` is asked

    @property
    def holding(self) -> bool: ...  # a takeover (or a person's drive) goes on

    def tick(self) -> None: ...  # the step is over


@dataclass
class TeacherConfig:
    noise: float = 0.0  # std of Gaussian action noise, action units
    delay: int = 0  # reaction delay, steps
    bias: list[float] = field(default_factory=list)  # constant offset on each action dimension (a
    # mis-trimmed controller); [] for none
    weak: str = ""  # a checkpoint that acts in the expert's place (a weaker teacher)
    rule: str = "distance"  # intervention rule: distance | random | risk | value | never
    threshold: float = 0.3  # distance rule: take over above this max-norm distance
    p: float = 0.05  # random rule: probability of a takeover each step
    hold: int = 4  # steps a takeover lasts (RLIF's intervene_n_steps)
    rule_p: float = 1.0  # distance / risk rule: probability it steps in when the rule fires
    spurious_p: float = 0.0  # distance / risk rule: probability it steps in anyway (when the rule
    # does not fire; RLIF's simulated gate: rule_p 0.95, spurious_p 0.05, a person who misses
    # a few mistakes and steps in a few times for nothing)
    tolerance: float = 0.15  # judge: a plan within this max-norm distance is acceptable
    drive: int = 0  # ASkDAgger (after rejecting a plan it was asked about, its active
    # query, drive this many more steps, as a person at a teleop device does; 0: label the
    # rejected step only. ASkDAgger's oracle action is a whole pick-and-place primitive in its
    # tasks; one control step here is a sliver of one, so its annotation is a short stretch)
    drive_back: int = 0  # during such a drive (hand the robot back once the novice's plan has
    # been acceptable, within ``tolerance``, on this many consecutive steps; 0: drive all
    # ``drive`` steps), as a person hands back when the robot would do the right thing again
    # (ThriftyDAgger's return rule, without its novelty and risk terms); with plans of several
    # steps (plan_steps > 1) what must be acceptable is the whole plan, the thing the teacher
    # is asked about, not its first step
    reference: str = "self"  # what the distance rule and judge compare a plan with (self: its
    # own, degraded action | expert: the undegraded expert's, a teacher who sees a mistake at
    # once but demonstrates with its degradations; RLIF's value-based gate)
    expert: dict[str, Any] = field(default_factory=dict)  # the scripted expert's settings
    risk: dict[str, Any] = field(default_factory=dict)  # risk rule's settings (the car's:
    # margin, min_speed, grace_s; robolearn.experts.car_at_risk)
    value_ratio: float = 0.9  # value rule (take over when V(plan) < V(reference action) less
    # (1 - value_ratio) of its size; RLIF's thresholds: 0.97-0.99 of Q)
    value: dict[str, Any] = field(default_factory=dict)  # value rule's settings (the car's:
    # commit_s, horizon_s, crash_cost; robolearn.experts.car_value)
    seed: int = 0  # seeds its noise and random takeovers

    def __post_init__(self) -> None:
        if self.reference not in ("self", "expert"):
            raise ValueError(f"teacher.reference {self.reference!r}: self or expert")
        if self.rule not in ("distance", "random", "risk", "value", "never"):
            raise ValueError(f"teacher.rule {self.rule!r}: distance, random, risk, value or "
                             "never")
        if not 0 < self.value_ratio <= 1:
            raise ValueError(f"teacher.value_ratio {self.value_ratio}: in (0, 1]")
        if self.noise < 0 or self.delay < 0 or self.hold < 1 or self.drive < 0 \
                or self.drive_back < 0 \
                or not all(0 <= x <= 1 for x in (self.p, self.rule_p, self.spurious_p)):
            raise ValueError("teacher: noise >= 0, delay >= 0, hold >= 1, drive >= 0, "
                             "drive_back >= 0; p, rule_p, spurious_p in [0, 1]")


class SimulatedTeacher:
    """The scripted expert of ``env`` as a teacher (see the module docstring)."""

    def __init__(self, env: Any, cfg: TeacherConfig | None = None) -> None:
        from robolearn.experts import TEACHER_KWARGS, make_expert

        self.cfg = cfg or TeacherConfig()
        self.expert = make_expert(env, **{**TEACHER_KWARGS.get(env.robot.name, {}),
                                          **self.cfg.expert})
        # the undegraded expert its rule and judge compare plans with (reference=expert)
        self.reference = (make_expert(env, **TEACHER_KWARGS.get(env.robot.name, {}))
                          if self.cfg.reference == "expert" else None)
        self.weak: Any = None
        if self.cfg.weak:
            from policies.base import Policy
            from robolearn.deploy import checkpoint_data

            self.weak = Policy.load(checkpoint_data(self.cfg.weak)[0])
        self.low, self.high = env.robot.action_bounds
        self.risk: Any = None
        if self.cfg.rule == "risk":
            from robolearn.experts import RISK_RULES

            robot = env.robot
            rule = resolve(RISK_RULES, robot.name, "risk rule")
            self.risk = lambda: rule(robot, **self.cfg.risk)
        self.value: Any = None
        if self.cfg.rule == "value":
            from robolearn.experts import VALUE_RULES

            make = resolve(VALUE_RULES, env.robot.name, "value rule")
            try:
                self.value = make(env.robot, **self.cfg.value)
            except TypeError as exc:  # a setting the robot's value rule does not have
                raise ValueError(f"teacher.value {self.cfg.value}: {exc}") from None
        self.values: tuple[float, float] | None = None  # the value rule's last (plan, ref)
        if self.cfg.bias and len(self.cfg.bias) != len(self.low):
            raise ValueError(f"teacher.bias: {len(self.cfg.bias)} values for "
                             f"{len(self.low)} action dimensions")
        self._rng = np.random.default_rng(self.cfg.seed)
        self._past: deque[np.ndarray] = deque(maxlen=self.cfg.delay + 1)
        self._holding = 0
        self._drive_until = -1  # last step of a drive after a rejection (cfg.drive)
        self._agreed = 0  # consecutive steps of a drive the novice's plan was acceptable
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None
        self._step = 0

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)
        if self.reference is not None:
            self.reference.reset(seed)
        if self.weak is not None:
            self.weak.reset(seed)
        if seed is not None:
            self._rng = np.random.default_rng(self.cfg.seed * 1_000_003 + seed)
        self._past.clear()
        self._holding = 0
        self._drive_until = -1
        self._agreed = 0
        self._cached = None
        self._step = 0

    def label(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Its action here (once per step: asking twice gives the same answer)."""
        return self._answer(obs)[0]

    def reference_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """What its rule and judge compare a plan with (``reference``): its own action, or the
        undegraded expert's here and now."""
        return self._answer(obs)[1]

    def _answer(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self._cached is not None and self._cached[0] == self._step:
            return self._cached[1], self._cached[2]
        # its answer for the state ``delay`` steps ago: the action computed then, kept back
        # (delaying the answer, not the observation, because a scripted expert may read the
        # robot's state directly, as the car's does, and would ignore an old observation)
        source = self.weak.select_action if self.weak is not None else self.expert
        self._past.append(np.asarray(source(obs), dtype=np.float64))
        a = self._past[0]
        if self.cfg.bias:
            a = a + np.asarray(self.cfg.bias, np.float64)
        if self.cfg.noise > 0:
            a = a + self._rng.normal(0.0, self.cfg.noise, a.shape)
        a = np.clip(a, self.low, self.high).astype(np.float32)
        ref = a if self.reference is None else np.clip(
            np.asarray(self.reference(obs), np.float64), self.low, self.high).astype(np.float32)
        self._cached = (self._step, a, ref)
        return a, ref

    @property
    def holding(self) -> bool:
        """Whether a takeover started on an earlier step is still held, or a drive after a
        rejection goes on."""
        return self._holding > 0 or self._step <= self._drive_until

    def see(self, obs: dict[str, np.ndarray], plan: np.ndarray, ok: bool | None = None
            ) -> None:
        """The novice's plan this step, seen before :attr:`holding` is asked: a drive ends
        early once the plan has been acceptable on ``drive_back`` consecutive steps. ``ok``:
        the verdict on a plan of several steps (:meth:`preview`), instead of this step's."""
        if self.cfg.drive_back <= 0 or self._step > self._drive_until:
            return
        good = self._acceptable(obs, plan) if ok is None else ok
        self._agreed = self._agreed + 1 if good else 0
        if self._agreed >= self.cfg.drive_back:
            self._drive_until, self._agreed = self._step - 1, 0  # the novice acts from here

    def tick(self) -> None:
        """The step is over (the improve loop calls this once per step)."""
        self._step += 1

    def judge(self, obs: dict[str, np.ndarray], plan: np.ndarray, drive: bool = True) -> bool:
        """Whether ``plan`` is acceptable. ``drive``: after a rejection it drives the next
        ``cfg.drive`` steps (:attr:`holding`), as a person would take over; with ``drive`` 0
        it labels the rejected step only."""
        return self.answer(self._acceptable(obs, plan), drive)

    def answer(self, ok: bool, drive: bool = True) -> bool:
        """Its answer to a query about a plan it judged ``ok`` (:meth:`judge`, or
        :meth:`preview` for a plan of several steps); a rejection with ``drive`` starts its
        drive."""
        if not ok and drive and self.cfg.drive > 0:
            self._drive_until, self._agreed = self._step + self.cfg.drive, 0
        return ok

    def preview(self, env: Any, obs: dict[str, np.ndarray],
                act: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, float]] | np.ndarray,
                steps: int) -> tuple[float, bool]:
        """ASkDAgger's plan of ``steps`` steps from ``obs``, as its simulated teacher sees it:
        the novice (``act(obs) -> (action, uncertainty)``) acts them on a copy of the
        simulation, or ``act`` is the plan itself (``(steps, A)`` actions, executed open-loop:
        a novice that plans chunks), and this teacher judges each step on the copy
        (askdagger_cliport's simulated teacher executes the plan on a copy of the environment;
        a person judges the shown plan without executing it). Returns the plan's largest
        uncertainty (0 for a given plan) and whether every step was acceptable; ``env``, this
        teacher and its random stream are left as they were."""
        sim_env, me = copy.deepcopy((env, self))
        o, worst, ok = obs, 0.0, True
        for i in range(steps):
            plan, u = act(o) if callable(act) else (act[i], 0.0)
            worst = max(worst, float(u))
            ok = ok and me._acceptable(o, plan)
            me.tick()
            o, _, terminated, truncated, _ = sim_env.step(np.clip(plan, self.low, self.high))
            if terminated or truncated:
                break
        return worst, ok

    def _distance(self, obs: dict[str, np.ndarray], plan: np.ndarray) -> float:
        """Max-norm distance of ``plan`` from the reference action (judge, distance rule)."""
        return float(np.max(np.abs(np.asarray(plan) - self.reference_action(obs))))

    def _acceptable(self, obs: dict[str, np.ndarray], plan: np.ndarray) -> bool:
        return self._distance(obs, plan) <= self.cfg.tolerance

    def wants_control(self, obs: dict[str, np.ndarray], plan: np.ndarray) -> bool:
        c = self.cfg
        if self._holding > 0:
            self._holding -= 1
            return True
        if c.rule == "never":
            return False
        if c.rule == "random":
            take = bool(self._rng.random() < c.p)
        elif c.rule == "risk":
            take = bool(self.risk())
        elif c.rule == "value":
            q_ref = self.value(self.reference_action(obs))
            q_plan = self.value(np.asarray(plan, np.float64))
            self.values = (q_plan, q_ref)
            take = q_plan < q_ref - (1 - c.value_ratio) * abs(q_ref)
        else:
            take = self._distance(obs, plan) > c.threshold
        if c.rule != "random" and (c.rule_p < 1 or c.spurious_p > 0):
            take = bool(self._rng.random() < (c.rule_p if take else c.spurious_p))
        if take:
            self._holding = c.hold - 1
        return take


def cannot_preview(env: Any, steps: int = 3) -> str | None:
    """Why a plan cannot be previewed on a deep copy of ``env`` (:meth:`SimulatedTeacher.preview`),
    or None: a robot that renders holds a GL renderer, which cannot be copied; and the copy,
    stepped with the same actions as ``env``, must observe what ``env`` does (a robosuite
    env's copy moved its state but went on observing the original's)."""
    images = [k for k, f in env.features.items() if f.image]
    if images:
        return f"it renders {images} (a renderer cannot be copied; the novice learns from " \
               "the low-dimensional observations only: drop the cameras)"
    env.reset(seed=0)
    twin = copy.deepcopy(env)
    low, high = (np.asarray(b, np.float64) for b in env.robot.action_bounds)
    actions = np.random.default_rng(0).uniform(low, high, (steps, len(low)))
    # the copy first: one that still reads the original (robosuite) sees it unmoved
    sim = [twin.step(a)[0] for a in actions]
    real = [env.step(a)[0] for a in actions]
    if any(not np.array_equal(r[k], c[k]) for r, c in zip(real, sim, strict=True) for k in r):
        return "a copy of it does not observe what it does after the same actions"
    return None


class TeacherTakeover:
    """A simulated teacher as a teleop device (``get_action(obs) -> action | None``), for the
    control loop's takeover path: practice with HIL-SERL's interventions and no person at the
    controls. The loop asks a teleop device before the policy, so the teacher cannot see the
    policy's plan here: its rule is ``random`` (a takeover with probability ``p`` a step, held
    ``hold`` steps), ``risk`` (the robot heads for a failure) or ``never``; ``distance``
    needs the plan and is refused."""

    def __init__(self, env: Any, cfg: TeacherConfig) -> None:
        if cfg.rule in ("distance", "value"):
            raise ValueError(f"teacher.rule {cfg.rule} judges the policy's plan, which a "
                             "takeover device does not see; use rule=random, risk or never")
        self.teacher = SimulatedTeacher(env, cfg)
        self.takeovers = self.steps = 0  # takeovers started, steps driven

    def reset(self, seed: int | None = None) -> None:
        """A new episode: no takeover held; the random takeovers reseeded by ``seed``."""
        self.teacher.reset(seed)

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        t = self.teacher
        try:
            was_holding = t.holding
            t.label(obs)  # it watches every step (its reaction delay counts steps)
            if not t.wants_control(obs, np.zeros(0)):
                return None
            self.takeovers += not was_holding
            self.steps += 1
            return t.label(obs)
        finally:
            t.tick()


class HumanTeacher:
    """A person at a teleop device (keyboard, gamepad, SpaceMouse, leader arm) as the teacher
    of ``robolearn improve`` (``teacher=human teleop=...``).

    - Takeovers (HG-DAgger, RLIF): the person takes over with the device as in ``deploy``
      (the takeover toggle, or any driving input); the steps they drive are their labels.
    - Queries (ASkDAgger): the robot pauses (nothing is stepped while it waits), shows its
      plan ("I plan to do this, but I am uncertain": each action dimension's value, or for a
      novice that plans chunks (``plan=chunk``) the chunk summarised: :func:`describe_plan`;
      and the uncertainty against the threshold), and the device switches to its ``query`` keys:
      approve (the plan is executed: a validation) or reject (the person then drives: each
      step they drive is an annotation, until the takeover toggle hands control back).
    ``query_timeout_s``: how long a query waits for an answer; an unanswered one labels
    nothing (``judge`` returns None) and the robot goes on with its plan.
    DAgger (a label every step) and ThriftyDAgger (control handed over without asking) need a
    teacher that answers at every step; they run with the simulated teacher only."""

    def __init__(self, teleop: Any, names: list[str], *, query_timeout_s: float = 60.0,
                 say: Any = None, poll_s: float = 0.02) -> None:
        self.teleop, self.names = teleop, names
        self.query_timeout_s, self.poll_s = query_timeout_s, poll_s
        self.say = say or _console_print
        self._step = 0
        self._seen: tuple[int, np.ndarray | None] | None = None
        self.queries = self.unanswered = 0
        self._moved = False  # input since control was handed over (no input: no label yet)
        self.uncertainty: tuple[float, float] | None = None  # (u, threshold) for the prompt

    def reset(self, seed: int | None = None) -> None:
        self.teleop.set_mode("drive")
        self.teleop.reset()
        self._seen = None
        self._step = 0
        self._moved = False

    def _drive(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The device's action this step (None: the person is not driving); read once a step."""
        if self._seen is None or self._seen[0] != self._step:
            self._seen = (self._step, self.teleop.get_action(obs))
            self._moved = self._moved or bool(self.teleop.active)
            if self._seen[1] is None:
                self._moved = False
        return self._seen[1]

    def label(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The person's action this step; NaN while they do not drive, and while they hold
        control without having moved anything yet (the device's idle output is no answer)."""
        a = self._drive(obs)
        if a is None or not self._moved:
            return np.full(len(self.names), np.nan, np.float32)
        return a

    def command(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """What the device sends now, answer or not (the robot holds on its idle output while
        the person takes the controls); None while they do not drive."""
        return self._drive(obs)

    @property
    def holding(self) -> bool:
        """Whether the person is driving (after a rejection, until they hand back)."""
        return bool(self.teleop.takeover)

    def see(self, obs: dict[str, np.ndarray], plan: np.ndarray, ok: bool | None = None
            ) -> None:
        pass  # the person hands back with the takeover toggle

    def tick(self) -> None:
        self._step += 1

    def wants_control(self, obs: dict[str, np.ndarray], plan: np.ndarray) -> bool:
        return self._drive(obs) is not None

    def judge(self, obs: dict[str, np.ndarray], plan: np.ndarray, drive: bool = True
              ) -> bool | None:
        """Ask: show the plan, wait for approve or reject (the robot is not stepped).
        ``drive``: a rejection hands the robot to the person (False for ASkDAgger's random
        queries, whose rejected plan is executed and only labelled)."""
        self.queries += 1
        parts = describe_plan(self.names, plan)
        why = ""
        if self.uncertainty is not None:
            why = f" (uncertainty {self.uncertainty[0]:.3g} >= {self.uncertainty[1]:.3g})"
        keys = {e: k for k, e in self.teleop.device.event_map("query").items()}
        self.say(f"I plan to do this, but I am uncertain{why}: {parts}. "
                 f"[{keys.get('approve', '?')}] approve, [{keys.get('reject', '?')}] reject "
                 "and drive")
        self.teleop.set_mode("query")
        answer: bool | None = None
        deadline = time.monotonic() + self.query_timeout_s
        try:
            while answer is None and time.monotonic() < deadline:
                for event in self.teleop.device.read().events:
                    if event in ("approve", "reject"):
                        answer = event == "approve"
                        break
                else:
                    time.sleep(self.poll_s)
        finally:
            self.teleop.set_mode("drive")  # also ends any takeover held before the query
        if answer is None:
            self.unanswered += 1
            self.say(f"no answer in {self.query_timeout_s:g} s: the robot goes on")
            return None  # executed as planned, labelled by nobody (see the class docstring)
        if not answer and drive:
            self.teleop.takeover = True  # the person drives from the next read on
            self._seen, self._moved = None, False
        return answer


def describe_plan(names: list[str], plan: np.ndarray) -> str:
    """A plan as a person reads it in the terminal: one step's value of each action dimension
    (``steering +0.25, throttle -0.50``), or for a chunk of several steps where each dimension
    starts, ends and how far it reaches (``over 10 steps: steering +0.10 -> +0.30 (-0.05 to
    +0.30), ...``): the planned chunk summarised, as ASkDAgger shows its plan."""
    p = np.asarray(plan, np.float64)
    if p.ndim == 1 or len(p) == 1:
        return ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, p.reshape(-1), strict=False))
    return f"over {len(p)} steps: " + ", ".join(
        f"{n} {p[0, j]:+.2f} -> {p[-1, j]:+.2f} ({p[:, j].min():+.2f} to {p[:, j].max():+.2f})"
        for j, n in enumerate(names[:p.shape[1]]))


def _console_print(text: str) -> None:
    from robolearn_core.progress import console

    console.print(text)
