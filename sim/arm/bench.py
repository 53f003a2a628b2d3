"""Env step rate of the arm against a bare loop of ``n_substeps`` ``mj_step`` calls on the same
model: ``python -m sim.arm.bench [--steps N] [--camera front]``. The ratio is the env's overhead
(observation, task reward and success, gymnasium bookkeeping)."""

from __future__ import annotations

import argparse
import time

import mujoco
import numpy as np

from robolearn.env import make_env
from sim.arm.robot import SimArm


def bench(steps: int = 3000, cameras: tuple[str, ...] = ()) -> dict[str, float]:
    env = make_env("sim_arm", "arm_bin", max_steps=10**9,
                   robot_kwargs={"cameras": list(cameras)})
    robot = env.robot
    assert isinstance(robot, SimArm)
    env.reset(seed=0)
    action = np.asarray(robot.cfg.home, dtype=np.float32)
    for _ in range(50):  # warm up (renderer creation, caches)
        env.step(action)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(action)
    env_rate = steps / (time.perf_counter() - start)
    m, d, n = robot.model, robot.data, robot.n_substeps
    start = time.perf_counter()
    for _ in range(steps):
        for _ in range(n):
            mujoco.mj_step(m, d)
    bare_rate = steps / (time.perf_counter() - start)
    env.close()
    return {"env_steps_per_s": env_rate, "bare_steps_per_s": bare_rate,
            "ratio": bare_rate / env_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--camera", action="append", default=[], choices=["front", "wrist"])
    args = parser.parse_args()
    res = bench(args.steps, tuple(args.camera))
    print(f"cameras {args.camera or 'none'}: env {res['env_steps_per_s']:.0f} steps/s, bare "
          f"mj_step loop {res['bare_steps_per_s']:.0f} steps/s, ratio {res['ratio']:.2f}x")


if __name__ == "__main__":
    main()
