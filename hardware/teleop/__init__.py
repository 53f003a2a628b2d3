"""Teleop devices by name: ``teleop: keyboard`` -> device + the mapper for the robot.

``make_teleop("gamepad", robot)`` builds the device, picks the car mapper for a robot whose
actions are ``(steering, throttle)`` and the arm mapper (joint-space velocity) for any other
robot with named actions, or the device's own (a leader arm: absolute joint targets, see
:mod:`hardware.teleop.leader`), and returns a :class:`Teleop` for ``ControlLoop.run_episode``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hardware.teleop.base import (
    MODES,
    ArmMapper,
    ArmMapperConfig,
    CarMapper,
    CarMapperConfig,
    DeviceError,
    DeviceState,
    Mapper,
    Teleop,
    TeleopConfig,
    TeleopDevice,
)
from robolearn.robot import Robot
from robolearn_core.config import ConfigError, InvalidValue
from robolearn_core.registry import resolve

__all__ = ["MODES", "TELEOPS", "ArmMapper", "ArmMapperConfig", "CarMapper", "CarMapperConfig",
           "DeviceError", "DeviceState", "Mapper", "Teleop", "TeleopConfig", "TeleopDevice",
           "device_for", "make_teleop", "robot_kind"]

# name -> "module:Class". Adding a device touches its own file plus one line here.
TELEOPS: dict[str, str] = {
    "keyboard": "hardware.teleop.keyboard:KeyboardDevice",
    "gamepad": "hardware.teleop.gamepad:GamepadDevice",
    "spacemouse": "hardware.teleop.spacemouse:SpaceMouseDevice",
    "so101_leader": "hardware.so101.leader:SO101LeaderDevice",
    "so100_leader": "hardware.so101.leader:SO100LeaderDevice",
    "koch_leader": "hardware.koch.leader:KochLeaderDevice",
}

CAR_ACTIONS = ("steering", "throttle")


def robot_kind(robot: Robot) -> str:
    """``"car"`` for [steering, throttle] actions, ``"arm"`` for other named joint actions."""
    names = robot.action_feature.names
    if names is None:
        raise ValueError(f"teleop: {robot.name}'s actions have no names; cannot map a device")
    return "car" if tuple(names) == CAR_ACTIONS else "arm"


def make_mapper(device: TeleopDevice, robot: Robot, **overrides: Any) -> Mapper:
    """The device's default mapping for ``robot``, with ``overrides`` of the mapper config's
    fields; arm joint positions are read from ``observation.state``'s ``<joint>.pos``."""
    low, high = robot.action_bounds
    if robot_kind(robot) == "car":
        return CarMapper(dataclasses.replace(device.car_mapping(), **overrides), low, high)
    joints = tuple(robot.action_feature.names or ())
    state = robot.observation_features["observation.state"].names or ()
    own = device.own_mapper(joints, low, high)
    if own is not None:
        if overrides:
            raise InvalidValue(next(iter(overrides)), f"teleop={device.name} maps its own pose; "
                                                      "its settings are teleop_config.*")
        return own
    missing = [j for j in joints if f"{j}.pos" not in state]
    if missing:
        raise ValueError(f"teleop: observation.state of {robot.name} lacks "
                         f"{', '.join(f'{j}.pos' for j in missing)}")
    cfg = dataclasses.replace(device.arm_mapping(joints), **overrides)
    return ArmMapper(cfg, joints, low, high, dt=1.0 / robot.fps,
                     state_index=[list(state).index(f"{j}.pos") for j in joints])


def device_for(name: str, kind: str, **cfg: Any) -> TeleopDevice:
    """Device ``name`` (not yet connected) set up for a ``"car"`` or ``"arm"`` robot, with
    ``cfg`` overriding its config's fields. A bad name or field raises :class:`ConfigError`
    naming ``teleop`` or ``teleop_config.<field>``."""
    try:
        cls = resolve(TELEOPS, name, "teleop")
    except KeyError as exc:
        raise ConfigError(f"teleop: {exc.args[0]}") from None
    if kind not in cls.kinds:
        raise ConfigError(f"teleop={name} drives {' and '.join(cls.kinds)} robots, not a {kind}")
    known = [f.name for f in dataclasses.fields(type(cls.config_for(kind)))]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ConfigError(f"teleop_config.{unknown[0]}: not a setting of teleop={name}; known: "
                          f"{', '.join(dict.fromkeys([*known, 'hold_s', 'mapper']))}")
    try:
        return cls(cls.config_for(kind, **cfg))  # type: ignore[no-any-return]
    except InvalidValue as exc:
        raise ConfigError(f"teleop_config.{exc.field}: {exc.message}") from None


def make_teleop(name: str, robot: Robot, *, hold_s: float | None = None,
                mapper: dict[str, Any] | None = None, **cfg: Any) -> Teleop:
    """Device ``name`` configured with ``cfg`` (its config's fields), mapped onto ``robot``;
    ``mapper`` overrides fields of the mapper config (e.g. ``{"deadzone": 0.2}``); ``hold_s``
    (None: the device's default, 0.5 s; a leader arm's 1 s) is how long an intervention
    lasts after the last input. Nothing is opened yet: ``with teleop:`` connects the device
    (:class:`DeviceError` when it cannot)."""
    kind = robot_kind(robot)
    device = device_for(name, kind, **cfg)
    known = [f.name for f in dataclasses.fields(CarMapperConfig if kind == "car"
                                                  else ArmMapperConfig)]
    unknown = sorted(set(mapper or {}) - set(known))
    if unknown:
        raise ConfigError(f"teleop_config.mapper.{unknown[0]}: not a setting of the {kind} "
                          f"mapper; known: {', '.join(known)}")
    try:
        return Teleop(device, make_mapper(device, robot, **(mapper or {})),
                      TeleopConfig(device.default_hold_s if hold_s is None else hold_s))
    except InvalidValue as exc:
        key = "hold_s" if exc.field == "hold_s" else f"mapper.{exc.field}"
        raise ConfigError(f"teleop_config.{key}: {exc.message}") from None
