"""The emulated arm's camera: the simulated scene rendered and published the way lerobot's
network camera (``ZMQCamera``) reads it, read through lerobot's class itself and through the
SO-101 driver; frames show the scene (compared with the simulator's own render)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sim  # noqa: F401  (the headless GL backend, before mujoco loads)

pytest.importorskip("zmq")
import mujoco  # noqa: E402

from hardware.emulators.camera import CameraServer  # noqa: E402
from hardware.emulators.so101_plant import SO101Plant, middle_steps  # noqa: E402
from sim import require_rendering  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _lerobot_camera(url: str, w: int, h: int) -> Any:
    from lerobot.cameras.zmq import ZMQCamera, ZMQCameraConfig

    host_port, name = url.removeprefix("zmq://").split("/")
    host, port = host_port.split(":")
    return ZMQCamera(ZMQCameraConfig(server_address=host, port=int(port), camera_name=name,
                                     fps=30, width=w, height=h))


def _sim_view(plant: SO101Plant, h: int, w: int) -> np.ndarray:
    renderer = mujoco.Renderer(plant.model, h, w)
    try:
        return plant.render(renderer, "front")
    finally:
        renderer.close()


def test_lerobots_network_camera_reads_the_scene() -> None:
    require_rendering("test")
    plant = SO101Plant()
    for i, steps in middle_steps().items():  # held still by hand (torque off, it would sag)
        plant.move_by_hand(i, steps)
    with CameraServer(plant, ["front"], 96, 72, fps=30) as server:
        cam = _lerobot_camera(server.urls["front"], 96, 72)
        cam.connect()
        try:
            time.sleep(0.3)
            frame = np.asarray(cam.read_latest())
            assert frame.shape == (72, 96, 3) and frame.dtype == np.uint8
            truth = _sim_view(plant, 72, 96)  # the arm at rest: the same scene
            same = np.abs(frame.astype(int) - truth.astype(int)).mean()
            # another scene: the arm turned (the hand swings shoulder_pan by 0.8 rad)
            plant.move_by_hand(1, middle_steps()[1] + 0.8 * 4096 / (2 * np.pi))
            time.sleep(0.1)
            other = _sim_view(plant, 72, 96)
            differs = np.abs(frame.astype(int) - other.astype(int)).mean()
        finally:
            cam.disconnect()
    assert same < 6.0, same  # JPEG at quality 90 (colour order right: RGB both)
    assert differs > same + 0.5, (same, differs)
    assert server.frames > 0


def test_the_driver_observes_the_emulated_camera(tmp_path: Path) -> None:
    """An SO-101 emulator with a camera, calibrated through lerobot's flow: the driver's
    observation has the camera image at the configured size."""
    require_rendering("test")
    from hardware.emulators.rig import calibrated_so101
    from robolearn.robot import make_robot

    with calibrated_so101(str(tmp_path), "cam", ["front"]) as rig:
        arm = make_robot("so101", port=rig.port, calibration_dir=str(tmp_path), id="cam",
                         cameras=rig.cameras, capture_width=64, capture_height=64)
        assert arm.observation_features["observation.images.front"].shape == (64, 64, 3)
        with arm:
            image = arm.observe()["observation.images.front"]
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and image.std() > 5


def test_robolearn_emulate_serves_a_camera() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "emulate", "so101",
                             "cameras=[front]"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        line = proc.stdout.readline().split()
        assert port.startswith("/dev/") and line[:2] == ["camera", "front"], (port, line)
        assert line[2].startswith("zmq://127.0.0.1:")
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
