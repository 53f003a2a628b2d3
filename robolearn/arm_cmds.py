"""``robolearn calibrate`` and ``robolearn emulate``: a real arm's first steps, with or without it.

- ``robolearn calibrate robot=so101 robot.port=/dev/ttyACM0 [robot.id=NAME]`` runs lerobot's
  own calibration flow for the arm (middle of the range, then every joint through its range) and
  writes lerobot's calibration file (``<calibration_dir>/<id>.json``), which lerobot itself and
  robolearn's driver both read.
- ``robolearn calibrate teleop=so101_leader teleop.port=/dev/ttyACM1 [teleop.id=NAME]`` does
  the same for a leader arm (a teleop device, :mod:`hardware.teleop.leader`) with lerobot's
  flow for the leader; ``teleop.*`` are the keys of its ``teleop_config``.
- ``robolearn emulate so101`` (or ``koch``) starts the robot's device emulator: it prints the
  pseudo-terminal's path to use as ``robot.port``, and serves until Ctrl-C. With ``hand=true``
  it takes hand commands on stdin (``middle``, ``sweep``, ``pose``), the person's part of a
  calibration (or the hand on a leader arm).

``robot=NAME`` on the command line chooses the robot (``robot.type``) and ``robot.KEY=VALUE``
sets its typed config, checked at load time like every other key; ``teleop=NAME`` and
``teleop.KEY=VALUE`` likewise choose and set a leader arm.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from hardware.teleop import TELEOPS
from robolearn.robot import ROBOTS, RobotError, robot_config_class
from robolearn_core.config import ConfigError, InvalidValue, probe
from robolearn_core.registry import resolve


def hardware_robots() -> list[str]:
    """Registered robots with a driver for real hardware (each names its emulator)."""
    return [name for name in ROBOTS if getattr(resolve(ROBOTS, name, "robot"), "emulator", None)]


def calibrated_robots() -> list[str]:
    """Hardware robots calibrated through lerobot's flow (the arms; an RC car has none)."""
    return [name for name in hardware_robots()
            if hasattr(resolve(ROBOTS, name, "robot"), "calibrate")]


def choice(cls: type, name: str) -> type:
    """``cls`` (a robot's or teleop device's config) with the ``type`` field that
    ``robot=NAME`` / ``teleop=NAME`` set on the command line (``robot.type=NAME``)."""
    from robolearn.deploy import RobotChoice

    return dataclasses.make_dataclass(f"Chosen{cls.__name__}",
                                      [("type", str, field(default=name, kw_only=True))],
                                      bases=(cls, RobotChoice))


