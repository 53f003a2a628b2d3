"""A recorder process for the crash tests: records episodes forever until killed.

Every value it writes is a function of the row it lands on (``expected``), so the parent can
check any episode that survived a SIGKILL without knowing what the child got to do.
Prints ``COMMIT <index> <start> <length>`` after each commit (flushed, so the parent knows).
"""

from __future__ import annotations

import sys

import numpy as np

from data import EpisodeStore

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [6]},
    "observation.images.cam": {"dtype": "uint8", "shape": [32, 32, 3]},
    "action": {"dtype": "float32", "shape": [2]},
}


def expected(row: int) -> dict[str, np.ndarray]:
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = row % 251
    img[..., 1] = (row // 251) % 251
    return {"observation.state": np.arange(6, dtype=np.float32) + row,
            "observation.images.cam": img,
            "action": np.array([row, -row], np.float32)}


def main(path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = EpisodeStore.open(path, "a") if len(sys.argv) > 3 and sys.argv[3] == "open" \
        else EpisodeStore.create(path, FEATURES, fps=50, exist_ok=True)
    print("READY", flush=True)
    # half of the writers flush from a background thread, as the real-time commands do
    with store.recorder(task="crash", flush_every=int(rng.integers(3, 12)),
                        background=bool(seed % 2)) as rec:
        while True:
            rec.start_episode()
            start = rec._start
            length = int(rng.integers(5, 60))
            for k in range(length):
                rec.add(expected(start + k), source="teleop" if k % 3 else "policy")
            info = rec.end_episode(success=bool(rng.integers(2)), seed=seed)
            print(f"COMMIT {info.index} {info.start} {info.length}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
