"""A lift policy trained in simulation, deployed on the emulated SO-101 through the real path.

``python -m bench.so101_lift CHECKPOINT [--episodes 50] [--seed-base 100000]``

The emulated arm: six STS3215 servos on a pseudo-terminal (1 Mbps wire timing) driven by
lerobot's ``FeetechMotorsBus`` inside robolearn's ``so101`` driver, calibrated through
``robolearn calibrate`` (lerobot's flow, the emulator's hand doing the person's part), the
front camera rendered and read through lerobot's ``ZMQCamera``, the policy in the control loop at
30 Hz in real time. Per episode, as an experimenter would: the driver homes the arm (its
``reset``), then the cube and bin are put where the simulated evaluation of the same seed puts
them (``robolearn/SimArmLift-v0`` reset with that seed); success is the lift task's own
criterion (``sim/arm/tasks.py``) read from the emulator's simulation, which the driver never sees.
The figure is compared with the same checkpoint's ``robolearn eval`` on the same seeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

import numpy as np

import sim  # noqa: F401  (headless GL before mujoco)
from hardware.emulators.rig import calibrated_so101
from hardware.emulators.scene import Experimenter
from robolearn.env import RobotEnv
from robolearn.loop import ControlLoop, LoopConfig
from robolearn.robot import make_robot
from robolearn.scene import SceneTask
from robolearn.task import make_task


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a run directory or saved policy")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed-base", type=int, default=100_000,
                    help="episode i uses seed base + i (robolearn eval's seeds by default)")
    ap.add_argument("--max-steps", type=int, default=250)
    args = ap.parse_args(argv)
    logging.getLogger("hardware").setLevel(logging.ERROR)

    import torch

    from policies.base import Policy
    from robolearn.deploy import checkpoint_data

    torch.set_num_threads(1)
    policy_dir, data = checkpoint_data(args.checkpoint)
    policy = Policy.load(policy_dir, device="cpu")
    kw = data.robot_kwargs
    size = (int(kw.get("camera_height", 64)), int(kw.get("camera_width", 64)))
    cal = tempfile.mkdtemp(prefix="robolearn_so101_lift_")
    with calibrated_so101(cal, "bench", list(kw.get("cameras", ["front"])), size[1],
                          size[0]) as rig:
        plant = rig.plant
        robot = make_robot("so101", port=rig.port, calibration_dir=cal, id="bench",
                           cameras=rig.cameras, capture_width=size[1], capture_height=size[0],
                           camera_width=size[1], camera_height=size[0], home_s=1.0)
        judge = Experimenter(plant, kw)
        # the experimenter sets the scene after the arm homed and before the first
        # observation (the policy's first chunk sees the cube where it now is)
        scene = SceneTask(make_task("unscored"), judge)
        env = RobotEnv(robot, scene, max_steps=args.max_steps)
        loop = ControlLoop(env, LoopConfig(fps=30.0))
        successes, lates, t0 = 0, [], time.perf_counter()
        try:
            for i in range(args.episodes):
                seed = args.seed_base + i
                scene.layout_seed = seed  # the simulated evaluation's layout of this seed
                result = loop.run_episode(policy.select_action, seed=seed, record=False)
                won = bool(result.success)  # the experimenter's judgement: a lift ends it
                successes += int(won)
                lates.append(result.timing["p99_late_ms"])
                print(f"episode {i + 1}/{args.episodes} seed {seed}: "
                      f"{'lifted' if won else 'failed'} in {result.steps} steps; "
                      f"{successes}/{i + 1} so far", flush=True)
        finally:
            env.close()
    n = args.episodes
    lo, hi = wilson(successes, n)
    print(f"\nemulated SO-101, {n} episodes (seeds {args.seed_base}..{args.seed_base + n - 1}): "
          f"{successes}/{n} = {successes / n:.0%} (95% CI {lo:.0%}-{hi:.0%}); loop p99 lateness "
          f"median {np.median(lates):.2f} ms; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
