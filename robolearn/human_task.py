"""``human``: the task of a real robot that nothing but a person can score.

A real arm cannot be asked where the cube is, so this task gives no reward and never decides
success or failure by itself: the operator does (collect's review keys, deploy's episode
end), and the episode ends at the step limit or when the operator ends it. Steps are recorded
with reward 0; success is what the operator said, or unknown.
"""

from __future__ import annotations

import numpy as np

from robolearn.robot import Robot
from robolearn.task import Task


class HumanTask(Task):
    name = "human"
    description = "a task the operator scores"

    def __init__(self, weights: dict[str, float] | None = None, description: str = "") -> None:
        super().__init__(weights)
        if description:
            self.description = description

    def default_weights(self) -> dict[str, float]:
        return {}

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        return {}

    def success(self, robot: Robot) -> bool:
        return False
