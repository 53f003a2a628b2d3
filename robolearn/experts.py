"""Scripted experts by robot: ``make_expert(env)`` gives ``expert(obs) -> action``.

An expert reads the robot's ``state()`` (ground truth in simulation, an estimate on hardware),
never the simulator, and has ``reset()`` for the start of each episode. Adding an expert is one
function in its robot's folder plus one line in :data:`EXPERTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from robolearn_core.registry import resolve

if TYPE_CHECKING:
    from robolearn.env import RobotEnv


class Expert(Protocol):
    def reset(self, seed: int | None = None) -> None: ...  # the control loop's contract

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


class StateExpert:
    """Adapts ``fn(robot.state()) -> action`` to the ``expert(obs)`` interface."""

    def __init__(self, env: RobotEnv, fn: Callable[[dict[str, Any]], np.ndarray],
                 reset: Callable[[], None]) -> None:
        self.robot, self.fn, self._reset = env.robot, fn, reset

    def reset(self, seed: int | None = None) -> None:  # scripted: the seed changes nothing
        self._reset()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.fn(self.robot.state()), dtype=np.float32)


def car_expert(env: RobotEnv, **kwargs: Any) -> Expert:
    from sim.car.driver import PurePursuitDriver

    driver = PurePursuitDriver.for_robot(env.robot, **kwargs)
    return StateExpert(env, driver, driver.reset)


def arm_expert(env: RobotEnv, **kwargs: Any) -> Expert:
    from sim.arm.expert import ExpertConfig, ScriptedArmExpert

    robot: Any = env.robot
    expert = ScriptedArmExpert(env.task, ExpertConfig(fps=robot.fps, **kwargs), model=robot.model)
    return StateExpert(env, expert, expert.reset)


def robosuite_expert(env: RobotEnv, **kwargs: Any) -> Expert:
    from sim.robosuite_expert import LiftExpert, LiftExpertConfig

    robot: Any = env.robot
    name = robot.cfg.env_name
    if name != "Lift":
        raise KeyError(f"no scripted expert for robosuite {name!r}; there is one for 'Lift'")
    expert = LiftExpert(LiftExpertConfig(**kwargs))
    return StateExpert(env, expert.act, expert.reset)


# robot registry name -> "module:factory(env, **kwargs)"
EXPERTS: dict[str, str] = {
    "sim_car": "robolearn.experts:car_expert",
    "sim_arm": "robolearn.experts:arm_expert",
    "robosuite": "robolearn.experts:robosuite_expert",
}


# robot -> expert settings for teaching (robolearn.teacher): a teacher labels states another
# policy drove to, so its answer must depend on the state alone. The arm's expert otherwise
# follows its own commanded path (smoother demonstrations, but labels that ignore where the
# arm really is) and its phase machine's history (timers, the heading it chose): both off for
# teaching; the car's pure pursuit is a function of the state already.
# roll_slack: the funnel descends with the wrist up to 0.1 rad off square (ExpertConfig)
TEACHER_KWARGS: dict[str, dict[str, Any]] = {"sim_arm": {"feedback": True, "state_phase": True,
                                                         "funnel": 2.0, "roll_slack": 0.1}}


def car_at_risk(robot: Any, margin: float = 0.2, min_speed: float = 0.5,
                grace_s: float = 1.5) -> bool:
    """What makes a person watching the car step in (the teacher's ``risk`` rule): it is
    within ``margin`` m of a wall, touching one, stuck, or crawling under ``min_speed`` m/s
    after the first ``grace_s`` s. It judges the outcome, not the steering: a car may take
    its own line as long as it keeps off the walls and keeps going."""
    s = robot.state()
    near_wall = abs(float(s["lateral"])) > robot.track.width / 2 - margin
    crawling = float(s["time"]) > grace_s and float(s["speed"]) < min_speed
    return bool(near_wall or s["collision"] or s["stuck"] or crawling)


# robot -> "module:function(robot, **kwargs) -> bool": the teacher's risk rule (whether the
# robot is heading for a failure a person would step in to prevent)
RISK_RULES: dict[str, str] = {"sim_car": "robolearn.experts:car_at_risk"}


def car_value(robot: Any, commit_s: float = 0.25, horizon_s: float = 2.0,
              crash_cost: float = 2.0) -> Callable[[np.ndarray], float]:
    """The expert's value of an action here (the teacher's ``value`` rule; RLIF's simulated
    gate compares a strong agent's Q(s, plan) with its Q(s, own action)), estimated by
    playing it forward in the simulator: the action held for ``commit_s`` (a person judges
    where the car is heading, and one step of a rate-limited action changes little), then
    the undegraded pure-pursuit expert for the rest of ``horizon_s``. Value = metres of track
    progress made (negative the wrong way), less ``crash_cost`` if the car touches a wall,
    sticks or flips on the way (the rollout stops there). The car is restored afterwards
    (``SimCar.snapshot``/``restore``: the episode goes on exactly as if nothing was tried).
    Privileged, as the reference's ground-truth critic is: a simulated teacher only."""
    from sim.car.driver import PurePursuitDriver

    if not (0 < commit_s <= horizon_s and crash_cost >= 0):
        raise ValueError("teacher.value: 0 < commit_s <= horizon_s, crash_cost >= 0")
    driver = PurePursuitDriver.for_robot(robot)
    commit = max(1, round(commit_s * robot.fps))
    steps = max(commit, round(horizon_s * robot.fps))
    track = robot.track

    def value(action: np.ndarray) -> float:
        snap = robot.snapshot()
        driver.reset()
        try:
            last, made = float(robot.state()["progress"]), 0.0
            for k in range(steps):
                robot.act(action if k < commit else driver(robot.state()))
                s = robot.state()
                made += track.wrap_ds(float(s["progress"]) - last)
                last = float(s["progress"])
                if s["collision"] or s["stuck"] or s["flipped"]:
                    return made - crash_cost
            return made
        finally:
            robot.restore(snap)

    return value


# robot -> "module:factory(robot, **kwargs) -> value(action) -> float": the expert's value of
# an action in the robot's current state (the teacher's ``value`` rule), where one is known
VALUE_RULES: dict[str, str] = {"sim_car": "robolearn.experts:car_value"}


def make_expert(env: RobotEnv, **kwargs: Any) -> Expert:
    expert: Expert = resolve(EXPERTS, env.robot.name, "expert")(env, **kwargs)
    return expert


# robot -> expert settings for DART collection (``robolearn collect dart_noise=...``): labels
# answer the state reached, as a teacher's do (the arm's expert re-anchored at the measured
# joints); the phase machine keeps its history, which stays true because the expert drives.
DART_KWARGS: dict[str, dict[str, Any]] = {"sim_arm": {"feedback": True}}


class DartExpert:
    """DART (Laskey et al. 2017): the expert drives with Gaussian noise (std ``noise``, action
    units) added to every action element but a gripper's, and ``label`` keeps its clean answer
    for the state it is in, which :class:`LabelledRecorder` records as the step's action. The
    data then holds the states a cloned policy's own errors lead to (a grasp a few millimetres
    off), each labelled with the way back. The noise is seeded by the episode's seed."""

    def __init__(self, env: RobotEnv, noise: float) -> None:
        if not noise > 0:
            raise ValueError(f"dart_noise must be > 0, got {noise}")
        self.expert = make_expert(env, **DART_KWARGS.get(env.robot.name, {}))
        self.noise = noise
        self.low, self.high = env.robot.action_bounds
        names = env.robot.action_feature.names or ()
        self.noisy = np.array([not str(n).startswith("gripper") for n in names] if names
                              else [True] * len(self.low))
        self.label: np.ndarray | None = None
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)
        self._rng = np.random.default_rng([0 if seed is None else seed, 0xDA27])
        self.label = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.label = np.clip(self.expert(obs), self.low, self.high).astype(np.float32)
        noise = self._rng.normal(0.0, self.noise, self.label.shape) * self.noisy
        return np.clip(self.label + noise, self.low, self.high).astype(np.float32)


class LabelledRecorder:
    """Wraps a recorder: each step's action becomes ``dart.label`` (what the expert would have
    done), not the noisy action the robot was sent."""

    def __init__(self, inner: Any, dart: DartExpert) -> None:
        self.inner, self.dart = inner, dart

    def add(self, row: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> None:
        if self.dart.label is None:
            raise RuntimeError("DART: a step recorded before the expert labelled it")
        self.inner.add({**row, "action": self.dart.label}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
