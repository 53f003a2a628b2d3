"""Rollout videos: render an environment headless while a policy drives it, write an MP4.

Encoding is PyAV's (FFmpeg): H.264 (libx264, yuv420p) plays everywhere; frame sizes are padded
to even numbers as yuv420p needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import av
import numpy as np

from robolearn.env import RobotEnv


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 23) -> int:
    """Encode RGB uint8 frames ``(H, W, 3)`` to an H.264 MP4; returns the number of frames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            frame = np.asarray(frame, dtype=np.uint8)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"{path}: frame {n} has shape {frame.shape}, expected (H, W, 3)")
            h, w = frame.shape[:2]
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=round(fps))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    if n == 0:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    return n


def record_rollout(env: RobotEnv, policy: Callable[[dict[str, np.ndarray]], np.ndarray],
                   path: str | Path, *, seed: int | None = None, camera: str | None = None,
                   max_steps: int | None = None) -> dict[str, float]:
    """Run one episode of ``policy`` and write what ``env.robot.render(camera)`` shows."""
    obs, _ = env.reset(seed=seed)
    frames = [env.robot.render(camera)]
    if frames[0] is None:
        raise RuntimeError(f"{env.robot.name}: cannot render here (no headless GL: install "
                           "libosmesa6 or libegl1, or set MUJOCO_GL)")
    ret, steps, success, done = 0.0, 0, False, False
    while not done and (max_steps is None or steps < max_steps):
        obs, reward, term, trunc, info = env.step(policy(obs))
        frames.append(env.robot.render(camera))
        ret, steps = ret + float(reward), steps + 1
        success = success or bool(info.get("success"))
        done = term or trunc
    write_mp4((f for f in frames if f is not None), path, env.robot.fps)
    return {"return": ret, "steps": steps, "success": float(success)}
