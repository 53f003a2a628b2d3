"""A machine without any GL library: physics runs, a camera frame fails with one clear line.

Importing ``sim`` used to set ``MUJOCO_GL=osmesa`` blindly, so on a fresh machine without
libosmesa6 ``import mujoco`` itself died (``'NoneType' object has no attribute 'glGetError'``)
before any frame was asked for. Each test runs in a real subprocess so that MuJoCo picks its
backend from scratch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim import pick_gl_backend

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import numpy as np
from robolearn.env import make_env
from sim import RenderingUnavailable
env = make_env("sim_car", "car_laps")
env.reset(seed=0)
for _ in range(20):
    env.step(np.array([0.0, 0.5]))
print("physics", float(env.robot.state()["speed"]) > 0)
try:
    env.render()
except RenderingUnavailable as exc:
    print("render:", exc)
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**full, **env}, timeout=120)


def test_no_gl_library_physics_runs_and_rendering_names_the_package() -> None:
    proc = _run(PROBE, MUJOCO_GL="disable")  # what sim picks when neither library is found
    assert proc.returncode == 0, proc.stderr
    assert "physics True" in proc.stdout
    line = proc.stdout.split("render:", 1)[1].strip()
    assert "libosmesa6" in line and "\n" not in line


def test_arm_camera_without_gl_names_the_package() -> None:
    code = ("from robolearn.env import make_env\nfrom sim import RenderingUnavailable\n"
            "try:\n    make_env('sim_arm', 'arm_lift', robot_kwargs={'cameras': ['front']})"
            ".reset(seed=0)\nexcept RenderingUnavailable as exc:\n    print('render:', exc)\n")
    proc = _run(code, MUJOCO_GL="disable")
    assert proc.returncode == 0, proc.stderr
    assert "sim_arm" in proc.stdout and "libosmesa6" in proc.stdout


@pytest.mark.parametrize(("display", "node", "egl", "osmesa", "expected"), [
    (True, False, False, False, None),      # a desktop: MuJoCo's own GLFW
    (False, True, True, True, "egl"),       # a GPU machine
    (False, True, False, True, "osmesa"),   # a render node but no libEGL
    (False, False, True, True, "osmesa"),   # CPU-only: EGL would fail without a render node
    (False, False, True, False, "disable"),  # fresh machine: no OSMesa, no render node
    (False, False, False, False, "disable"),
])
def test_backend_choice(display: bool, node: bool, egl: bool, osmesa: bool,
                        expected: str | None) -> None:
    assert pick_gl_backend(display=display, render_node=node, egl=egl, osmesa=osmesa) == expected


def test_default_choice_imports_mujoco() -> None:
    """Whatever this machine has, importing sim then mujoco works and physics steps."""
    proc = _run("import sim, os, mujoco\n"
                "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><body><freejoint/>"
                "<geom size=\".1\"/></body></worldbody></mujoco>')\n"
                "d = mujoco.MjData(m); mujoco.mj_step(m, d); print('gl', os.environ['MUJOCO_GL'])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gl ")


def test_collect_with_a_camera_without_gl_is_one_line(tmp_path: Path) -> None:
    """Through the command line: one line naming the package, exit 1, no traceback."""
    out = tmp_path / "cam.zarr"
    proc = subprocess.run(
        [sys.executable, "-m", "robolearn.cli", "collect", str(out), "episodes=1", "-q",
         "robot.cameras=[front]"], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"},
             "MUJOCO_GL": "disable"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "libosmesa6" in lines[0], proc.stderr
    assert not out.exists()  # no empty store left behind
