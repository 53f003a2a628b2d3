"""Recording throughput: steps/s into an episode store, one 224x224 RGB camera + 32-dim state.

Pinned to one CPU core (the recorder's zarr threads included). Reports steps/s for the first and
the last episodes (does recording slow down as the store grows? LeRobot's users report it does),
the ratio against a 30 Hz camera (real time) and against the bare cost of JPEG-encoding the
frames (the floor for any store that compresses them this way).

    .venv/bin/python -m bench.record [--episodes 20] [--length 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np

from bench.frames import camera_frames
from data import EpisodeStore
from data.layout import JPEG_QUALITY

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [32]},
    "observation.images.front": {"dtype": "uint8", "shape": [224, 224, 3]},
    "action": {"dtype": "float32", "shape": [8]},
}


def run(episodes: int, length: int, workdir: Path) -> dict[str, float]:
    frames = camera_frames(224, 120)
    rng = np.random.default_rng(0)
    states = rng.standard_normal((length, 32)).astype(np.float32)
    actions = rng.standard_normal((length, 8)).astype(np.float32)
    per_episode = []
    with EpisodeStore.create(workdir / "rec.zarr", FEATURES, fps=30) as store, \
            store.recorder(task="bench", source="teleop") as rec:
        for _ in range(episodes):
            t0 = time.perf_counter()
            for k in range(length):
                rec.add({"observation.state": states[k], "action": actions[k],
                         "observation.images.front": frames[k % len(frames)]})
            rec.end_episode(success=True)
            per_episode.append(length / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for k in range(length):
        imagecodecs.jpeg8_encode(frames[k % len(frames)], level=JPEG_QUALITY)
    encode_only = length / (time.perf_counter() - t0)
    k = max(1, episodes // 5)
    overall = float(np.mean(per_episode))
    return {"steps_per_s": overall, "first_episodes": float(np.mean(per_episode[:k])),
            "last_episodes": float(np.mean(per_episode[-k:])), "jpeg_encode_only": encode_only,
            "vs_30hz_camera": overall / 30.0, "vs_encode_only": overall / encode_only}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--length", type=int, default=300)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.episodes, args.length, Path(tmp))
    print(f"recording, 224x224 RGB camera + 32-dim state, one core, {args.episodes} episodes "
          f"x {args.length} steps")
    print(f"  robolearn recorder      {r['steps_per_s']:8.0f} steps/s  "
          f"= {r['vs_30hz_camera']:.1f}x a 30 Hz camera (target >= 10x)")
    print(f"  first / last episodes   {r['first_episodes']:8.0f} / {r['last_episodes']:.0f} "
          f"steps/s  (ratio {r['last_episodes'] / r['first_episodes']:.2f}: no slow-down)")
    print(f"  JPEG encode alone       {r['jpeg_encode_only']:8.0f} steps/s  "
          f"(recorder reaches {r['vs_encode_only']:.2f}x of this floor)")


if __name__ == "__main__":
    main()
