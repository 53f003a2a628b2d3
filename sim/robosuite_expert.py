"""A scripted Lift expert for the robosuite robot: OSC position deltas from ``robot.state()``.

Phases: move above the cube with the gripper open, turn the hand to the cube's nearest face,
descend, close, lift. Run ``python -m sim.robosuite_expert [n_episodes]`` to measure it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from robolearn.robot import Robot

APPROACH, DESCEND, GRASP, LIFT = range(4)


def _heading(quat_xyzw: np.ndarray) -> float:
    """World-frame heading (rad) of the body's x axis projected on the horizontal plane."""
    x, y, z, w = quat_xyzw
    return float(np.arctan2(2 * (x * y + w * z), 1 - 2 * (y * y + z * z)))


def _wrap(angle: float, period: float) -> float:
    """Angle wrapped into [-period / 2, period / 2)."""
    return float((angle + period / 2) % period - period / 2)


@dataclass
class LiftExpertConfig:
    """Gains and thresholds of the scripted Lift expert."""

    pos_gain: float = 10.0  # action per metre of position error (1 action unit = 5 cm/step)
    yaw_gain: float = 2.0  # action per radian of yaw error (1 action unit = 0.5 rad/step)
    hover: float = 0.06  # height above the cube centre for the approach, m
    grasp_depth: float = 0.0  # eef height relative to the cube centre when closing, m
    tolerance: float = 0.008  # position error that ends a move, m
    yaw_tolerance: float = 0.1  # yaw error that ends the approach, rad
    close_steps: int = 8  # steps spent closing the gripper before lifting
    lift_height: float = 0.15  # lift target above the cube's start height, m
    align_yaw: bool = True  # turn the hand to the cube's faces (cubes spawn at random yaw)

    def __post_init__(self) -> None:
        if self.pos_gain <= 0 or self.yaw_gain < 0 or self.tolerance <= 0:
            raise ValueError("pos_gain and tolerance must be positive, yaw_gain >= 0")
        if self.close_steps < 1 or self.lift_height <= 0:
            raise ValueError("close_steps must be >= 1 and lift_height positive")


class LiftExpert:
    """Call :meth:`reset` at each episode start, then :meth:`act` once per step."""

    def __init__(self, cfg: LiftExpertConfig | None = None, obj: str = "cube") -> None:
        self.cfg, self.obj = cfg or LiftExpertConfig(), obj
        self.reset()

    def reset(self) -> None:
        self.phase, self._closing = APPROACH, 0
        self._start_z: float | None = None
        self._grasp_xy: np.ndarray | None = None

    def act(self, state: dict[str, Any]) -> np.ndarray:
        cfg = self.cfg
        eef, cube = state["eef_pos"], state["objects"][self.obj]
        if self._start_z is None:
            self._start_z = float(cube[2])
        start_z = self._start_z
        yaw_err = 0.0
        if cfg.align_yaw and self.phase in (APPROACH, DESCEND):  # cube is 4-fold symmetric
            yaw_err = _wrap(_heading(state["object_quats"][self.obj])
                            - _heading(state["eef_quat"]), np.pi / 2)
        gripper = -1.0
        if self.phase == APPROACH:
            target = cube + [0.0, 0.0, cfg.hover]
            if np.linalg.norm(target - eef) < cfg.tolerance and abs(yaw_err) < cfg.yaw_tolerance:
                self.phase = DESCEND
        if self.phase == DESCEND:
            target = cube + [0.0, 0.0, cfg.grasp_depth]
            if np.linalg.norm(target - eef) < cfg.tolerance:
                self.phase = GRASP
        if self.phase == GRASP:
            target, gripper = eef.copy(), 1.0
            self._grasp_xy = eef[:2].copy() if self._grasp_xy is None else self._grasp_xy
            self._closing += 1
            if self._closing >= cfg.close_steps:
                self.phase = LIFT
        if self.phase == LIFT:
            xy = self._grasp_xy if self._grasp_xy is not None else eef[:2]
            target, gripper = np.array([*xy, start_z + cfg.lift_height]), 1.0
        action = np.zeros(7)
        action[:3] = np.clip(cfg.pos_gain * (target - eef), -1.0, 1.0)
        action[5] = np.clip(cfg.yaw_gain * yaw_err, -1.0, 1.0)
        action[6] = gripper
        return action


def run_episode(robot: Robot, expert: LiftExpert | None, seed: int, max_steps: int = 200
                ) -> tuple[bool, int]:
    """One Lift episode (a zero-action policy where ``expert`` is None); (success, steps)."""
    robot.reset(seed=seed)
    if expert is not None:
        expert.reset()
    for t in range(1, max_steps + 1):
        action = expert.act(robot.state()) if expert is not None else np.zeros(7)
        robot.act(action)
        if robot.state()["success"]:
            return True, t
    return False, max_steps


def measure(n_episodes: int = 100, max_steps: int = 200, seed0: int = 0) -> dict[str, Any]:
    """Success rate and mean length (successful episodes) over seeds seed0..seed0+n-1."""
    from sim.robosuite_robot import RobosuiteRobot

    robot = RobosuiteRobot(env_name="Lift")
    expert, results = LiftExpert(), []
    t0 = time.perf_counter()
    with robot:
        for seed in range(seed0, seed0 + n_episodes):
            results.append(run_episode(robot, expert, seed, max_steps))
    lengths = [n for ok, n in results if ok]
    steps = sum(n for _, n in results)
    return {"episodes": n_episodes, "success_rate": len(lengths) / n_episodes,
            "mean_length": float(np.mean(lengths)) if lengths else float("nan"),
            "steps_per_s": steps / (time.perf_counter() - t0),
            "failed_seeds": [seed0 + i for i, (ok, _) in enumerate(results) if not ok]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_episodes", type=int, nargs="?", default=100)
    parser.add_argument("--max-steps", type=int, default=200)
    args = parser.parse_args()
    print(measure(args.n_episodes, args.max_steps))


if __name__ == "__main__":
    main()
