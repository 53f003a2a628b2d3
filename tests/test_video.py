"""Headless rendering of rollouts into real MP4 files, decoded back with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

import sim  # noqa: F401  (headless GL backend)
from robolearn.env import ENVS, make_env
from robolearn.video import record_rollout, write_mp4


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_write_mp4_round_trip(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:47, 0:63]  # odd sizes: padded to even for yuv420p
    frames = [np.stack([xx * 4, yy * 5, np.full_like(xx, 8 * t)], -1).astype(np.uint8)
              for t in range(12)]
    assert write_mp4(frames, tmp_path / "v.mp4", fps=10) == 12
    got = decode(tmp_path / "v.mp4")
    assert got.shape == (12, 48, 64, 3)
    assert np.abs(got[:, :47, :63].astype(int) - np.stack(frames)).mean() < 6
    with pytest.raises(ValueError, match="frame 0 has shape"):
        write_mp4([np.zeros((8, 8))], tmp_path / "bad.mp4", fps=10)


def test_rollout_video_of_the_arm_expert(tmp_path: Path) -> None:
    env = make_env(**{**ENVS["robolearn/SimArmLift-v0"], "max_steps": 30})
    try:
        stats = record_rollout(env, lambda obs: env.expert_action(), tmp_path / "lift.mp4",
                               seed=0, camera="front")
    finally:
        env.close()
    video = decode(tmp_path / "lift.mp4")
    assert len(video) == stats["steps"] + 1 == 31
    assert video.std() > 5  # a rendered scene, not a blank frame
    assert np.abs(video[-1].astype(int) - video[0]).mean() > 0.5  # the arm moved
