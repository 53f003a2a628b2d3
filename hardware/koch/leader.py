"""``koch_leader``: the Koch v1.1 leader arm as a teleop device.

Read through lerobot's ``KochLeader`` (``DynamixelMotorsBus``, six XL330-M077, ids 1..6; torque
off except the gripper, which lerobot holds at ``gripper_open_pos`` with limited current so it
springs back like a trigger). lerobot's Koch leader reports its joints in -100 .. 100 % of their
range; robolearn switches them to degrees from the middle of the range (lerobot's own
``MotorNormMode.DEGREES``, what the follower reports with ``use_degrees=True``) so the Koch
follower's units table applies unchanged (:mod:`hardware.koch.robot`). What a leader does and
when it drives: :mod:`hardware.teleop.leader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hardware.arms.lerobot_util import calibration_dir
from hardware.teleop.leader import LeaderArmDevice, LeaderConfig


@dataclass
class KochLeaderConfig(LeaderConfig):
    """``teleop=koch_leader`` settings (``teleop_config.*``)."""

    id: str = "robolearn_koch_leader"  # leader name: its calibration file is <id>.json
    gripper_open_pos: float = 50.0  # where the gripper trigger springs back to, % of its range


class KochLeaderDevice(LeaderArmDevice):
    name = "koch_leader"
    config_class = KochLeaderConfig
    follower = "koch"
    emulator = "hardware.emulators.dynamixel"  # its servos are XL330-M077 (lerobot checks)
    emulator_args = ("--servos", "6", "--plant", "koch", "--model", "xl330-m077")

    def make_lerobot(self, cfg: LeaderConfig) -> Any:
        from lerobot.motors import MotorNormMode
        from lerobot.teleoperators.koch_leader import KochLeader
        from lerobot.teleoperators.koch_leader import KochLeaderConfig as LerobotConfig

        assert isinstance(cfg, KochLeaderConfig)
        lr = KochLeader(LerobotConfig(port=cfg.port, id=cfg.id,
                                      calibration_dir=calibration_dir(cfg),
                                      gripper_open_pos=cfg.gripper_open_pos))
        for joint, motor in lr.bus.motors.items():
            if joint != "gripper":
                motor.norm_mode = MotorNormMode.DEGREES
        return lr
