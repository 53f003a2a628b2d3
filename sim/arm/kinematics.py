"""Forward and inverse kinematics of the arm, computed by MuJoCo on a scratch ``MjData``.

Only the kinematic tree of the model is used (``mj_kinematics`` / ``mj_comPos`` / ``mj_jacSite``),
so the same code serves a real arm given its joint readings. Angles are radians; ``q`` is the
5 arm joints ``(shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll)``.

The IK is damped least squares with task priority: the tool centre point position first, then,
in the remaining null space, the gripper axis pointing straight down (a 5-DoF arm cannot do
more); joint limits are enforced by clamping every iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from sim.arm.model import ARM_JOINTS

DOWN = np.array([0.0, 0.0, -1.0])


@dataclass
class IKConfig:
    damping: float = 0.02  # damped-least-squares lambda (m, rad)
    max_step: float = 0.25  # largest joint change per iteration, rad
    iterations: int = 60  # most iterations per solve
    tolerance: float = 1e-4  # stop when the position error is below this, m
    orient_tolerance: float = 2e-3  # ... and the pointing error below this, rad

    def __post_init__(self) -> None:
        if self.damping <= 0 or self.max_step <= 0 or self.iterations < 1:
            raise ValueError("IKConfig: damping, max_step and iterations must be positive")
        if self.tolerance <= 0 or self.orient_tolerance <= 0:
            raise ValueError("IKConfig: tolerances must be positive")


class ArmKinematics:
    """FK/IK of the tool centre point site ``site`` of ``model``."""

    def __init__(self, model: mujoco.MjModel, site: str = "tcp",
                 config: IKConfig | None = None) -> None:
        self.model, self.data = model, mujoco.MjData(model)
        self.cfg = config or IKConfig()
        self.site = model.site(site).id
        jids = [model.joint(j).id for j in ARM_JOINTS]
        self.qadr = np.array([model.jnt_qposadr[j] for j in jids])
        self.dofadr = np.array([model.jnt_dofadr[j] for j in jids])
        self.low = model.jnt_range[jids, 0].copy()
        self.high = model.jnt_range[jids, 1].copy()
        self.roll_body = model.body("gripper_body").id
        self.flex_jnt = model.joint("wrist_flex").id
        self._res, self._jac = np.zeros(4), np.zeros((4, 4))
        self._jp = np.zeros((3, model.nv))
        self._jr = np.zeros((3, model.nv))

    # ------------------------------------------------------------------ forward
    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q[:5]
        mujoco.mj_kinematics(self.model, self.data)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre point position (3,) and rotation matrix (3, 3) for joint angles ``q``."""
        self._set(np.asarray(q, dtype=np.float64))
        return (self.data.site_xpos[self.site].copy(),
                self.data.site_xmat[self.site].reshape(3, 3).copy())

    def jaw_yaw(self, q: np.ndarray) -> float:
        """World yaw (rad) of the jaws' closing direction (the gripper's y axis)."""
        _, rot = self.fk(q)
        return float(np.arctan2(rot[1, 1], rot[0, 1]))

    # ------------------------------------------------------------------ inverse
    def _residual(self, q: np.ndarray, target: np.ndarray, w_rot: float
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Residual (4,) = position error and weighted pitch error, and its Jacobian (4, 4)
        over (pan, lift, elbow, wrist_flex)."""
        self._set(q)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jp, self._jr, self.site)
        axis = self.data.xaxis[self.flex_jnt]  # pitch axis, horizontal, normal to the arm plane
        rot = self.data.site_xmat[self.site]  # row-major 3x3; column 0 is the gripper axis
        a = (rot[0], rot[3])
        # signed angle from the gripper axis to straight down, about the pitch axis
        pitch_err = -a[1] * axis[0] + a[0] * axis[1]  # (a x (0, 0, -1)) . axis
        res = self._res
        res[:3] = target - self.data.site_xpos[self.site]
        res[3] = w_rot * pitch_err
        jac = self._jac
        jac[:3] = self._jp[:, self.dofadr[:4]]
        jac[3] = w_rot * (axis @ self._jr[:, self.dofadr[:4]])
        return res, jac

    def ik(self, target: np.ndarray, q0: np.ndarray, point_down: bool = True
           ) -> tuple[np.ndarray, float]:
        """Joint angles (5,) putting the tool centre point at ``target`` (3,), starting from
        ``q0``; the wrist roll is kept from ``q0``. ``point_down`` weights the gripper pointing
        straight down as much as the position (m ~ rad * 0.1 m); otherwise it only breaks ties.
        Returns ``(q, position_error_m)``."""
        cfg = self.cfg
        target = np.asarray(target, dtype=np.float64)
        q = np.clip(np.asarray(q0, dtype=np.float64)[:5].copy(), self.low, self.high)
        w_rot = 0.1 if point_down else 0.005
        reg = cfg.damping ** 2 * np.eye(4)
        for _ in range(cfg.iterations):
            res, jac = self._residual(q, target, w_rot)
            if (res[0] ** 2 + res[1] ** 2 + res[2] ** 2 < cfg.tolerance ** 2
                    and abs(res[3]) < w_rot * cfg.orient_tolerance):
                break
            dq = np.linalg.solve(jac.T @ jac + reg, jac.T @ res)
            scale = max(1.0, float(np.abs(dq).max()) / cfg.max_step)
            q[:4] = np.clip(q[:4] + dq / scale, self.low[:4], self.high[:4])
        pos, _ = self.fk(q)
        return q, float(np.linalg.norm(target - pos))

    def ik_robust(self, target: np.ndarray, q0: np.ndarray, point_down: bool = True,
                  seeds: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, float]:
        """:meth:`ik` from ``q0``, then from each of ``seeds`` until one is within tolerance."""
        best = self.ik(target, q0, point_down)
        for seed in seeds:
            if best[1] < 1e-3:
                break
            cand = self.ik(target, np.concatenate([seed[:4], np.asarray(q0)[4:5]]), point_down)
            if cand[1] < best[1]:
                best = cand
        return best
