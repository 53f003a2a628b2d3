"""``LapTask``: FastRLAP's lap practice. Reward terms (unweighted, per step):

- ``progress``: the car's velocity projected on the direction to the next checkpoint, m/s;
- ``collision``: 1 while the car touches a wall;
- ``lap``: 1 on the step that completes a lap.

Checkpoints are reached in order within ``checkpoint_radius``; a lap is all of them, back to
the one the episode started at. Lap times use the robot's simulated clock. Success: at least
one lap completed (the episode keeps running, so a practice episode holds several laps);
failure: the car flipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from robolearn.robot import Robot
from robolearn.task import Task


class LapTask(Task):
    name = "car_laps"
    description = "drive laps of the track as fast as possible without touching the walls"

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__(weights)
        self.laps = 0  # laps completed this episode
        self.lap_times: list[float] = []  # s of simulated time, one per completed lap
        self.collisions = 0  # steps in contact with a wall this episode
        self.checkpoints_reached = 0  # this episode, all laps
        self._next = 0  # index of the checkpoint to reach next
        self._lap_start = 0.0  # s, simulated time when the current lap started

    def default_weights(self) -> dict[str, float]:
        return {"progress": 1.0, "collision": -2.0, "lap": 10.0}

    def success_terminates(self) -> bool:
        return False  # practice keeps driving; success (>= 1 lap) is reported in info

    def reset(self, robot: Robot) -> None:
        st = robot.state()
        cps = np.asarray(st["checkpoints"])
        self.laps, self.lap_times, self.collisions, self.checkpoints_reached = 0, [], 0, 0
        # The car starts at (or near) a checkpoint: the lap begins there, aim at the next one.
        start = int(np.argmin(((cps - st["pos"][:2]) ** 2).sum(axis=1)))
        self._cps: list[list[float]] = cps.tolist()  # (C, 2) as lists: cheap per-step access
        self._radius = float(st["checkpoint_radius"])
        self._start, self._next = start, (start + 1) % len(cps)
        self._lap_start = float(st["time"])

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        st = robot.state()
        cps = self._cps
        x, y = st["pos"][0:2].tolist()
        lap = 0.0
        tx, ty = cps[self._next]
        if math.hypot(tx - x, ty - y) < self._radius:
            self.checkpoints_reached += 1
            if self._next == self._start:
                lap = 1.0
                self.laps += 1
                self.lap_times.append(float(st["time"]) - self._lap_start)
                self._lap_start = float(st["time"])
            self._next = (self._next + 1) % len(cps)
            tx, ty = cps[self._next]
        dist = math.hypot(tx - x, ty - y) or 1.0
        vx, vy = st["vel"]
        collision = float(st["collision"])
        self.collisions += int(collision)
        return {"progress": (vx * (tx - x) + vy * (ty - y)) / dist, "collision": collision,
                "lap": lap}

    def success(self, robot: Robot) -> bool:
        return self.laps >= 1

    def failure(self, robot: Robot) -> bool:
        return bool(robot.state()["flipped"])

    def info(self) -> dict[str, Any]:
        """Episode summary: laps, lap times (s), wall-contact steps, checkpoints reached."""
        return {"laps": self.laps, "lap_times": list(self.lap_times),
                "collisions": self.collisions, "checkpoints_reached": self.checkpoints_reached}
