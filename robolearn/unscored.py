"""The task of a robot that cannot score itself: no reward, success unknown.

A real arm cannot be asked where the cube is, so a policy deployed on it (``robolearn deploy
CHECKPOINT robot=so101``) runs under this task: every step's reward is 0, nothing ends an
episode but its step limit or the operator, and the episode store records success as unknown
(a human may label it afterwards).
"""

from __future__ import annotations

import numpy as np

from robolearn.robot import Robot
from robolearn.task import Task


class UnscoredTask(Task):
    name = "unscored"
    description = "run the policy (no reward; success unknown)"
    judges_success = False

    def default_weights(self) -> dict[str, float]:
        return {}

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        return {}

    def success(self, robot: Robot) -> bool:
        return False  # unknown: judges_success is False, so the store records None
