"""Teleoperation: a human input device behind one small interface, and mappers to robot actions.

A :class:`TeleopDevice` (keyboard, gamepad, SpaceMouse, a leader arm...) only reports what the
human does, as a :class:`DeviceState`: named axes normalised to [-1, 1], the buttons held,
one-shot events, and for a device that is itself an arm (a leader arm) its joints' ``pose``.
Which events its keys or buttons send depends on the device's mode (:data:`MODE_EVENTS`):
``ready`` before an episode (start, quit), ``drive`` while recording (end, takeover) and
``review`` after an episode (keep, success, failure, discard, rerecord); the driving keys
act only in ``drive``, so a key may drive and, in another mode, decide. A mapper turns that
state into a robot action: :class:`CarMapper` for [steering, throttle] robots, :class:`ArmMapper`
for joint-position robots (each axis moves one joint target at a rate in rad/s); a device may
bring its own (a leader arm's pose mapper: absolute joint targets). :class:`Teleop`
joins the two and implements the control loop's ``Teleop`` protocol: ``get_action(obs)`` returns
an action while the human drives (and for ``hold_s`` after the last input, as HIL-SERL holds an
intervention), else None so that a policy drives.

Axis names in mapper configs may start with ``-`` to invert the axis (``"-lx"``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from robolearn_core.config import ConfigError, InvalidValue

# mode -> the events a device may send in it
MODE_EVENTS: dict[str, tuple[str, ...]] = {
    "ready": ("start", "quit", "help"),  # before an episode: nothing moves, nothing is recorded
    "drive": ("end", "takeover", "help"),  # recording: the driving keys move the robot
    "review": ("keep", "success", "failure", "discard", "rerecord", "help"),  # after an episode
    "query": ("approve", "reject", "help"),  # the robot asks about its plan (robolearn improve)
}
MODES = tuple(MODE_EVENTS)
EVENT_TEXT = {  # what each event does, as key tables and prompts say it
    "start": "start recording", "quit": "quit", "help": "show the keys",
    "end": "end the episode", "takeover": "take over / hand back (toggle)",
    "keep": "keep (the task's verdict)", "success": "keep as a success",
    "failure": "keep as a failure", "discard": "discard", "rerecord": "re-record (same start)",
    "approve": "approve the robot's plan", "reject": "reject it, then drive (takeover hands back)",
}


class DeviceError(ConfigError):
    """The configured teleop device cannot be used (not connected, no permission, no
    terminal); the message names the device and what to do."""


def check_events(key: str, events: Mapping[str, str], mode: str) -> None:
    """Raise :class:`InvalidValue` on ``key`` if ``events`` (input -> event) sends an event
    that ``mode`` does not have."""
    bad = sorted(set(events.values()) - set(MODE_EVENTS[mode]))
    if bad:
        raise InvalidValue(key, f"event(s) {bad} do not exist in {mode} mode; "
                                f"known there: {', '.join(MODE_EVENTS[mode])}")


@dataclass(frozen=True)
class DeviceState:
    """What the human does at one instant."""

    axes: dict[str, float] = field(default_factory=dict)  # name -> value in [-1, 1]
    buttons: frozenset[str] = frozenset()  # names of the buttons held now
    events: tuple[str, ...] = ()  # one-shot events since the previous read, oldest first
    pose: dict[str, float] = field(default_factory=dict)  # joint -> position, rad (sim_arm's
    #   units), of a device that is an arm (a leader arm); empty for other devices

    def axis(self, name: str) -> float:
        """Value of axis ``name`` (``"-name"``: inverted); 0 for an axis the device lacks."""
        if name.startswith("-"):
            return -self.axes.get(name[1:], 0.0)
        return self.axes.get(name, 0.0)


class TeleopDevice(ABC):
    """A human input device. ``with device:`` connects and always disconnects.

    ``mode`` (:data:`MODES`) selects which of the device's event maps turns presses into
    events; :meth:`set_mode` switches it."""

    name: str = "device"  # registry name, e.g. "keyboard"
    mode: str = "drive"
    kinds: ClassVar[tuple[str, ...]] = ("car", "arm")  # the robot kinds it can drive
    default_hold_s: ClassVar[float] = 0.5  # Teleop's hold_s when the config does not set it
    # device axis -> (what the human moves, (direction that reads +1, direction that reads -1))
    axis_labels: ClassVar[Mapping[str, tuple[str, tuple[str, str] | None]]] = {}

    @classmethod
    @abstractmethod
    def config_for(cls, kind: str, **cfg: Any) -> Any:
        """This device's config for a ``"car"`` or ``"arm"`` robot, with ``cfg`` overrides;
        the device is built as ``cls(config)``."""

    @abstractmethod
    def connect(self) -> None:
        """Open the device (terminal, joystick, HID node)."""

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device and restore anything changed; safe to call twice."""

    @abstractmethod
    def read(self) -> DeviceState:
        """Poll without blocking: the current axes and buttons, and the events since last read."""

    @abstractmethod
    def event_map(self, mode: str) -> Mapping[str, str]:
        """Input (key or button name) -> the event it sends in ``mode``."""

    def set_mode(self, mode: str) -> None:
        """Send ``mode``'s events from now on (devices drop inputs still held from before)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        self.mode = mode

    def motion(self, kind: str, joints: Sequence[str]) -> dict[str, str]:
        """Input -> what it moves while driving a ``"car"`` or ``"arm"`` robot with these
        joints, from the default mappings (for key tables)."""
        rows: dict[str, str] = {}
        if kind == "car":
            car = self.car_mapping()
            for axis, target in ((car.steer_axis, "steering"), (car.throttle_axis, "throttle")):
                label, text = self.describe_axis(axis, target)
                rows[label] = text
            enable = car.enable_button
        else:
            arm = self.arm_mapping(joints)
            for joint, axis in arm.axes.items():
                label, text = self.describe_axis(axis, joint)
                rows[label] = text
            if arm.gripper_joint is not None:
                for button, text in ((arm.gripper_open, "open"), (arm.gripper_close, "close")):
                    if button is not None:
                        rows[button] = f"{arm.gripper_joint} {text}"
            enable = arm.enable_button
        if enable is not None:
            rows[enable] = "hold to drive (deadman)"
        return rows

    def describe_axis(self, axis: str, target: str) -> tuple[str, str]:
        """(what the human moves, what it does) for device axis ``axis`` ("-" inverts)."""
        name, inverted = axis.lstrip("-"), axis.startswith("-")
        label, directions = self.axis_labels.get(name, (name, None))
        if directions is None:
            return label, f"{target}, inverted" if inverted else target
        return label, f"{target} ({directions[inverted]} +)"

    def own_mapper(self, joints: Sequence[str], low: np.ndarray, high: np.ndarray
                   ) -> Mapper | None:
        """A mapper of the device's own for an arm with these joints and action bounds (a
        leader arm's absolute pose), or None: the registry's :class:`ArmMapper`."""
        return None

    @abstractmethod
    def car_mapping(self) -> CarMapperConfig:
        """Default mapping of this device's axes and buttons for a [steering, throttle] robot."""

    @abstractmethod
    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        """Default mapping of this device's axes and buttons for a robot with these joints."""

    def __enter__(self) -> TeleopDevice:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


