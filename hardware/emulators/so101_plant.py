"""The simulated SO-101 of ``sim/arm`` as the plant behind emulated STS3215 servos.

Goal positions drive the simulated arm's position actuators; present positions, velocities and
loads come from the simulation, which runs on the wall clock (advanced to "now" whenever a
servo is read or commanded). With torque off a joint's actuator exerts nothing: the arm sags
under gravity, as a real one does.

Servo ids and encoder steps (4096 a turn; the simulated joint's zero angle sits at 2048, so
lerobot's half-turn homing of an arm posed at zero gives offsets near 0):

=====  ==============  ==================  =========  ==================================
 id     joint           steps at 0 rad      sign       joint range -> steps
=====  ==============  ==================  =========  ==================================
 1      shoulder_pan    2048                +1         +-110 deg -> 796 .. 3300
 2      shoulder_lift   2048                +1         +-100 deg -> 910 .. 3186
 3      elbow_flex      2048                +1         +-100 deg -> 910 .. 3186
 4      wrist_flex      2048                +1         +-95 deg  -> 967 .. 3129
 5      wrist_roll      2048                +1         +-160 deg -> 228 .. 3868
 6      gripper         2048                +1         0 .. 100 deg (closed .. open)
                                                       -> 2048 .. 3186
=====  ==============  ==================  =========  ==================================

``steps = zero + sign * angle_rad * 4096 / (2 pi)``; a target outside the joint's range is held
at the range's end (the actuator's control range), as the arm's hard stops would.

The same simulated arm stands behind other buses through another servo map
(``SO101Plant(servo_map=...)``: servo id -> joint, steps at 0 rad, sign). The Koch v1.1
emulator (:mod:`hardware.emulators.dynamixel`, ``--plant koch``) uses :data:`KOCH_SERVO_JOINTS`:
its Dynamixel ids 1..6 move the same six joints, so it moves the simulated SO-101-like arm
(same joint names, same ranges), not the Koch's own kinematics or link lengths.
"""

from __future__ import annotations

import math
import threading
import time

import mujoco
import numpy as np

from hardware.emulators.plants import Sensed
from sim.arm.model import HOME, JOINTS, build_mjcf

STEPS_PER_RAD = 4096 / (2 * math.pi)
ServoMap = dict[int, tuple[str, float, int]]
# servo id -> (simulated joint, encoder steps at the joint's zero angle, direction)
SERVO_JOINTS: ServoMap = {i + 1: (joint, 2048.0, 1) for i, joint in enumerate(JOINTS)}
# the Koch v1.1 follower's Dynamixel ids on the same joints (its XL430/XL330 servos also count
# 4096 steps a turn, 2048 mid-range)
KOCH_SERVO_JOINTS: ServoMap = {i + 1: (joint, 2048.0, 1) for i, joint in enumerate(JOINTS)}


def steps_to_angle(servo_id: int, steps: float, servo_map: ServoMap = SERVO_JOINTS) -> float:
    _, zero, sign = servo_map[servo_id]
    return sign * (steps - zero) / STEPS_PER_RAD


def angle_to_steps(servo_id: int, angle: float, servo_map: ServoMap = SERVO_JOINTS) -> float:
    _, zero, sign = servo_map[servo_id]
    return zero + sign * angle * STEPS_PER_RAD


