"""``so101`` / ``so100``: the SO-101 and SO-100 follower arms as robolearn robots.

Built on lerobot's ``SOFollower`` (``FeetechMotorsBus``, six STS3215 servos, ids 1..6); see
:mod:`hardware.arms.lerobot_arm` for what robolearn adds (units, limits, safe stop, named link
loss). The two arms share motors, ids and lerobot class; they differ in their printed parts.

Units (``sim = offset + sign * scale * lerobot``; defaults, per joint ``robot.signs`` and
``robot.offsets_deg`` change them for an arm whose calibration differs):

==============  ====================  ===============  =========================================
 joint           lerobot unit          sim unit         default mapping
==============  ====================  ===============  =========================================
 shoulder_pan    deg from range mid    rad from zero    rad = deg * pi / 180
 shoulder_lift   deg from range mid    rad              rad = deg * pi / 180
 elbow_flex      deg from range mid    rad              rad = deg * pi / 180
 wrist_flex      deg from range mid    rad              rad = deg * pi / 180
 wrist_roll      deg from range mid    rad              rad = deg * pi / 180
 gripper         0 .. 100 % of range   0 .. 1.745 rad   rad = pct / 100 * 1.745 (closed .. open)
==============  ====================  ===============  =========================================

Velocities: Present_Velocity is in encoder steps/s (4096 a turn). The defaults hold for an arm
calibrated with every joint's simulated zero at the middle of its range of motion, as the
emulator's arm is (``robolearn emulate so101``).

If the host dies, STS3215 servos keep their last goal with torque on (they have no bus
watchdog): the arm holds where it was, it does not go limp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hardware.arms.lerobot_arm import ArmConfig, LerobotArm
from hardware.arms.lerobot_util import calibration_dir as _dir


@dataclass
class SO101Config(ArmConfig):
    """``robot=so101`` / ``robot=so100`` settings."""

    id: str = "robolearn_so101"  # arm name: its calibration file is <id>.json


class SO101(LerobotArm):
    name = "so101"
    config_class = SO101Config
    velocity_rad_s = 2 * math.pi / 4096  # STS3215 Present_Velocity: steps/s
    verify_default = True  # Feetech protocol 0 has an 8-bit checksum: read twice, compare
    emulator = "hardware.emulators.feetech"  # device emulator (`python -m`)
    emulator_args = ("--servos", "6", "--plant", "so101")

    def make_lerobot(self, cfg: Any, cameras: dict[str, Any]) -> Any:
        from lerobot.robots.so_follower import SOFollower, SOFollowerRobotConfig

        return SOFollower(SOFollowerRobotConfig(
            port=cfg.port, id=cfg.id, calibration_dir=_dir(cfg), cameras=cameras,
            use_degrees=True, disable_torque_on_disconnect=cfg.on_disconnect == "torque_off",
            num_read_retries=cfg.read_retries))


class SO100(SO101):
    name = "so100"