def deadzone(value: float, width: float) -> float:
    """0 inside ``[-width, width]``, rescaled so the output still spans [-1, 1] outside it."""
    v = float(np.clip(value, -1.0, 1.0))
    if abs(v) <= width:
        return 0.0
    return float(np.sign(v) * (abs(v) - width) / (1.0 - width))


def _check_deadzone(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise InvalidValue("deadzone", f"must be in [0, 1), got {value}")


# --------------------------------------------------------------------------- mappers
class Mapper(ABC):
    """Device state -> robot action. ``__call__`` returns ``(action, active)``: the action to
    send if the human drives now, and whether the human gives input this instant."""

    # the action is where the device is (a leader arm's pose), meaningful without input: when
    # no policy runs (:attr:`Teleop.alone`) it is sent every step, moving or not
    absolute: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, state: DeviceState, obs: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, bool]: ...

    def release(self) -> None:
        """The human let go: forget anything held across steps."""

    def reset(self) -> None:
        """A new episode: forget everything (default: as :meth:`release`)."""
        self.release()


@dataclass
class CarMapperConfig:
    steer_axis: str = "steer"  # device axis -> steering (+1 = full left); "-name" inverts
    throttle_axis: str = "throttle"  # device axis -> throttle (+1 = full forward)
    deadzone: float = 0.05  # |axis| below this counts as no input; the rest rescales to [0, 1]
    steer_scale: float = 1.0  # steering at full axis deflection, fraction of the robot's range
    throttle_scale: float = 1.0  # throttle at full axis deflection, fraction of full throttle
    enable_button: str | None = None  # deadman: drives only while held; None: any axis input

    def __post_init__(self) -> None:
        _check_deadzone(self.deadzone)
        for key in ("steer_scale", "throttle_scale"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise InvalidValue(key, f"must be in (0, 1], got {getattr(self, key)}")


class CarMapper(Mapper):
    """Axes -> ``[steering, throttle]``, clipped to the robot's action bounds."""

    def __init__(self, cfg: CarMapperConfig, low: np.ndarray, high: np.ndarray) -> None:
        if np.shape(low) != (2,) or np.shape(high) != (2,):
            raise ValueError(f"CarMapper: expected (2,) bounds, got {np.shape(low)}")
        self.cfg = cfg
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)

    def __call__(self, state: DeviceState, obs: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, bool]:
        c = self.cfg
        steer = deadzone(state.axis(c.steer_axis), c.deadzone) * c.steer_scale
        throttle = deadzone(state.axis(c.throttle_axis), c.deadzone) * c.throttle_scale
        if c.enable_button is not None:
            active = c.enable_button in state.buttons
            if not active:
                steer = throttle = 0.0
        else:
            active = steer != 0.0 or throttle != 0.0
        return np.clip(np.array([steer, throttle]), self.low, self.high), active


