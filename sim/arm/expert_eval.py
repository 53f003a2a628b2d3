"""Evaluate the scripted arm expert on the registered arm tasks (``python -m sim.arm.expert_eval``).

Apart from :mod:`sim.arm.expert` because it builds registered environments (``robolearn.env``),
which themselves import the expert: keeping it there made an import cycle.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from sim.arm.expert import ExpertConfig, ScriptedArmExpert
from sim.arm.robot import SimArm


def evaluate(task: str, episodes: int = 100, seed: int = 0) -> dict[str, float]:
    """Run the expert for ``episodes`` seeded episodes of ``task`` ("arm_reach", "arm_lift",
    "arm_bin") with the registered episode length; success rate and mean length."""
    from robolearn.env import ENVS, make_env

    env_kwargs = next(kw for kw in ENVS.values() if kw["robot"] == "sim_arm" and kw["task"] == task)
    env = make_env(**env_kwargs)
    robot = env.robot
    assert isinstance(robot, SimArm)
    expert = ScriptedArmExpert(env.task, ExpertConfig(fps=robot.fps), model=robot.model)
    successes, lengths = 0, []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        expert.reset()
        steps, done, info = 0, False, dict[str, Any]()
        while not done:
            _, _, terminated, truncated, info = env.step(expert(robot.state()))
            steps, done = steps + 1, terminated or truncated
        successes += bool(info["success"])
        lengths.append(steps)
    env.close()
    return {"success_rate": successes / episodes, "mean_length": float(np.mean(lengths))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=["arm_reach", "arm_lift", "arm_bin"])
    args = parser.parse_args()
    for task in args.tasks:
        start = time.perf_counter()
        res = evaluate(task, args.episodes, args.seed)
        print(f"{task}: success {res['success_rate']:.2%} over {args.episodes} episodes, "
              f"mean length {res['mean_length']:.1f} steps ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
