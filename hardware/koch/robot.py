"""``koch``: the Koch v1.1 follower arm as a robolearn robot.

Built on lerobot's ``KochFollower`` (``DynamixelMotorsBus``: XL430-W250 for the shoulder, XL330-M288
for the rest, ids 1..6); see :mod:`hardware.arms.lerobot_arm` for what robolearn adds. The units
table is the SO-101's (joints in degrees from the middle of their calibrated range, the gripper
in 0 .. 100 % -> 0 .. 1.745 rad; robolearn asks lerobot for degrees, where lerobot's own Koch
default is -100 .. 100), with ``robot.signs`` / ``robot.offsets_deg`` for an arm calibrated
otherwise. Present_Velocity is in units of 0.229 rev/min.

**Bus watchdog.** Dynamixel X servos have a Bus_Watchdog register (98, units of 20 ms): with it
set, a servo that hears no instruction packet for that long stops by itself. The driver sets it
at connect (``robot.bus_watchdog_ms``, default 80 ms; 0 turns it off), so if robolearn dies,
hangs or loses the link, the arm stops within that time without any host. The control loop
talks to every servo each period, so it never fires in normal running (keep it above 2 periods).
After it fires, goals are refused until the register is cleared: connect clears it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hardware.arms.lerobot_arm import ArmConfig, LerobotArm
from hardware.arms.lerobot_util import calibration_dir as _dir
from robolearn.robot import RobotError

WATCHDOG_UNIT_MS = 20  # Bus_Watchdog counts in 20 ms


@dataclass
class KochConfig(ArmConfig):
    """``robot=koch`` settings."""

    id: str = "robolearn_koch"  # arm name: its calibration file is <id>.json
    bus_watchdog_ms: int = 80  # servos stop when no packet arrives for this long, ms (0: off)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.bus_watchdog_ms <= 127 * WATCHDOG_UNIT_MS:
            raise ValueError(f"bus_watchdog_ms must be in 0..{127 * WATCHDOG_UNIT_MS} (units of "
                             f"{WATCHDOG_UNIT_MS} ms), got {self.bus_watchdog_ms}")
        if 0 < self.bus_watchdog_ms < 2 * 1000 / self.fps:
            raise ValueError(f"bus_watchdog_ms={self.bus_watchdog_ms} is under two control "
                             f"periods at fps={self.fps}: it would stop the arm in normal running")


class Koch(LerobotArm):
    name = "koch"
    config_class = KochConfig
    velocity_rad_s = 0.229 * 2 * math.pi / 60  # Dynamixel X Present_Velocity: 0.229 rev/min
    emulator = "hardware.emulators.dynamixel"  # device emulator (`python -m`)
    emulator_args = ("--servos", "6", "--plant", "koch")

    def make_lerobot(self, cfg: Any, cameras: dict[str, Any]) -> Any:
        from lerobot.robots.koch_follower import KochFollower, KochFollowerConfig

        return KochFollower(KochFollowerConfig(
            port=cfg.port, id=cfg.id, calibration_dir=_dir(cfg), cameras=cameras,
            use_degrees=True, disable_torque_on_disconnect=cfg.on_disconnect == "torque_off"))

    def prepare_bus(self) -> None:
        """A watchdog that fired in an earlier session refuses goals until cleared."""
        self._lr.bus.sync_write("Bus_Watchdog", dict.fromkeys(self._lr.bus.motors, 0),
                                normalize=False)

    def after_configure(self) -> None:
        units = math.ceil(self.cfg.bus_watchdog_ms / WATCHDOG_UNIT_MS)
        self._lr.bus.sync_write("Bus_Watchdog", dict.fromkeys(self._lr.bus.motors, units),
                                normalize=False)

    def observe(self) -> dict[str, np.ndarray]:
        """Also checks the watchdogs: a fired one (the loop stalled past ``bus_watchdog_ms``)
        has stopped its servo and makes it refuse goals, so going on would drive nothing:
        a :class:`RobotError` says so and the control loop stops and commits."""
        obs = super().observe()
        if self.cfg.bus_watchdog_ms:
            dogs = self._io("reading Bus_Watchdog", self._lr.bus.sync_read, "Bus_Watchdog",
                            normalize=False, num_retry=self.cfg.read_retries)
            fired = [j for j, v in dogs.items() if v in (255, -1)]
            if fired:
                raise RobotError(f"{self.name} on {self.cfg.port}: the bus watchdog stopped "
                                 f"{', '.join(fired)} (no packet for {self.cfg.bus_watchdog_ms} "
                                 f"ms: the control loop stalled); the next reset re-arms it")
        return obs

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Re-arm the watchdogs (a pause between episodes may have fired them), then home."""
        if self.cfg.bus_watchdog_ms and self._lr is not None:
            self._io("re-arming the bus watchdog", self.prepare_bus)
            self._io("re-arming the bus watchdog", self.after_configure)
        return super().reset(seed, options)
