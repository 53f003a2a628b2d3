"""What the emulated (or a real) SO-101 changes in a camera policy's observations, applied in
simulation: the checks a sim-trained vision policy must pass before it is deployed.

:class:`RealPathObs` wraps a policy's ``select_action`` and degrades each observation as the
real path does before the policy sees it:

- ``jpeg``: the camera frame JPEG-encoded and decoded (OpenCV, quality 90), as the emulator's
  camera server sends it (``hardware/emulators/camera.py``) and as a webcam's MJPEG stream does;
- ``quantise``: joint positions on the servo's encoder grid (4096 steps a turn: 1.53 mrad) and
  velocities in whole encoder steps per second (STS3215 ``Present_Velocity``);
- ``camera_lag``: the frame from ``camera_lag`` control steps earlier (a camera thread that
  renders or captures at the control rate hands the loop the previous period's frame).

``python -m bench.vision_lift_checks RUN [--episodes 100] [--seed 100000] [--checks ...]``
evaluates a trained run under each check on the same seeded episodes as ``robolearn eval``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import sim  # noqa: F401  (headless GL backend before mujoco loads)

STEP_RAD = 2 * math.pi / 4096  # one STS3215 encoder step, rad (positions) or rad/s (velocities)
CHECKS: dict[str, dict[str, Any]] = {  # name -> RealPathObs settings
    "clean": {},
    "jpeg": {"jpeg_quality": 90},
    "quantise": {"quantise": True},
    "real": {"jpeg_quality": 90, "quantise": True},  # what the emulated SO-101 gives
    "real+lag1": {"jpeg_quality": 90, "quantise": True, "camera_lag": 1},
}


def jpeg_roundtrip(frame: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same frame after JPEG encoding at ``quality`` and decoding."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError(f"OpenCV could not JPEG round-trip a {frame.shape} frame")
    return np.ascontiguousarray(decoded[..., ::-1])


def quantise_state(state: np.ndarray, n_joints: int = 6) -> np.ndarray:
    """``observation.state`` (positions then velocities, rad and rad/s) on the encoder grid."""
    out = np.asarray(state, np.float32).copy()
    out[: 2 * n_joints] = np.round(out[: 2 * n_joints] / STEP_RAD) * STEP_RAD
    return out


class RealPathObs:
    """A policy seen through the real path's observations (module docstring). The control loop
    calls :meth:`reset` at each episode start and :meth:`select_action` each step."""

    def __init__(self, policy: Any, jpeg_quality: int | None = None, quantise: bool = False,
                 camera_lag: int = 0) -> None:
        if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if camera_lag < 0:
            raise ValueError(f"camera_lag must be >= 0 steps, got {camera_lag}")
        self.policy, self.quality, self.quantise = policy, jpeg_quality, quantise
        self.lag = camera_lag
        self._frames: dict[str, deque[np.ndarray]] = {}

    def reset(self, seed: int | None = None) -> None:
        self._frames.clear()
        self.policy.reset(seed=seed)

    def degrade(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(obs)
        for key, value in obs.items():
            if key.startswith("observation.images."):
                frame = np.asarray(value)
                if self.quality is not None:
                    frame = jpeg_roundtrip(frame, self.quality)
                past = self._frames.setdefault(key, deque(maxlen=self.lag + 1))
                past.append(frame)
                out[key] = past[0]  # the oldest kept: `lag` steps ago (the first at the start)
            elif key == "observation.state" and self.quantise:
                out[key] = quantise_state(np.asarray(value))
        return out

    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        result: np.ndarray = self.policy.select_action(self.degrade(obs))
        return result


def evaluate_checks(run: str | Path, checks: Sequence[str], episodes: int, seed: int,
                    progress: bool = False) -> dict[str, dict[str, Any]]:
    """Success of the trained ``run`` under each named check (:data:`CHECKS`), the same
    ``episodes`` seeded episodes from ``seed`` each; {check: {success_rate, ci95, seconds}}."""
    from policies.base import Policy
    from robolearn.evaluate import EvalConfig, env_for, evaluate, resolve_checkpoint

    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    policy_dir, run_dir = resolve_checkpoint(Path(run))
    policy = Policy.load(policy_dir, device="cpu")
    env = env_for(EvalConfig(checkpoint=str(run)), run_dir)
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in checks:
            t0 = time.perf_counter()
            r = evaluate(RealPathObs(policy, **CHECKS[name]), env, episodes, seed,
                         progress=progress)
            results[name] = {"success_rate": r["success_rate"], "ci95": r["ci95"],
                             "episodes": episodes, "seed": seed,
                             "failed_seeds": [e["seed"] for e in r["results"] if not e["success"]],
                             "seconds": time.perf_counter() - t0}
    finally:
        env.close()
    return results


def format_result(name: str, r: Mapping[str, Any]) -> str:
    lo, hi = r["ci95"]
    return (f"{name:>10}: {100 * r['success_rate']:5.1f}% (95% CI {100 * lo:.0f}-{100 * hi:.0f}%) "
            f"over {r['episodes']} episodes from seed {r['seed']}, {r['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a training run directory or a saved policy")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=100_000, help="first episode seed")
    ap.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = evaluate_checks(args.run, args.checks, args.episodes, args.seed)
    for name, r in results.items():
        print(format_result(name, r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
