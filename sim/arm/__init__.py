"""A simulated low-cost 5-DoF arm with a gripper (SO-101-like) on a table: reach, lift, bin."""

import os

# Headless rendering: MuJoCo picks its GL backend when first imported. Without a display, use
# EGL unless the user chose one (MUJOCO_GL=osmesa with PYOPENGL_PLATFORM=osmesa also works).
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"
