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

``robot=NAME`` on the command line chooses the robot (``robot_type``) and ``robot.KEY=VALUE``
sets its typed config, checked at load time like every other key; ``teleop=NAME`` and
``teleop.KEY=VALUE`` likewise choose and set a leader arm.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from hardware.teleop import TELEOPS
from robolearn.robot import ROBOTS, RobotError, robot_config_class
from robolearn_core.config import ConfigError, InvalidValue, probe
from robolearn_core.registry import resolve


def hardware_robots() -> list[str]:
    """Registered robots with a driver for real hardware (each names its emulator)."""
    return [name for name in ROBOTS if getattr(resolve(ROBOTS, name, "robot"), "emulator", None)]


def with_robot_type[T](schema: type[T], path: str | None, overrides: list[str],
                       default: str = "so101") -> type[T]:
    """``schema`` (with a ``robot_type`` field) with ``robot`` typed as the chosen robot's
    config (``robot=NAME`` on the command line reaches here as ``robot_type=NAME``)."""
    name = probe(path, overrides).get("robot_type", default)
    known = hardware_robots()
    if name not in known:
        raise ConfigError(f"robot: {name!r} is not a hardware robot; known: {', '.join(known)}")
    cls = robot_config_class(str(name))
    return dataclasses.make_dataclass(  # type: ignore[return-value]
        f"{schema.__name__}_{name}", [("robot", cls, dataclasses.field(default_factory=cls))],
        bases=(schema,), namespace={"selected_by": {"robot": ("robot", name)}})


def leader_teleops() -> list[str]:
    """Registered teleop devices that are calibrated arms (leader arms)."""
    return [name for name in TELEOPS if hasattr(resolve(TELEOPS, name, "teleop"), "calibrate")]


@dataclass
class CalibrateConfig:
    robot_type: str = "so101"  # the arm to calibrate (robot=NAME): so101, so100, koch
    robot: Any = None  # the arm's settings: robot.port (required), robot.id, robot.calibration_dir
    teleop_type: str | None = None  # a leader arm to calibrate instead (teleop=NAME):
    #   so101_leader, so100_leader, koch_leader
    teleop: Any = None  # the leader's settings: teleop.port (required), teleop.id,
    #   teleop.calibration_dir (the keys of its teleop_config)


def calibrate_schema(path: str | None, overrides: list[str]) -> type:
    chosen = probe(path, overrides)
    name = chosen.get("teleop_type")
    if name is None:
        return with_robot_type(CalibrateConfig, path, overrides)
    if "robot_type" in chosen:
        raise ConfigError("calibrate: choose robot=NAME (a follower arm) or teleop=NAME (a "
                          "leader arm), not both")
    known = leader_teleops()
    if name not in known:
        raise ConfigError(f"teleop: {name!r} is not a leader arm; known: {', '.join(known)}")
    cls = resolve(TELEOPS, str(name), "teleop").config_class
    return dataclasses.make_dataclass(
        f"CalibrateConfig_{name}", [("teleop", cls, dataclasses.field(default_factory=cls))],
        bases=(CalibrateConfig,), namespace={"selected_by": {"teleop": ("teleop", name)}})


def calibrate(cfg: Any) -> int:
    from robolearn.robot import make_robot

    if cfg.teleop_type is not None:
        return calibrate_leader(cfg)
    arm: Any = make_robot(cfg.robot_type, **dataclasses.asdict(cfg.robot))
    arm.build()  # the port exists and lerobot accepts the settings, before any prompt
    print(f"Calibrating {cfg.robot_type} '{cfg.robot.id}' on {cfg.robot.port} with lerobot's "
          f"calibration flow (it asks for each step).", flush=True)
    path = arm.calibrate()
    print(f"calibration written: {path}")
    return 0


def calibrate_leader(cfg: Any) -> int:
    device = resolve(TELEOPS, cfg.teleop_type, "teleop")(cfg.teleop)
    device.build()  # the port exists and lerobot accepts the settings, before any prompt
    print(f"Calibrating leader arm {cfg.teleop_type} '{cfg.teleop.id}' on {cfg.teleop.port} "
          "with lerobot's calibration flow (it asks for each step).", flush=True)
    path = device.calibrate()
    print(f"calibration written: {path}")
    return 0


@dataclass
class EmulateConfig:
    robot_type: str = "so101"  # the arm to emulate (positional ROBOT): so101, so100, koch
    hand: bool = False  # take hand commands on stdin (middle, sweep, pose, release)
    timing: bool = True  # answer at the bytes' wire time at the port's baud rate
    cameras: list[str] = field(default_factory=list)  # scene cameras to serve (front, wrist)
    camera_width: int = 64  # served frame width, px
    camera_height: int = 64  # served frame height, px
    camera_fps: int = 30  # served frame rate, Hz

    def __post_init__(self) -> None:
        known = hardware_robots()
        if self.robot_type not in known:
            raise InvalidValue("robot_type", f"{self.robot_type!r} has no emulator; known: "
                                             f"{', '.join(known)}")


def emulate(cfg: EmulateConfig) -> int:
    cls = resolve(ROBOTS, cfg.robot_type, "robot")
    argv = list(cls.emulator_args)
    if cfg.hand:
        argv.append("--hand")
    if not cfg.timing:
        argv.append("--no-timing")
    if cfg.cameras:
        argv += ["--camera", ",".join(cfg.cameras), "--camera-width", str(cfg.camera_width),
                 "--camera-height", str(cfg.camera_height), "--camera-fps", str(cfg.camera_fps)]
    print(f"emulating {cfg.robot_type}: use the port path below as robot.port=...; Ctrl-C "
          f"stops", file=sys.stderr, flush=True)
    try:
        code: int = importlib.import_module(cls.emulator).main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code or 0)
    return code


def runtime_errors() -> tuple[type[BaseException], ...]:
    return (RobotError,)