class SO101Plant:
    """The SO-101 scene of ``sim/arm``, its joints moved by the servos' goals."""

    def __init__(self, timestep: float = 0.002, home: tuple[float, ...] = HOME,
                 max_catch_up_s: float = 0.25, servo_map: ServoMap | None = None) -> None:
        """``max_catch_up_s``: the most simulated time one call advances (after a long pause
        the simulation skips ahead rather than stall the bus). ``home``: the joint angles at
        start, in ``JOINTS`` order. ``servo_map``: servo id -> (joint, steps at 0 rad, sign),
        default the SO-101's :data:`SERVO_JOINTS`."""
        self.servo_map = dict(SERVO_JOINTS if servo_map is None else servo_map)
        unknown = sorted({j for j, _, _ in self.servo_map.values()} - set(JOINTS))
        if unknown or len({j for j, _, _ in self.servo_map.values()}) != len(self.servo_map):
            raise ValueError(f"servo_map: each servo needs its own joint of {list(JOINTS)}; "
                             f"got {self.servo_map}")
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(timestep))
        self.data = mujoco.MjData(self.model)
        m, d = self.model, self.data
        self._joint = {i: m.joint(j).id for i, (j, _, _) in self.servo_map.items()}
        self._act = {i: m.actuator(j).id for i, (j, _, _) in self.servo_map.items()}
        self._gain = m.actuator_gainprm[:, 0].copy()
        self._bias = m.actuator_biasprm[:, 1:3].copy()
        for joint, angle in zip(JOINTS, home, strict=True):
            d.qpos[m.jnt_qposadr[m.joint(joint).id]] = angle
            d.ctrl[m.actuator(joint).id] = angle
        mujoco.mj_forward(m, d)
        self.max_catch_up_s = max_catch_up_s
        self._t = time.monotonic()
        self._lock = threading.Lock()
        self._hand: dict[int, float | None] = dict.fromkeys(self.servo_map)
        self._torque = dict.fromkeys(self.servo_map, False)
        for i in self.servo_map:  # servos power up with torque off
            self._free(i, True)

    def steps_to_angle(self, servo_id: int, steps: float) -> float:
        return steps_to_angle(servo_id, steps, self.servo_map)

    def angle_to_steps(self, servo_id: int, angle: float) -> float:
        return angle_to_steps(servo_id, angle, self.servo_map)

    def drive(self, servo_id: int, target: float | None) -> None:
        with self._lock:
            self._advance()
            self._torque[servo_id] = target is not None
            self._apply(servo_id, target)

    def move_by_hand(self, servo_id: int, position: float | None) -> None:
        """A person holds joint ``servo_id`` at ``position`` encoder steps (None: lets go), as
        during calibration. A servo with torque on is stronger than the hand: the hand only
        moves joints whose torque is off."""
        with self._lock:
            self._advance()
            self._hand[servo_id] = position
            if not self._torque[servo_id]:
                self._apply(servo_id, None)

    def _apply(self, servo_id: int, target: float | None) -> None:
        """Torque on: the actuator pulls to ``target``; off: the joint is free, unless a hand
        holds it (then it is placed where the hand puts it, see :meth:`_pin`)."""
        self._free(servo_id, target is None)
        if target is not None:
            self.data.ctrl[self._act[servo_id]] = self.steps_to_angle(servo_id, target)
        self._pin()

    def _pin(self) -> None:
        """Joints held by hand with torque off are where the hand holds them: a person is far
        stronger than gravity and the arm's damping."""
        m, d = self.model, self.data
        pinned = False
        for i, steps in self._hand.items():
            if steps is not None and not self._torque[i]:
                j = self._joint[i]
                d.qpos[m.jnt_qposadr[j]] = self.steps_to_angle(i, steps)
                d.qvel[m.jnt_dofadr[j]] = 0.0
                pinned = True
        if pinned:
            mujoco.mj_forward(m, d)

    def sense(self, servo_id: int) -> Sensed:
        with self._lock:
            self._advance()
            m, d, j = self.model, self.data, self._joint[servo_id]
            a = self._act[servo_id]
            _, _, sign = self.servo_map[servo_id]
            limit = float(m.actuator_forcerange[a, 1]) or 1.0
            return Sensed(self.angle_to_steps(servo_id, float(d.qpos[m.jnt_qposadr[j]])),
                          sign * float(d.qvel[m.jnt_dofadr[j]]) * STEPS_PER_RAD,
                          sign * float(d.actuator_force[a]) / limit)

    def render(self, renderer: mujoco.Renderer, camera: str) -> np.ndarray:
        """The scene now through ``camera`` (the simulated arm's "front" or "wrist"), RGB
        ``(H, W, 3)`` at the renderer's size; call from the thread that made ``renderer``."""
        with self._lock:
            self._advance()
            renderer.update_scene(self.data, camera)
        return np.asarray(renderer.render())

    def joint_angles(self) -> np.ndarray:
        """The joint angles now, radians, in servo-id order."""
        with self._lock:
            self._advance()
            m = self.model
            return np.array([self.data.qpos[m.jnt_qposadr[self._joint[i]]]
                             for i in sorted(self.servo_map)])

    def _free(self, servo_id: int, free: bool) -> None:
        a, m = self._act[servo_id], self.model
        m.actuator_gainprm[a, 0] = 0.0 if free else self._gain[a]
        m.actuator_biasprm[a, 1:3] = 0.0 if free else self._bias[a]

    def _advance(self) -> None:
        now = time.monotonic()
        n = int((now - self._t) / self.model.opt.timestep)
        if n <= 0:
            return
        self._t += n * self.model.opt.timestep
        n = min(n, int(self.max_catch_up_s / self.model.opt.timestep))
        mujoco.mj_step(self.model, self.data, nstep=n)
        self._pin()


def joint_ranges_steps() -> dict[int, tuple[float, float]]:
    """Each servo's joint range (the simulated joint's limits) in encoder steps."""
    from sim.arm.model import JOINT_LIMITS

    out = {}
    for i, (joint, _, _) in SERVO_JOINTS.items():
        a, b = (angle_to_steps(i, v) for v in JOINT_LIMITS[joint])
        out[i] = (min(a, b), max(a, b))
    return out


def middle_steps() -> dict[int, float]:
    """The middle of each joint's range, steps: where lerobot's calibration wants the arm."""
    return {i: (lo + hi) / 2 for i, (lo, hi) in joint_ranges_steps().items()}
