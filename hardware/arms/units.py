"""Joint units: lerobot's calibrated joint values <-> the simulated arm's joint angles.

lerobot reports a calibrated arm's joints in degrees from the middle of each joint's calibrated
range (``MotorNormMode.DEGREES``) and the gripper as 0 .. 100 % of its range
(``RANGE_0_100``). The simulated arm (``sim_arm``) acts and observes in radians from its
kinematic zero. A :class:`JointUnits` per joint maps one to the other::

    sim = offset + sign * scale * lerobot          lerobot = (sim - offset) / (sign * scale)

so a policy trained on ``sim_arm`` reads and commands the same quantities on a real arm. The
tables of each robot (and how to fit them to an arm whose calibrated middle is not the
simulated zero) are in the robot's module and in the README ("Real arms: units").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEG = math.pi / 180.0


@dataclass(frozen=True)
class JointUnits:
    """One joint: ``sim = offset + sign * scale * lerobot``."""

    name: str  # joint name, as both lerobot and sim_arm call it
    scale: float  # radians per lerobot unit (degrees: pi / 180; gripper: its span / 100)
    sign: int = 1  # +1, or -1 where the arm's servo turns the other way from the simulated joint
    offset: float = 0.0  # the simulated angle (rad) at lerobot's 0

    def to_sim(self, value: float) -> float:
        return self.offset + self.sign * self.scale * value

    def to_lerobot(self, angle: float) -> float:
        return (angle - self.offset) / (self.sign * self.scale)


class UnitsTable:
    """The joints of one arm, in action order."""

    def __init__(self, joints: list[JointUnits]) -> None:
        if any(j.sign not in (1, -1) or j.scale <= 0 for j in joints):
            raise ValueError(f"units: every sign must be +-1 and every scale > 0: {joints}")
        self.joints = joints
        self.names = tuple(j.name for j in joints)
        self._scale = np.array([j.sign * j.scale for j in joints])
        self._offset = np.array([j.offset for j in joints])

    def to_sim(self, values: dict[str, float]) -> np.ndarray:
        """``{joint: lerobot value}`` -> simulated angles ``(J,)`` in table order."""
        raw = np.array([values[n] for n in self.names], dtype=np.float64)
        return self._offset + self._scale * raw

    def rates_to_sim(self, rates: np.ndarray) -> np.ndarray:
        """Rates in lerobot units per second ``(J,)`` -> rad/s (no offset)."""
        return self._scale * np.asarray(rates, dtype=np.float64)

    def to_lerobot(self, angles: np.ndarray) -> dict[str, float]:
        """Simulated angles ``(J,)`` -> ``{joint: lerobot value}``."""
        values = (np.asarray(angles, dtype=np.float64) - self._offset) / self._scale
        return {n: float(v) for n, v in zip(self.names, values, strict=True)}

    def span_to_sim(self, low: dict[str, float], high: dict[str, float]
                    ) -> tuple[np.ndarray, np.ndarray]:
        """A range in lerobot units per joint -> ``(low, high)`` in radians (sorted, since a
        joint with sign -1 swaps its ends)."""
        a, b = self.to_sim(low), self.to_sim(high)
        return np.minimum(a, b), np.maximum(a, b)


def arm_table(gripper_span_rad: float, signs: list[int] | None = None,
              offsets_deg: list[float] | None = None) -> UnitsTable:
    """The five body joints in degrees and the gripper in 0 .. 100 %, as lerobot's SO and Koch
    followers report them (``use_degrees=True``), with per-joint ``signs`` and ``offsets_deg``
    (the simulated angle, in degrees, at the middle of the calibrated range)."""
    from sim.arm.model import JOINTS

    signs = list(signs) if signs is not None else [1] * len(JOINTS)
    offsets = list(offsets_deg) if offsets_deg is not None else [0.0] * len(JOINTS)
    if len(signs) != len(JOINTS) or len(offsets) != len(JOINTS):
        raise ValueError(f"units: need {len(JOINTS)} signs and offsets ({', '.join(JOINTS)}), got "
                         f"{signs} and {offsets}")
    joints = [JointUnits(j, DEG, int(s), o * DEG) for j, s, o in
              zip(JOINTS[:-1], signs[:-1], offsets[:-1], strict=True)]
    joints.append(JointUnits(JOINTS[-1], gripper_span_rad / 100.0, int(signs[-1]),
                             offsets[-1] * DEG))
    return UnitsTable(joints)
