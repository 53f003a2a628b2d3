"""The recorder on the control path: how late the loop's steps start while it records cameras.

The control loop (``robolearn.loop``: fixed rate, safety filter, watchdog) steps the simulated
arm at 30 Hz holding still, with its cameras at 360x480 (front, or front and wrist), every step
recorded into an episode store, as ``robolearn deploy`` does. Baseline: the recorder flushing on
the loop's thread (every second: JPEG-encoding and writing the second's frames); against it the
recorder's background writer (``background=True``, what deploy, teleop collection, improve and
the practice actor use), in the same run, the two alternating so load drifts hit both.

    .venv/bin/python -m bench.record_loop [--steps 450] [--reps 2] [--cameras front wrist]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import Source
from robolearn.env import RobotEnv
from robolearn.loop import ControlLoop, LoopConfig, create_store
from robolearn.robot import make_robot
from robolearn.task import make_task


def run(background: bool, cameras: list[str], steps: int, fps: float, out: Path
        ) -> dict[str, Any]:
    robot = make_robot("sim_arm", cameras=cameras, camera_height=360, camera_width=480)
    env = RobotEnv(robot, make_task("unscored"), max_steps=steps)
    try:
        store = create_store(str(out), env, None, {})
        with store, store.recorder(task="hold", background=background) as rec:
            loop = ControlLoop(env, LoopConfig(fps=fps, max_steps=steps), rec)
            result = loop.run_episode(lambda obs: env.robot.hold_action(), seed=0,
                                      source=Source.SCRIPTED)
            late = np.asarray(loop.timing.late_ms if loop.timing else [0.0])
        return {"steps": result.steps, "p50": float(np.median(late)),
                "p99": float(np.percentile(late, 99)), "max": float(late.max()),
                "overruns": int(np.sum(late > 1000 / fps)), "late_5ms": int(np.sum(late > 5))}
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--cameras", nargs="+", default=["front", "wrist"])
    args = parser.parse_args()
    rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for background in (False, True):
                out = Path(tmp) / f"r{rep}_{int(background)}.zarr"
                rows[background].append(run(background, args.cameras, args.steps, args.fps,
                                            out))
    print(f"control loop at {args.fps:g} Hz, sim_arm with {'+'.join(args.cameras)} at 360x480, "
          f"{args.reps} x {args.steps} steps per mode, recording every step")
    print(f"{'recorder':<24}{'p50 late':>10}{'p99 late':>10}{'max late':>10}"
          f"{'overruns':>10}{'>5 ms':>8}{'p99 ratio':>11}")
    base = np.mean([r["p99"] for r in rows[False]])
    for background, name in ((False, "flush on the loop (base)"), (True, "background writer")):
        rs = rows[background]
        p99 = np.mean([r["p99"] for r in rs])
        ratio = p99 / base if base > 0 else float("nan")
        print(f"{name:<24}{np.mean([r['p50'] for r in rs]):>8.2f}ms{p99:>8.2f}ms"
              f"{max(r['max'] for r in rs):>8.1f}ms{sum(r['overruns'] for r in rs):>10}"
              f"{sum(r['late_5ms'] for r in rs):>8}{ratio:>11.2f}")


if __name__ == "__main__":
    main()
