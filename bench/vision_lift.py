"""Lift the cube from what a real arm sees: the front camera and the joint state, no cube pose.

Reproduces the vision recipe of issue 14 (README, "Real arms: Measured") in simulation
(robolearn/SimArmLift-v0):

1. ``robolearn collect``: 1,000 demonstrations with the 64x64 front camera, DART by default
   (``dart_noise=0.03``: the expert drives with 0.03 rad of noise on its joint targets and each
   step is labelled with its clean answer for the state reached, so recoveries are in the data;
   ``--dart 0``: ordinary scripted demonstrations);
2. ``robolearn train``: the MLP policy (512 wide, observation history 2, action chunks of 16,
   8 executed, joint targets as offsets from the measured joints) on ``observation.state`` (6
   joint positions + 6 velocities) and ``observation.images.front`` only, through the per-camera
   CNN (16-32-32) + spatial-softmax encoder, with random-shift augmentation of the frames
   (``policy_config.encoder.random_shift``), 6,000 steps;
3. ``robolearn eval``: seeded episodes (seeds from 100000, disjoint from the demonstrations'),
   success rate with its 95% Wilson interval;
4. optionally (``--real-path-episodes N``) the same checkpoint again with what the emulated SO-101
   serves instead of the simulator's frames: each frame JPEG-compressed (OpenCV, quality 90) and
   decoded, joint positions quantised to 4096 steps per turn.

    .venv/bin/python -m bench.vision_lift [--out DIR] [--demos 1000] [--dart 0.03] [--seed 0] ...

The deployment on the emulated SO-101 is ``python -m bench.so101_lift OUT/run --episodes 50``.

Prints the figures and the wall time of each stage, and writes ``report.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ENV_ID = "robolearn/SimArmLift-v0"
OBSERVATIONS = "[observation.state,observation.images.front]"
EVAL_SEED = 100_000  # robolearn eval's default first seed: no overlap with the demonstrations'
STEPS_PER_TURN = 4096  # the STS3215's position resolution


def _cli(*args: str) -> None:
    """Run one ``robolearn`` command in a subprocess; a failure ends the benchmark."""
    cmd = [sys.executable, "-m", "robolearn.cli", *args]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True)


def jpeg_roundtrip(frame: np.ndarray, quality: int = 90) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> the same frame after a JPEG encode/decode at ``quality``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError(f"OpenCV could not JPEG round-trip a {frame.shape} frame")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def real_path(act: Callable[[Mapping[str, Any]], Any], quality: int = 90,
              joints: int = 6) -> Callable[[Mapping[str, Any]], Any]:
    """Wrap a policy's ``select_action`` so it sees what the emulated SO-101 serves: JPEG frames
    and joint positions (the first ``joints`` state values, radians) on a 4096-step grid."""
    step = 2 * math.pi / STEPS_PER_TURN

    def wrapped(obs: Mapping[str, Any]) -> Any:
        seen = dict(obs)
        for key, value in obs.items():
            if key.startswith("observation.images."):
                seen[key] = jpeg_roundtrip(np.asarray(value), quality)
        state = np.array(obs["observation.state"], dtype=np.float32, copy=True)
        state[:joints] = np.round(state[:joints] / step) * step
        seen["observation.state"] = state
        return act(seen)

    return wrapped


def eval_real_path(run: Path, episodes: int, quality: int) -> dict[str, Any]:
    """Evaluate ``run``'s checkpoint through :func:`real_path` (seeds as ``robolearn eval``)."""
    from policies.base import Policy
    from robolearn.evaluate import EvalConfig, env_for, evaluate, resolve_checkpoint

    policy_dir, run_dir = resolve_checkpoint(run)
    policy = Policy.load(policy_dir)
    env = env_for(EvalConfig(checkpoint=str(run)), run_dir)

    class _RealPath:  # evaluate() calls .select_action
        select_action = staticmethod(real_path(policy.select_action, quality))

    try:
        report = evaluate(_RealPath(), env, episodes, EVAL_SEED, progress=False)
    finally:
        env.close()
    report.pop("results")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/vision_lift_bench",
                        help="directory for demos.zarr, the run and report.json")
    parser.add_argument("--demos", type=int, default=1000, help="scripted demonstrations")
    parser.add_argument("--steps", type=int, default=6000, help="training gradient steps")
    parser.add_argument("--channels", default="16,32,32", help="the camera encoder's conv widths")
    parser.add_argument("--offset", action=argparse.BooleanOptionalAction, default=True,
                        help="predict joint targets as offsets from the measured joints "
                             "(policy_config.action_offset=observation.state)")
    parser.add_argument("--shift", type=int, default=4, help="random-shift augmentation, px")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--real-path-episodes", type=int, default=0,
                        help="also evaluate with JPEG frames + 4096-step positions (0: skip)")
    parser.add_argument("--jpeg-quality", type=int, default=90, help="for --real-path-episodes")
    parser.add_argument("--dart", type=float, default=0.03,
                        help="DART demonstrations (collect dart_noise=): joint-target noise "
                             "std (rad) injected while the expert drives, clean labels "
                             "recorded (0: the ordinary scripted demonstrations)")
    parser.add_argument("--reuse-demos", action="store_true",
                        help="keep an existing OUT/demos.zarr instead of collecting")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    demos, run = out / "demos.zarr", out / "run"
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    if not (args.reuse_demos and demos.exists()):
        _cli("collect", str(demos), f"env={ENV_ID}", f"episodes={args.demos}",
             "robot.cameras=[front]", "num_envs=2", f"dart_noise={args.dart}", "-q")
    times["collect_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _cli("train", f"dataset={demos}", f"output={run}", "policy=mlp", f"steps={args.steps}",
         f"observations={OBSERVATIONS}", "threads=2", "num_workers=1", f"seed={args.seed}",
         "policy_config.hidden_dim=512", "policy_config.obs_horizon=2", "optim.lr=1e-3",
         f"policy_config.encoder.random_shift={args.shift}",
         f"policy_config.encoder.channels=[{args.channels}]",
         *(["policy_config.action_offset=observation.state"] if args.offset else []),
         "resume=false", "-q")
    times["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _cli("eval", str(run), f"episodes={args.episodes}", f"seed={EVAL_SEED}", "-q")
    times["eval_s"] = time.perf_counter() - t0
    sim = json.loads((run / "eval" / "eval.json").read_text())
    report: dict[str, Any] = {
        "recipe": vars(args), "checkpoint": sim["checkpoint"], "times_s": times,
        "sim": {k: sim[k] for k in ("episodes", "success_rate", "ci95", "mean_steps")}}
    lo, hi = sim["ci95"]
    print(f"simulation: success {100 * sim['success_rate']:.0f}% (95% CI {100 * lo:.0f}-"
          f"{100 * hi:.0f}%) over {sim['episodes']} episodes (seeds {EVAL_SEED}-"
          f"{EVAL_SEED + sim['episodes'] - 1}); checkpoint {sim['checkpoint']}")

    if args.real_path_episodes:
        t0 = time.perf_counter()
        rp = eval_real_path(run, args.real_path_episodes, args.jpeg_quality)
        times["real_path_eval_s"] = time.perf_counter() - t0
        report["real_path"] = {k: rp[k] for k in ("episodes", "success_rate", "ci95")}
        lo, hi = rp["ci95"]
        print(f"JPEG q{args.jpeg_quality} + 4096-step positions: success "
              f"{100 * rp['success_rate']:.0f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%) over "
              f"{rp['episodes']} episodes (same seeds)")
    print("wall time: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in times.items()))
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
