"""``so101_leader`` / ``so100_leader``: the SO-101 and SO-100 leader arms as teleop devices.

Read through lerobot's ``SOLeader`` (``FeetechMotorsBus``, six STS3215, ids 1..6, torque off so
the person moves it; joints in degrees from the middle of their calibrated range, the gripper
handle in 0 .. 100 %), mapped to the follower's units with the SO-101 follower's table
(:mod:`hardware.so101.robot`). What a leader does and when it drives:
:mod:`hardware.teleop.leader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hardware.arms.lerobot_util import calibration_dir
from hardware.teleop.leader import LeaderArmDevice, LeaderConfig


@dataclass
class SO101LeaderConfig(LeaderConfig):
    """``teleop=so101_leader`` / ``so100_leader`` settings (``teleop_config.*``)."""

    id: str = "robolearn_so101_leader"  # leader name: its calibration file is <id>.json


class SO101LeaderDevice(LeaderArmDevice):
    name = "so101_leader"
    config_class = SO101LeaderConfig
    follower = "so101"
    emulator = "hardware.emulators.feetech"  # the leader's STS3215 are the follower's model
    emulator_args = ("--servos", "6", "--plant", "so101")

    def make_lerobot(self, cfg: LeaderConfig) -> Any:
        from lerobot.teleoperators.so_leader import SOLeader, SOLeaderTeleopConfig

        return SOLeader(SOLeaderTeleopConfig(
            port=cfg.port, id=cfg.id, calibration_dir=calibration_dir(cfg), use_degrees=True,
            num_read_retries=cfg.read_retries))


class SO100LeaderDevice(SO101LeaderDevice):
    name = "so100_leader"
    follower = "so100"
