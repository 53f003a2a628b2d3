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
TEACHER_KWARGS: dict[str, dict[str, Any]] = {"sim_arm": {"feedback": True,
                                                         "state_phase": True}}


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


def make_expert(env: RobotEnv, **kwargs: Any) -> Expert:
    expert: Expert = resolve(EXPERTS, env.robot.name, "expert")(env, **kwargs)
    return expert
