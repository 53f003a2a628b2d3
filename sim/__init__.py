"""MuJoCo worlds behind robolearn's Robot interface: an RC car, a low-cost arm, robosuite.

Headless rendering: MuJoCo picks its GL backend when it is first imported, so this package
chooses one first, unless the user did (``MUJOCO_GL``) or a display is present: EGL where a GPU
render node exists, else OSMesa (Debian's libosmesa6), which also works for robosuite, whose
own EGL context fails on CPU-only machines.
"""

import glob
import os

if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    if os.path.exists("/dev/nvidia0") or glob.glob("/dev/dri/renderD*"):
        os.environ["MUJOCO_GL"] = "egl"
    else:
        os.environ["MUJOCO_GL"] = "osmesa"
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