@dataclass
class ArmMapperConfig:
    axes: dict[str, str] = field(default_factory=dict)  # joint name -> device axis ("-" inverts)
    joint_rate: float = 0.5  # rad/s of a joint target at full axis deflection
    gripper_joint: str | None = "gripper"  # joint moved by the open/close buttons; None: none
    gripper_open: str | None = None  # button that opens (raises the gripper target) while held
    gripper_close: str | None = None  # button that closes (lowers the gripper target) while held
    gripper_rate: float = 1.5  # rad/s of the gripper target while a gripper button is held
    deadzone: float = 0.05  # |axis| below this counts as no input
    enable_button: str | None = None  # deadman: moves only while held; None: any input

    def __post_init__(self) -> None:
        _check_deadzone(self.deadzone)
        for key in ("joint_rate", "gripper_rate"):
            if not getattr(self, key) > 0:
                raise InvalidValue(key, f"must be > 0 rad/s, got {getattr(self, key)}")


class ArmMapper(Mapper):
    """Axes -> absolute joint targets moving at a joint-space velocity.

    While the human drives, each mapped axis moves its joint's target by ``axis * joint_rate *
    dt`` per call (``dt``: the control period), the gripper buttons move the gripper target;
    targets start at the robot's current joint positions (read from ``obs[state_key]`` at
    ``state_index``) when an intervention begins, and are clipped to the action bounds.
    """

    def __init__(self, cfg: ArmMapperConfig, joints: Sequence[str], low: np.ndarray,
                 high: np.ndarray, dt: float, state_key: str = "observation.state",
                 state_index: Sequence[int] | None = None) -> None:
        self.cfg, self.joints = cfg, tuple(joints)
        unknown = set(cfg.axes) - set(self.joints)
        if cfg.gripper_joint is not None and cfg.gripper_joint not in self.joints:
            unknown.add(cfg.gripper_joint)
        if unknown:
            raise ValueError(f"ArmMapper: unknown joint(s) {sorted(unknown)}; "
                             f"robot joints: {', '.join(self.joints)}")
        if not dt > 0:
            raise ValueError(f"ArmMapper: dt must be > 0 s, got {dt}")
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.dt, self.state_key = float(dt), state_key
        self.state_index = list(state_index if state_index is not None
                                else range(len(self.joints)))
        self._axis = [(self.joints.index(j), ax) for j, ax in cfg.axes.items()]
        self._grip = None if cfg.gripper_joint is None else self.joints.index(cfg.gripper_joint)
        self.target: np.ndarray | None = None  # the joint targets being driven, (J,)

    def current(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The robot's joint positions in ``obs``, (J,)."""
        return np.asarray(obs[self.state_key], np.float64)[self.state_index]

    def __call__(self, state: DeviceState, obs: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, bool]:
        c = self.cfg
        vel = np.zeros(len(self.joints))
        for j, ax in self._axis:
            vel[j] += deadzone(state.axis(ax), c.deadzone) * c.joint_rate
        if self._grip is not None:
            grip = (c.gripper_open in state.buttons) - (c.gripper_close in state.buttons)
            vel[self._grip] += grip * c.gripper_rate
        if c.enable_button is not None:
            active = c.enable_button in state.buttons
            if not active:
                vel[:] = 0.0
        else:
            active = bool(np.any(vel != 0.0))
        if self.target is None:
            self.target = np.clip(self.current(obs), self.low, self.high)
        self.target = np.clip(self.target + vel * self.dt, self.low, self.high)
        return self.target.copy(), active

    def release(self) -> None:
        self.target = None


# --------------------------------------------------------------------------- device + mapper
@dataclass
class TeleopConfig:
    hold_s: float = 0.5  # s an intervention lasts after the last input (HIL-SERL: 0.5 s)

    def __post_init__(self) -> None:
        if not self.hold_s >= 0:
            raise InvalidValue("hold_s", f"must be >= 0 s, got {self.hold_s}")


class Teleop:
    """A device and a mapper: the control loop's ``Teleop`` (``get_action(obs)``).

    Returns the mapped action while the human gives input and for ``hold_s`` after it; the
    "takeover" event toggles a takeover in which the action is returned even without input
    (the human holds the robot still). Otherwise returns None. Events are kept for
    :meth:`poll_events` (``end`` an episode, ``help``). Call it with the device in ``drive``
    mode (:meth:`set_mode`).

    ``alone`` (set by ``collect``: no policy runs) makes an absolute device (a leader arm,
    :attr:`Mapper.absolute`) drive every step, still or not; with a policy it drives only
    while it moves, and for ``hold_s`` after (its takeover).
    """

    def __init__(self, device: TeleopDevice, mapper: Mapper, cfg: TeleopConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device, self.mapper = device, mapper
        self.cfg = cfg or TeleopConfig()
        self.clock = clock
        self.takeover = False  # toggled by the "takeover" event
        self.active = False  # the last read had real input (an axis or button moved)
        self.alone = False  # no policy runs: an absolute device drives every step
        self._last_input: float | None = None
        self._events: list[str] = []
        self.buttons: frozenset[str] = frozenset()  # held at the last read (deploy's deadman)

    def held(self) -> frozenset[str]:
        """The buttons held at the last :meth:`get_action` (the control loop reads the device
        once a step, before the policy)."""
        return self.buttons

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        state = self.device.read()
        self.buttons = state.buttons
        for event in state.events:
            if event == "takeover":
                self.takeover = not self.takeover
            self._events.append(event)
        action, active = self.mapper(state, obs)
        self.active = bool(active)
        now = self.clock()
        if active:
            self._last_input = now
        holding = self._last_input is not None and now - self._last_input <= self.cfg.hold_s
        if active or holding or self.takeover or (self.alone and self.mapper.absolute):
            return action.astype(np.float32)
        self._last_input = None
        self.mapper.release()
        return None

    def poll_events(self) -> list[str]:
        """Events since the previous call, oldest first."""
        events, self._events = self._events, []
        return events

    def set_mode(self, mode: str) -> None:
        """The device's mode (:data:`MODES`); leaving ``drive`` ends any intervention."""
        self.device.set_mode(mode)
        if mode != "drive":
            self.reset()

    def reset(self) -> None:
        """New episode: no intervention held, no takeover, no pending events."""
        self.takeover, self._last_input, self._events = False, None, []
        self.mapper.reset()

    def __enter__(self) -> Teleop:
        self.device.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.device.disconnect()
