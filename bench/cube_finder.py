"""How well the cube is found from the front camera: ``python -m bench.cube_finder [--layouts N]``.

Fresh lift layouts of ``robolearn/SimArmLift-v0`` (seeds 0..N-1, the arm at home), the 64x64 front
frame through :class:`sim.arm.cube_finder.CubeFinder`, against the simulator's true cube: the
table-plane (xy) error's mean, 95th percentile and maximum, and how often the cube was not seen.
Baseline: the cube at the layout range's centre for every episode (what a policy that cannot see
the cube would have to assume).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import sim  # noqa: F401  (headless GL before mujoco)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", type=int, default=200)
    ap.add_argument("--size", type=int, default=64, help="frame height and width, px")
    args = ap.parse_args(argv)
    from robolearn.env import ENVS, make_env
    from sim.arm.cube_finder import CubeFinder

    env = make_env(**{**ENVS["robolearn/SimArmLift-v0"], "robot_kwargs": {
        "cameras": ["front"], "camera_height": args.size, "camera_width": args.size}})
    finder = CubeFinder()
    found, truth, unseen = [], [], 0
    for s in range(args.layouts):
        obs, _ = env.reset(seed=s)
        at = finder.locate(obs["observation.images.front"])
        true_xy = obs["observation.environment_state"][:2]
        if at is None:
            unseen += 1
            continue
        found.append(at[:2])
        truth.append(true_xy)
    env.close()
    err = np.linalg.norm(np.asarray(found) - np.asarray(truth), axis=1)
    centre = np.asarray(truth).mean(axis=0)
    base = np.linalg.norm(np.asarray(truth) - centre, axis=1)
    print(f"{args.layouts} layouts, {args.size}x{args.size} front frames; not seen: {unseen}")
    print(f"cube finder: xy error mean {1000 * err.mean():.1f} mm, p95 "
          f"{1000 * np.percentile(err, 95):.1f} mm, max {1000 * err.max():.1f} mm")
    print(f"baseline (the layouts' mean position): mean {1000 * base.mean():.1f} mm, max "
          f"{1000 * base.max():.1f} mm; ratio finder/baseline {err.mean() / base.mean():.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
