"""Where the cube is, from a fixed camera's frame: the cube state a real arm's set-up can give.

A real arm senses its joints, not the cube, and ``observation.environment_state`` of the
simulated arm (the cube's true pose) does not exist there. With one fixed camera whose pose and
field of view are known (measured once, as a hand-eye calibration; the default is the scene's
``front`` camera, where the emulated SO-101's camera sits), the cube's pixels (found by its red
colour) give a ray from the camera, and the ray meets the plane of a resting cube's centre
(``z = CUBE_HALF``) at the cube's position. What one view cannot tell, and how it reads:

- a lifted cube reads as a resting one further along the same ray (no depth from one camera):
  the policy tells a lift from its own joints and gripper;
- a cube hidden by the arm, or out of view: ``seen`` is 0 and the last position is held;
- the tool centre point comes from the measured joints through the arm's forward kinematics
  (:mod:`sim.arm.kinematics`), as on a real arm.

The feature (7,): ``cube.x, cube.y, cube.z, seen, tcp_to_cube.x, tcp_to_cube.y, tcp_to_cube.z``
(metres, world frame of the arm's base). The same finder runs on the simulated arm
(``robot.cube_camera=front``) and on the real or emulated arms (``hardware/arms``), so a policy
trained on one observes the same thing on the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mujoco
import numpy as np

from data.schema import Feature
from sim.arm.kinematics import ArmKinematics
from sim.arm.model import CUBE_HALF, build_mjcf

NAMES = ("cube.x", "cube.y", "cube.z", "seen", "tcp_to_cube.x", "tcp_to_cube.y",
         "tcp_to_cube.z")
# a pixel is the cube's when red stands out from green and blue by this much (0..255): the cube
# is (0.85, 0.15, 0.15); the gripper's yellow and the bin's blue fail it
RED_MARGIN = 60
MIN_PIXELS = 2  # fewer: not seen
POSE_LEN = 10  # camera position (3), its x and y axes in the world (6, MuJoCo's xyaxes), fovy deg


def feature() -> Feature:
    return Feature("float32", (len(NAMES),), names=NAMES)


def scene_camera_pose(camera: str = "front", model: mujoco.MjModel | None = None
                      ) -> list[float]:
    """The scene's fixed camera as ``[x, y, z, xx, xy, xz, yx, yy, yz, fovy_deg]``
    (``model``: the scene's, already built)."""
    model = model or mujoco.MjModel.from_xml_string(build_mjcf(0.002))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cid = model.camera(camera).id
    rot = data.cam_xmat[cid].reshape(3, 3)
    return [*data.cam_xpos[cid].tolist(), *rot[:, 0].tolist(), *rot[:, 1].tolist(),
            float(model.cam_fovy[cid])]


def check_pose(pose: Sequence[float], where: str) -> np.ndarray:
    """``pose`` as floats, or a :class:`ValueError` naming ``where`` and what is wrong."""
    p = np.asarray(pose, dtype=np.float64).reshape(-1)
    if p.size != POSE_LEN or not np.all(np.isfinite(p)):
        raise ValueError(f"{where}: need {POSE_LEN} finite numbers (camera x y z, its x axis, "
                         f"its y axis, fovy in degrees), got {list(pose)}")
    if not 1.0 < p[9] < 179.0:
        raise ValueError(f"{where}: fovy must be in (1, 179) degrees, got {p[9]}")
    if np.linalg.norm(p[3:6]) < 1e-6 or np.linalg.norm(p[6:9]) < 1e-6:
        raise ValueError(f"{where}: the camera's axes must be non-zero, got {list(pose)}")
    return p


class CubeFinder:
    """The cube's position from frames of one fixed camera; ``pose``: see :data:`POSE_LEN`
    (None: the scene's ``front`` camera)."""

    def __init__(self, pose: Sequence[float] | None = None) -> None:
        model = mujoco.MjModel.from_xml_string(build_mjcf(0.002))  # the scene: its kinematics
        p = check_pose(scene_camera_pose(model=model) if pose is None else pose,
                       "cube_camera_pose")
        x = p[3:6] / np.linalg.norm(p[3:6])
        y = p[6:9] - x * float(x @ p[6:9])  # MuJoCo's xyaxes: y made orthogonal to x
        y /= np.linalg.norm(y)
        self.origin = p[:3]
        self.rot = np.stack([x, y, np.cross(x, y)], axis=1)  # camera axes as columns
        self.tan_half = math.tan(math.radians(p[9]) / 2)
        self.kin = ArmKinematics(model)
        self.last = np.array([np.nan, np.nan, CUBE_HALF])
        self.frames = self.unseen = 0  # frames looked at, and how many did not show the cube

    def reset(self) -> None:
        self.last = np.array([np.nan, np.nan, CUBE_HALF])

    def locate(self, frame: np.ndarray) -> np.ndarray | None:
        """The cube's centre (3,) from an RGB frame ``(H, W, 3)``, or None when not seen."""
        img = np.asarray(frame)
        h, w = img.shape[:2]
        rgb = img.astype(np.int16)
        mask = (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])) > RED_MARGIN
        rows, cols = np.nonzero(mask)
        if rows.size < MIN_PIXELS:
            return None
        f = (h / 2) / self.tan_half  # focal length in pixels (fovy is vertical)
        u, v = cols.mean() + 0.5 - w / 2, rows.mean() + 0.5 - h / 2
        ray = self.rot @ np.array([u / f, -v / f, -1.0])  # image rows grow downwards
        if ray[2] >= -1e-9:  # at or above the horizon: meets no table
            return None
        t = (CUBE_HALF - self.origin[2]) / ray[2]
        return self.origin + t * ray

    def observe(self, frame: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """The feature's value for ``frame`` and the measured joint angles ``joints`` (rad)."""
        self.frames += 1
        found = self.locate(frame)
        if found is None:
            self.unseen += 1
        else:
            self.last = found
        cube = np.nan_to_num(self.last, nan=0.0)  # never seen yet: the base, with seen 0
        tcp, _ = self.kin.fk(np.asarray(joints, dtype=np.float64))
        return np.concatenate([cube, [float(found is not None)], cube - tcp]).astype(np.float32)
