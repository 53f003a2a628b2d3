"""Arm tasks on the table: reach a point, lift the cube, put the cube in the bin.

Each task reads only ``robot.state()`` (see :meth:`sim.arm.robot.SimArm.state`), so the same task
scores the simulated arm and a real one with a state estimate. Reward terms are unweighted and
mostly in [0, 1]; the weights come from config. Every task fails when the cube leaves the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.schema import Feature
from robolearn.robot import Robot
from robolearn.task import Task
from sim.arm.layout import LayoutConfig, sample_layout

HIDDEN = np.array([0.0, 0.0, -0.5])  # where tasks without a reach target park its marker
PARKED_BIN = np.array([-0.12, 0.30, 0.0])  # where the reach task parks the bin, out of reach


@dataclass
class ArmTaskConfig:
    layout: LayoutConfig = field(default_factory=LayoutConfig)  # randomised object placement
    reach_tolerance: float = 0.02  # m, reach success radius around the target
    lift_height: float = 0.05  # m, cube bottom above the table counting as lifted
    distance_scale: float = 10.0  # 1/m, shaping: term = 1 - tanh(scale * distance)

    def __post_init__(self) -> None:
        if isinstance(self.layout, dict):
            self.layout = LayoutConfig(**self.layout)
        if self.reach_tolerance <= 0 or self.lift_height <= 0 or self.distance_scale <= 0:
            raise ValueError("ArmTaskConfig: reach_tolerance, lift_height and distance_scale "
                             "must be positive")


def _near(dist: float, scale: float) -> float:
    return 1.0 - math.tanh(scale * dist)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return math.dist(a.tolist(), b.tolist())


def _unit(x: float) -> float:
    return min(max(x, 0.0), 1.0)


class _ArmTask(Task):
    """Shared configuration, placement and failure of the arm tasks."""

    def __init__(self, weights: dict[str, float] | None = None, **config: Any) -> None:
        super().__init__(weights)
        self.cfg = ArmTaskConfig(**config)

    def reset_options(self, robot: Robot, rng: np.random.Generator) -> dict[str, Any]:
        layout = sample_layout(rng, self.cfg.layout)
        layout["target"] = HIDDEN.copy()
        return layout

    def failure(self, robot: Robot) -> bool:
        return not robot.state()["cube_on_table"]

    def _reach_cube(self, s: dict[str, Any]) -> float:
        return _near(_dist(s["ee_pos"], s["cube_pos"]), self.cfg.distance_scale)

    def lifted(self, s: dict[str, Any]) -> bool:
        return bool(s["grasped"] and s["cube_height"] >= self.cfg.lift_height)


class ReachTask(_ArmTask):
    """Bring the gripper's tool centre point within 2 cm of a random target point."""

    name = "arm_reach"
    description = "Move the gripper to the green target point."

    def __init__(self, weights: dict[str, float] | None = None, **config: Any) -> None:
        super().__init__(weights, **config)
        self.target: np.ndarray = np.zeros(3)  # reach target of this episode, m
        self._last: np.ndarray | None = None  # previous action, for the action-rate term

    def default_weights(self) -> dict[str, float]:
        return {"reach": 1.0, "success": 5.0, "action_rate": 0.0}

    def observation_features(self, robot: Robot) -> dict[str, Feature]:
        return {"observation.goal": Feature("float32", (3,), names=("goal.x", "goal.y", "goal.z"))}

    def reset_options(self, robot: Robot, rng: np.random.Generator) -> dict[str, Any]:
        layout = sample_layout(rng, self.cfg.layout)
        layout["bin_pos"] = PARKED_BIN.copy()
        self.target = np.asarray(layout["target"], dtype=np.float64).copy()
        return layout

    def reset(self, robot: Robot) -> None:
        self.target = np.asarray(robot.state()["target"], dtype=np.float64).copy()
        self._last = None

    def observe(self, robot: Robot) -> dict[str, np.ndarray]:
        return {"observation.goal": self.target.astype(np.float32)}

    def distance(self, robot: Robot) -> float:
        return _dist(robot.state()["ee_pos"], self.target)

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        dist = self.distance(robot)
        act = np.asarray(action, dtype=np.float64)
        rate = 0.0 if self._last is None else -float(np.square(act - self._last).sum())
        self._last = act.copy()
        return {"reach": _near(dist, self.cfg.distance_scale),
                "success": float(dist < self.cfg.reach_tolerance), "action_rate": rate}

    def success(self, robot: Robot) -> bool:
        return self.distance(robot) < self.cfg.reach_tolerance


class LiftTask(_ArmTask):
    """Grasp the cube and lift it 5 cm above the table."""

    name = "arm_lift"
    description = "Pick up the red cube and lift it."

    def default_weights(self) -> dict[str, float]:
        return {"reach": 0.5, "grasp": 1.0, "lift": 2.0, "success": 5.0}

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        s = robot.state()
        height = _unit(s["cube_height"] / self.cfg.lift_height)
        return {"reach": self._reach_cube(s), "grasp": float(s["grasped"]),
                "lift": height if s["grasped"] else 0.0, "success": float(self.lifted(s))}

    def success(self, robot: Robot) -> bool:
        return self.lifted(robot.state())


class BinTask(_ArmTask):
    """Pick the cube up and release it inside the bin."""

    name = "arm_bin"
    description = "Put the red cube in the blue bin."

    def default_weights(self) -> dict[str, float]:
        return {"reach": 0.5, "grasp": 1.0, "lift": 1.0, "place": 2.0, "success": 10.0}

    def placed(self, s: dict[str, Any]) -> bool:
        return bool(s["cube_in_bin"] and not s["cube_touching_gripper"])

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        s = robot.state()
        over_bin = _dist(s["cube_pos"][:2], s["bin_pos"][:2])
        carrying = s["grasped"] or s["cube_in_bin"]
        return {"reach": self._reach_cube(s), "grasp": float(s["grasped"]),
                "lift": _unit(s["cube_height"] / self.cfg.lift_height) if s["grasped"] else 0.0,
                "place": _near(over_bin, self.cfg.distance_scale) if carrying else 0.0,
                "success": float(self.placed(s))}

    def success(self, robot: Robot) -> bool:
        return self.placed(robot.state())
