"""A gamepad through pygame's SDL GameController API (Xbox / PlayStation / most USB pads).

SDL's controller database maps every known pad onto one layout, so the names below mean the
same button on any pad. pygame is imported on connect; no window is opened
(``SDL_VIDEODRIVER=dummy``) and background input is allowed, so it works over SSH.

Axes: ``lx``, ``ly``, ``rx``, ``ry`` in [-1, 1] (right and up positive), ``lt``, ``rt`` in
[0, 1], ``trig`` = rt - lt. Buttons: a b x y back guide start ls rs lb rb up down left right.

Car: left stick x steers, left stick y throttles, only while ``rb`` is held (deadman).
Arm: lx shoulder_pan, ly shoulder_lift, ry elbow_flex, rx wrist_flex, trig wrist_roll,
rb / lb open / close the gripper. Events on press (:data:`DRIVE_EVENTS`, :data:`READY_EVENTS`,
:data:`REVIEW_EVENTS`): before an episode start starts recording and back quits; while
driving start ends the episode and b toggles a takeover; after it a keeps, y keeps as a
success, x as a failure, b discards, back re-records. The guide button is left alone (desktops
and Steam take it).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hardware.teleop.base import (
    ArmMapperConfig,
    CarMapperConfig,
    DeviceError,
    DeviceState,
    TeleopDevice,
    check_events,
)
from robolearn_core.config import InvalidValue

AXES = ("lx", "ly", "rx", "ry", "lt", "rt")  # SDL_GameControllerAxis order
BUTTONS = ("a", "b", "x", "y", "back", "guide", "start", "ls", "rs", "lb", "rb",
           "up", "down", "left", "right")  # SDL_GameControllerButton order

ARM_AXES = {"shoulder_pan": "-lx", "shoulder_lift": "ly", "elbow_flex": "ry",
            "wrist_flex": "-rx", "wrist_roll": "trig"}
GRIPPER_BUTTONS = ("rb", "lb")  # open, close


DRIVE_EVENTS = {"start": "end", "b": "takeover"}
READY_EVENTS = {"start": "start", "back": "quit"}
QUERY_EVENTS = {"a": "approve", "x": "reject"}
REVIEW_EVENTS = {"a": "keep", "y": "success", "x": "failure", "b": "discard", "back": "rerecord"}


@dataclass
class GamepadConfig:
    index: int = 0  # which connected game controller (0: the first)
    events: dict[str, str] = field(default_factory=lambda: dict(DRIVE_EVENTS))  # (button -> event
    #   on press while driving): start ends the episode, b toggles a takeover
    ready_events: dict[str, str] = field(default_factory=lambda: dict(READY_EVENTS))  # (button ->
    #   event before an episode): start starts recording, back quits
    review_events: dict[str, str] = field(default_factory=lambda: dict(REVIEW_EVENTS))  # (button ->
    #   event after an episode): a keep, y success, x failure, b discard, back re-record
    query_events: dict[str, str] = field(default_factory=lambda: dict(QUERY_EVENTS))  # (button ->
    #   event when the robot asks about its plan): a approve, x reject
    car_enable_button: str | None = "rb"  # deadman for driving a car; None: drive on any input

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InvalidValue("index", f"must be >= 0, got {self.index}")
        for key, mode in (("events", "drive"), ("ready_events", "ready"),
                          ("review_events", "review"), ("query_events", "query")):
            unknown = sorted(set(getattr(self, key)) - set(BUTTONS))
            if unknown:
                raise InvalidValue(key, f"unknown button(s) {unknown}; known: "
                                   f"{', '.join(BUTTONS)}")
            check_events(key, getattr(self, key), mode)
        if self.car_enable_button is not None and self.car_enable_button not in BUTTONS:
            raise InvalidValue("car_enable_button", f"unknown button {self.car_enable_button!r}")
        driving = sorted(set(self.events) & {self.car_enable_button, *GRIPPER_BUTTONS})
        if driving:
            raise InvalidValue("events", f"button(s) {driving} also drive the robot "
                                         "(deadman or gripper)")


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
    axis_labels: ClassVar[Mapping[str, tuple[str, tuple[str, str] | None]]] = {
        "lx": ("left stick x", ("right", "left")), "ly": ("left stick y", ("up", "down")),
        "rx": ("right stick x", ("right", "left")), "ry": ("right stick y", ("up", "down")),
        "trig": ("triggers", ("rt", "lt")), "lt": ("lt", ("pressed", "released")),
        "rt": ("rt", ("pressed", "released"))}

    @classmethod
    def config_for(cls, kind: str, **cfg: Any) -> GamepadConfig:
        return GamepadConfig(**cfg)

    def __init__(self, cfg: GamepadConfig | None = None) -> None:
        self.cfg = cfg or GamepadConfig()
        self.maps = {"drive": self.cfg.events, "ready": self.cfg.ready_events,
                     "review": self.cfg.review_events, "query": self.cfg.query_events}
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
            with warnings.catch_warnings():  # pygame 2.6 imports the deprecated pkg_resources
                warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
                import pygame
                from pygame._sdl2 import controller
        except ImportError as exc:
            raise DeviceError("teleop=gamepad needs pygame, which is not installed: "
                              "pip install 'pygame>=2.6'") from exc
        pygame.display.init()  # the event pump (dummy video driver: no window)
        pygame.joystick.init()
        controller.init()
        pygame.event.pump()
        n, i = pygame.joystick.get_count(), self.cfg.index
        if i >= n:
            raise DeviceError(f"teleop=gamepad: no game controller found at index {i} ({n} "
                              "connected): plug one in (Linux: your user needs read access to "
                              "/dev/input/event*), or choose another teleop_config.index")
        if not controller.is_controller(i):
            raise DeviceError(f"teleop=gamepad: joystick {i} is not a game controller SDL "
                              "knows: add its mapping to SDL_GAMECONTROLLERCONFIG")
        self._pg, self._pad = pygame, controller.Controller(i)
        self._held = frozenset()

    def disconnect(self) -> None:
        if self._pad is None:
            return
        self._pad.quit()
        self._pad = None

    def event_map(self, mode: str) -> Mapping[str, str]:
        return self.maps[mode]

    def read(self) -> DeviceState:
        """Axes and buttons now; an event for each mapped button pressed since the last read
        (a button already held when the mode changed sends nothing)."""
        assert self._pad is not None, "gamepad: not connected (use `with device:`)"
        self._pg.event.pump()
        raw = [self._pad.get_axis(i) for i in range(len(AXES))]
        pressed = [bool(self._pad.get_button(i)) for i in range(len(BUTTONS))]
        axes, held = normalise(raw, pressed)
        table = self.maps[self.mode]
        events = tuple(table[b] for b in BUTTONS
                       if b in held and b not in self._held and b in table)
        self._held = held
        return DeviceState(axes, held, events)

    def car_mapping(self) -> CarMapperConfig:
        return CarMapperConfig(steer_axis="-lx", throttle_axis="ly", deadzone=0.1,
                               enable_button=self.cfg.car_enable_button)

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        return ArmMapperConfig(axes={j: a for j, a in ARM_AXES.items() if j in joints},
                               gripper_joint="gripper" if "gripper" in joints else None,
                               gripper_open=GRIPPER_BUTTONS[0],
                               gripper_close=GRIPPER_BUTTONS[1], deadzone=0.1)
