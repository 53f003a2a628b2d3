"""Tasks: reward terms, success and failure, kept apart from the robot.

A task reads only :meth:`Robot.state` and :meth:`Robot.observe`, never a simulator, so the same
task scores a simulated and a real robot. Reward terms are a named dict; the reward is their sum
weighted by ``weights`` (from config), and every term is logged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from data.schema import Feature
from robolearn.robot import Robot
from robolearn_core.registry import resolve


class Task(ABC):
    name: str = "task"
    description: str = ""  # one sentence, stored as the episode's task in the episode store
    # False: the task cannot tell success (a real robot without a sensor for the goal); the
    # control loop records its episodes with success unknown (None)
    judges_success: bool = True

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = {**self.default_weights(), **(weights or {})}
        unknown = set(self.weights) - set(self.default_weights())
        if unknown:
            raise KeyError(f"task {self.name}: unknown reward term(s) {sorted(unknown)}; terms: "
                           f"{sorted(self.default_weights())}")

    @abstractmethod
    def default_weights(self) -> dict[str, float]:
        """Reward term -> weight."""

    def observation_features(self, robot: Robot) -> dict[str, Feature]:
        """Observations the task adds to the robot's (e.g. the next checkpoints of a track)."""
        return {}

    def reset_options(self, robot: Robot, rng: np.random.Generator) -> dict[str, Any]:
        """Options for ``robot.reset`` (randomised object placement in simulation)."""
        return {}

    def reset(self, robot: Robot) -> None:
        """Called after the robot reset: clear per-episode progress."""

    def observe(self, robot: Robot) -> dict[str, np.ndarray]:
        return {}

    @abstractmethod
    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        """Unweighted reward terms for the step that just happened."""

    @abstractmethod
    def success(self, robot: Robot) -> bool:
        """The task is done."""

    def failure(self, robot: Robot) -> bool:
        """The episode cannot go on (crashed, flipped, object dropped off the table)."""
        return False

    def success_terminates(self) -> bool:
        """Whether reaching success ends the episode (a lap task keeps driving)."""
        return True

    def info(self) -> dict[str, Any]:
        """Summary of the episode so far beyond reward terms (e.g. lap times); JSON-able."""
        return {}

    def reward(self, terms: dict[str, float]) -> float:
        return float(sum(self.weights.get(k, 0.0) * v for k, v in terms.items()))


TASKS: dict[str, str] = {
    "car_laps": "sim.car.tasks:LapTask",
    "arm_reach": "sim.arm.tasks:ReachTask",
    "arm_lift": "sim.arm.tasks:LiftTask",
    "arm_bin": "sim.arm.tasks:BinTask",
    "robosuite": "sim.robosuite_robot:RobosuiteTask",
    "unscored": "robolearn.unscored:UnscoredTask",  # no reward, success unknown (real robots)
}


def make_task(name: str, **kwargs: Any) -> Task:
    return resolve(TASKS, name, "task")(**kwargs)