def settings(value: Any, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` from a chosen config (without its ``type``)."""
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(cls)}


def leader_teleops() -> list[str]:
    """Registered teleop devices that are calibrated arms (leader arms)."""
    return [name for name in TELEOPS if hasattr(resolve(TELEOPS, name, "teleop"), "calibrate")]


@dataclass
class CalibrateConfig:
    robot: Any = None  # a follower arm: robot=NAME (so101, so100, koch), robot.port=, robot.id=
    teleop: Any = None  # or a leader arm: teleop=NAME (so101_leader...), teleop.port=, teleop.id=


def calibrate_schema(path: str | None, overrides: list[str]) -> type:
    chosen = probe(path, overrides)
    robot = OmegaConf.select(chosen, "robot.type", default=None, throw_on_missing=False)
    teleop = OmegaConf.select(chosen, "teleop.type", default=None, throw_on_missing=False)
    if robot is not None and teleop is not None:
        raise ConfigError("calibrate: choose robot=NAME (a follower arm) or teleop=NAME (a "
                          "leader arm), not both")
    if teleop is None:
        key, name, known = "robot", str(robot or "so101"), calibrated_robots()
    else:
        key, name, known = "teleop", str(teleop), leader_teleops()
    if name not in known:
        what = "calibrated hardware robot" if key == "robot" else "leader arm"
        raise ConfigError(f"{key}: {name!r} is not a {what}; known: {', '.join(known)}")
    cls = choice(robot_config_class(name) if key == "robot"
                 else resolve(TELEOPS, name, "teleop").config_class, name)
    return dataclasses.make_dataclass(
        f"CalibrateConfig_{name}", [(key, cls, field(default_factory=cls))],
        bases=(CalibrateConfig,), namespace={"selected_by": {key: (key, name)}})


def calibrate(cfg: Any) -> int:
    from robolearn.robot import make_robot

    if cfg.teleop is not None:
        return calibrate_leader(cfg)
    name = cfg.robot.type
    arm: Any = make_robot(name, **settings(cfg.robot, robot_config_class(name)))
    arm.build()  # the port exists and lerobot accepts the settings, before any prompt
    print(f"Calibrating {name} '{cfg.robot.id}' on {cfg.robot.port} with lerobot's "
          f"calibration flow (it asks for each step).", flush=True)
    path = arm.calibrate()
    print(f"calibration written: {path}")
    return 0


def calibrate_leader(cfg: Any) -> int:
    name = cfg.teleop.type
    cls = resolve(TELEOPS, name, "teleop")
    device = cls(cls.config_class(**settings(cfg.teleop, cls.config_class)))
    device.build()  # the port exists and lerobot accepts the settings, before any prompt
    print(f"Calibrating leader arm {name} '{cfg.teleop.id}' on {cfg.teleop.port} "
          "with lerobot's calibration flow (it asks for each step).", flush=True)
    path = device.calibrate()
    print(f"calibration written: {path}")
    return 0


@dataclass
class EmulateConfig:
    robot: str = "so101"  # the robot to emulate (positional ROBOT): so101, so100, koch, rc_car
    hand: bool = False  # arms: take hand commands on stdin (middle, sweep, pose, release)
    timing: bool = True  # answer at the bytes' wire time at the port's baud rate
    cameras: list[str] = field(default_factory=list)  # scene cameras to serve (front, wrist)
    camera_width: int = 64  # served frame width, px
    camera_height: int = 64  # served frame height, px
    camera_fps: int = 30  # served frame rate, Hz
    track: str = "oval"  # rc_car: the simulated track the car drives on
    status: str = ""  # rc_car: write the judge's JSON status (collisions, laps) to this file

    def __post_init__(self) -> None:
        known = hardware_robots()
        if self.robot not in known:
            raise InvalidValue("robot", f"{self.robot!r} has no emulator; known: "
                                             f"{', '.join(known)}")
        arm = self.robot in calibrated_robots()
        for key, used in (("hand", self.hand), ("timing", not self.timing),
                          ("cameras", self.cameras)):
            if used and not arm:
                raise InvalidValue(key, f"is for the emulated arms, not {self.robot}")
        if arm and (self.status or self.track != "oval"):
            raise InvalidValue("track" if self.track != "oval" else "status",
                               f"is for the emulated RC car, not {self.robot}")


def emulate(cfg: EmulateConfig) -> int:
    cls = resolve(ROBOTS, cfg.robot, "robot")
    argv = list(cls.emulator_args)
    if cfg.robot not in calibrated_robots():
        argv += ["--track", cfg.track] + (["--status", cfg.status] if cfg.status else [])
    if cfg.hand:
        argv.append("--hand")
    if not cfg.timing:
        argv.append("--no-timing")
    if cfg.cameras:
        argv += ["--camera", ",".join(cfg.cameras), "--camera-width", str(cfg.camera_width),
                 "--camera-height", str(cfg.camera_height), "--camera-fps", str(cfg.camera_fps)]
    print(f"emulating {cfg.robot}: use the port path below as robot.port=...; Ctrl-C "
          f"stops", file=sys.stderr, flush=True)
    try:
        code: int = importlib.import_module(cls.emulator).main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)
    return code


def runtime_errors() -> tuple[type[BaseException], ...]:
    return (RobotError,)
