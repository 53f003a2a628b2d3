"""MuJoCo worlds behind robolearn's Robot interface: an RC car, a low-cost arm, robosuite.

Headless rendering: MuJoCo picks its GL backend when it is first imported, so this package
chooses one first, unless the user did (``MUJOCO_GL``) or a display is present: EGL where a GPU
render node and libEGL exist, else OSMesa where Debian's libosmesa6 is installed (it also works
for robosuite, whose own EGL context fails on CPU-only machines). Where neither library is
installed, rendering is switched off (``MUJOCO_GL=disable``) instead of picked blindly: physics
works without any GL library, and asking for a frame raises :class:`RenderingUnavailable` naming
the package to install. (Picking OSMesa blindly made ``import mujoco`` itself die with
``'NoneType' object has no attribute 'glGetError'`` on a fresh machine.)
"""

from __future__ import annotations

import ctypes.util
import glob
import os

__all__ = ["RenderingUnavailable", "pick_gl_backend", "require_rendering"]

INSTALL_HINT = "apt-get install libosmesa6 (CPU) or libegl1 (GPU), or set MUJOCO_GL"


class RenderingUnavailable(RuntimeError):
    """A camera frame was asked for on a machine without a usable GL library."""


def pick_gl_backend(*, display: bool, render_node: bool, egl: bool, osmesa: bool) -> str | None:
    """The ``MUJOCO_GL`` value to set: None leaves MuJoCo's own choice (a display: GLFW)."""
    if display:
        return None
    if render_node and egl:
        return "egl"
    if osmesa:
        return "osmesa"
    return "disable"


if "MUJOCO_GL" not in os.environ:
    _backend = pick_gl_backend(
        display=bool(os.environ.get("DISPLAY")),
        render_node=os.path.exists("/dev/nvidia0") or bool(glob.glob("/dev/dri/renderD*")),
        egl=ctypes.util.find_library("EGL") is not None,
        osmesa=ctypes.util.find_library("OSMesa") is not None,
    )
    if _backend is not None:
        os.environ["MUJOCO_GL"] = _backend
        if _backend == "osmesa":
            os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")


def require_rendering(who: str) -> None:
    """Raise :class:`RenderingUnavailable` (one line, naming the package) when no GL is usable."""
    gl = os.environ.get("MUJOCO_GL", "").lower().strip()
    if gl in ("disable", "disabled", "off", "false", "0"):
        raise RenderingUnavailable(
            f"{who}: cannot render camera frames: no headless GL library found "
            f"(MUJOCO_GL={gl}); {INSTALL_HINT}")
