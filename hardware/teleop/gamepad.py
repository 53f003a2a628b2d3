"""A gamepad through pygame's SDL GameController API (Xbox / PlayStation / most USB pads).

SDL's controller database maps every known pad onto one layout, so the names below mean the
same button on any pad. pygame is imported on connect; no window is opened
(``SDL_VIDEODRIVER=dummy``) and background input is allowed, so it works over SSH.

Axes: ``lx``, ``ly``, ``rx``, ``ry`` in [-1, 1] (right and up positive), ``lt``, ``rt`` in
[0, 1], ``trig`` = rt - lt. Buttons: a b x y back guide start ls rs lb rb up down left right.

Car: left stick x steers, left stick y throttles, only while ``rb`` is held (deadman).
Arm: lx shoulder_pan, ly shoulder_lift, ry elbow_flex, rx wrist_flex, trig wrist_roll,
rb / lb open / close the gripper. Events on press: start keep, back discard, x re-record,
y success, a failure, guide quit, b takeover (toggle).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hardware.teleop.base import (
    EVENTS,
    ArmMapperConfig,
    CarMapperConfig,
    DeviceState,
    TeleopDevice,
)
from robolearn.config import InvalidValue

AXES = ("lx", "ly", "rx", "ry", "lt", "rt")  # SDL_GameControllerAxis order
BUTTONS = ("a", "b", "x", "y", "back", "guide", "start", "ls", "rs", "lb", "rb",
           "up", "down", "left", "right")  # SDL_GameControllerButton order

ARM_AXES = {"shoulder_pan": "-lx", "shoulder_lift": "ly", "elbow_flex": "ry",
            "wrist_flex": "-rx", "wrist_roll": "trig"}


def _default_events() -> dict[str, str]:
    return {"start": "keep", "back": "discard", "x": "rerecord", "y": "success",
            "a": "failure", "guide": "quit", "b": "takeover"}


@dataclass
class GamepadConfig:
    index: int = 0  # which connected game controller (0: the first)
    events: dict[str, str] = field(default_factory=_default_events)  # button -> event on press
    car_enable_button: str | None = "rb"  # deadman for driving a car; None: drive on any input

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InvalidValue("index", f"must be >= 0, got {self.index}")
        for button, event in self.events.items():
            if button not in BUTTONS:
                raise InvalidValue("events", f"unknown button {button!r}; known: "
                                   f"{', '.join(BUTTONS)}")
            if event not in EVENTS:
                raise InvalidValue("events", f"unknown event {event!r}; known: "
                                   f"{', '.join(EVENTS)}")
        if self.car_enable_button is not None and self.car_enable_button not in BUTTONS:
            raise InvalidValue("car_enable_button", f"unknown button {self.car_enable_button!r}")


def normalise(raw_axes: Sequence[int], pressed: Sequence[bool]) -> tuple[dict[str, float],
                                                                         frozenset[str]]:
    """SDL controller readings -> named axes and held buttons.

    ``raw_axes``: the 6 SDL axis values (sticks -32768..32767 with y down positive, triggers
    0..32767); ``pressed``: the 15 SDL button states."""
    v = [max(-1.0, min(1.0, a / 32767.0)) for a in raw_axes]
    axes = {"lx": v[0], "ly": -v[1], "rx": v[2], "ry": -v[3],
            "lt": max(0.0, v[4]), "rt": max(0.0, v[5])}
    axes["trig"] = axes["rt"] - axes["lt"]
    return axes, frozenset(b for b, p in zip(BUTTONS, pressed, strict=False) if p)


class GamepadDevice(TeleopDevice):
    """SDL game controller ``cfg.index`` via ``pygame._sdl2.controller``."""

    name = "gamepad"

    @classmethod
    def config_for(cls, kind: str, **cfg: Any) -> GamepadConfig:
        return GamepadConfig(**cfg)

    def __init__(self, cfg: GamepadConfig | None = None) -> None:
        self.cfg = cfg or GamepadConfig()
        self._pg: Any = None
        self._pad: Any = None
        self._held: frozenset[str] = frozenset()

    def connect(self) -> None:
        if self._pad is not None:
            return
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
        os.environ.setdefault("SDL_JOYSTICK_ALLOW_BACKGROUND_EVENTS", "1")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
            from pygame._sdl2 import controller
        except ImportError as exc:
            raise RuntimeError("gamepad teleop needs pygame (pip install 'pygame>=2.6')") from exc
        pygame.display.init()  # the event pump (dummy video driver: no window)
        pygame.joystick.init()
        controller.init()
        pygame.event.pump()
        n = pygame.joystick.get_count()
        if self.cfg.index >= n or not controller.is_controller(self.cfg.index):
            raise RuntimeError(f"gamepad: no game controller at index {self.cfg.index} "
                               f"({n} joystick(s) connected)")
        self._pg, self._pad = pygame, controller.Controller(self.cfg.index)
        self._held = frozenset()

    def disconnect(self) -> None:
        if self._pad is None:
            return
        self._pad.quit()
        self._pad = None

    def read(self) -> DeviceState:
        assert self._pad is not None, "gamepad: not connected (use `with device:`)"
        self._pg.event.pump()
        raw = [self._pad.get_axis(i) for i in range(len(AXES))]
        pressed = [bool(self._pad.get_button(i)) for i in range(len(BUTTONS))]
        axes, held = normalise(raw, pressed)
        events = tuple(self.cfg.events[b] for b in BUTTONS
                       if b in held and b not in self._held and b in self.cfg.events)
        self._held = held
        return DeviceState(axes, held, events)

    def car_mapping(self) -> CarMapperConfig:
        return CarMapperConfig(steer_axis="-lx", throttle_axis="ly", deadzone=0.1,
                               enable_button=self.cfg.car_enable_button)

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        return ArmMapperConfig(axes={j: a for j, a in ARM_AXES.items() if j in joints},
                               gripper_joint="gripper" if "gripper" in joints else None,
                               gripper_open="rb", gripper_close="lb", deadzone=0.1)
