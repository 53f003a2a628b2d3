"""A terminal keyboard: works over SSH, no display needed.

The terminal is put in cbreak mode (keys arrive one by one, no echo, Ctrl-C still interrupts)
and restored on disconnect, also when the ``with`` block raises. A terminal sends no key-up
events, only a key's byte again at the auto-repeat rate while it is held, so a key press sets
its axis to +-1 for ``hold_s`` and the axis then decays to 0 with time constant ``decay_s``;
a key counts as a held button for ``button_hold_s`` after its last byte.

Default keys: :data:`CAR_KEYS` or :data:`ARM_KEYS` (with the gripper's :data:`ARM_BUTTONS`)
drive; :data:`DRIVE_EVENTS`, :data:`READY_EVENTS` and :data:`REVIEW_EVENTS` send events while
driving, before and after an episode. ``robolearn collect`` prints the table of them, README
"Teleop keys" lists it (a test holds it equal to these tables).

Driving keys act only while driving, so s and d can decide after an episode; letters are
case-insensitive there. A driving key still held when an episode ends repeats: its bytes are
ignored until it has been released for ``settle_s``.
"""

from __future__ import annotations

import math
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hardware.teleop.base import (
    ArmMapperConfig,
    CarMapperConfig,
    DeviceError,
    DeviceState,
    TeleopDevice,
    check_events,
)
from robolearn_core.config import InvalidValue

# escape sequences of the keys named in key maps (normal and application cursor mode)
ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
           "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left"}
ESC_PREFIXES = {seq[:i] for seq in ESCAPES for i in range(1, len(seq))}
NAMED = {"\r": "enter", "\n": "enter", " ": "space", "\t": "tab", "\x7f": "backspace",
         "\x08": "backspace"}  # other keys are named by their character

CAR_KEYS = {"w": "throttle", "up": "throttle", "s": "-throttle", "down": "-throttle",
            "a": "steer", "left": "steer", "d": "-steer", "right": "-steer"}
CAR_TEXT = {"throttle": "throttle (forward)", "-throttle": "brake / reverse",
            "steer": "steer left", "-steer": "steer right"}

ARM_KEYS = {"left": "shoulder_pan", "right": "-shoulder_pan", "up": "shoulder_lift",
            "down": "-shoulder_lift", "t": "elbow_flex", "g": "-elbow_flex",
            "y": "wrist_flex", "h": "-wrist_flex", "u": "wrist_roll", "j": "-wrist_roll"}
ARM_BUTTONS = ("o", "c")  # gripper open, close

DRIVE_EVENTS = {"enter": "end", "space": "takeover", "?": "help", "h": "help"}
READY_EVENTS = {"enter": "start", "q": "quit", "?": "help", "h": "help"}
QUERY_EVENTS = {"y": "approve", "n": "reject", "?": "help", "h": "help"}
REVIEW_EVENTS = {"k": "keep", "s": "success", "f": "failure", "d": "discard", "r": "rerecord",
                 "?": "help", "h": "help"}


def driving_keys(layout: str, axis_keys: Mapping[str, str]) -> set[str]:
    """The keys that move the robot in ``layout``: its axis keys and the gripper buttons."""
    return set(axis_keys) | (set(ARM_BUTTONS) if layout == "arm" else set())


@dataclass
class KeyboardConfig:
    layout: str = "car"  # default key map: "car" (WASD / arrows) or "arm" (see module doc)
    tty: str | None = None  # terminal device to read, e.g. /dev/pts/3; None: stdin
    axis_keys: dict[str, str] | None = None  # key -> axis ("-axis": negative); None: layout's
    events: dict[str, str] | None = None  # key -> event while driving (None: those of enter (end),
    #   space (takeover), ? h (help) that the layout does not drive with)
    ready_events: dict[str, str] = field(default_factory=lambda: dict(READY_EVENTS))  # (key ->
    #   event before an episode): enter start, q quit, ? h help
    review_events: dict[str, str] = field(default_factory=lambda: dict(REVIEW_EVENTS))  # (key ->
    #   event after an episode): k keep, s success, f failure, d discard, r re-record
    query_events: dict[str, str] = field(default_factory=lambda: dict(QUERY_EVENTS))  # (key ->
    #   event when the robot asks about its plan): y approve, n reject
    hold_s: float = 0.1  # s a key's axis stays at +-1 after its last byte
    decay_s: float = 0.15  # s, time constant of the axis decay after hold_s
    button_hold_s: float = 0.6  # s a key counts as held after its last byte (auto-repeat gap)
    settle_s: float = 0.4  # s a driving key must be released before it counts after driving

    def __post_init__(self) -> None:
        if self.layout not in ("car", "arm"):
            raise InvalidValue("layout", f"must be 'car' or 'arm', got {self.layout!r}")
        for key in ("hold_s", "button_hold_s", "settle_s"):
            if not getattr(self, key) >= 0:
                raise InvalidValue(key, f"must be >= 0 s, got {getattr(self, key)}")
        if not self.decay_s > 0:
            raise InvalidValue("decay_s", f"must be > 0 s, got {self.decay_s}")
        if self.axis_keys is None:
            self.axis_keys = dict(CAR_KEYS if self.layout == "car" else ARM_KEYS)
        driving = driving_keys(self.layout, self.axis_keys)
        if self.events is None:
            self.events = {k: e for k, e in DRIVE_EVENTS.items() if k not in driving}
        check_events("events", self.events, "drive")
        check_events("ready_events", self.ready_events, "ready")
        check_events("review_events", self.review_events, "review")
        check_events("query_events", self.query_events, "query")
        both = set(self.events) & driving
        if both:
            raise InvalidValue("events", f"key(s) {sorted(both)} also drive the robot")


def parse_keys(buf: str) -> tuple[list[str], str]:
    """Split terminal input into key names (``"a"``, ``"up"``, ``"enter"``, ``"space"``...);
    returns the keys and an unfinished escape sequence to prepend to the next read. A lone ESC
    is ``"esc"``."""
    keys: list[str] = []
    i = 0
    while i < len(buf):
        if buf[i] == "\x1b":
            for seq, name in ESCAPES.items():
                if buf.startswith(seq, i):
                    keys.append(name)
                    i += len(seq)
                    break
            else:
                if buf[i:] in ESC_PREFIXES:
                    return keys, buf[i:]
                keys.append("esc")
                i += 1
        else:
            keys.append(NAMED.get(buf[i], buf[i]))
            i += 1
    return keys, ""


class KeyboardDevice(TeleopDevice):
    """Keys read raw from a terminal (stdin, a tty path, or an open ``fd``)."""

    name = "keyboard"

    @classmethod
    def config_for(cls, kind: str, **cfg: object) -> KeyboardConfig:
        """Config for a ``"car"`` or ``"arm"`` robot: the layout follows the robot."""
        return KeyboardConfig(**{"layout": kind, **cfg})  # type: ignore[arg-type]

    def __init__(self, cfg: KeyboardConfig | None = None, fd: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg or KeyboardConfig()
        assert self.cfg.axis_keys is not None and self.cfg.events is not None
        self.axis_keys: dict[str, str] = self.cfg.axis_keys
        self.driving = driving_keys(self.cfg.layout, self.axis_keys)
        self.maps = {"drive": self.cfg.events, "ready": self.cfg.ready_events,
                     "review": self.cfg.review_events, "query": self.cfg.query_events}
        self.clock = clock
        self._given_fd = fd
        self.fd: int | None = None
        self._owned = False  # we opened self.fd and close it on disconnect
        self._saved: list | None = None  # terminal attributes to restore
        self._pending = ""
        self._last: dict[str, float] = {}  # key -> time of its last byte
        self._settle_until = 0.0  # driving keys are ignored until then (see settle_s)

    def connect(self) -> None:
        if self.fd is not None:
            return
        where = self.cfg.tty or "stdin"
        if self._given_fd is not None:
            self.fd = self._given_fd
        elif self.cfg.tty is not None:
            try:
                self.fd = os.open(self.cfg.tty, os.O_RDWR | os.O_NOCTTY)
            except OSError as exc:
                raise DeviceError(f"teleop=keyboard: cannot open the terminal {self.cfg.tty}: "
                                  f"{exc.strerror}; check teleop_config.tty") from exc
            self._owned = True
        else:
            try:
                self.fd = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):  # closed, or replaced by a non-file
                self.fd = -1
        if self.fd < 0 or not os.isatty(self.fd):
            fd, self.fd = self.fd, None
            if self._owned:
                os.close(fd)
                self._owned = False
            raise DeviceError(f"teleop=keyboard: {where} is not a terminal, and the keyboard "
                              "is read from one: run the command in a terminal (over SSH: "
                              "ssh -t), or set teleop_config.tty=/dev/pts/N")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)

    def disconnect(self) -> None:
        if self.fd is None:
            return
        try:
            if self._saved is not None:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        finally:
            if self._owned:
                os.close(self.fd)
            self.fd, self._saved, self._owned = None, None, False
            self._last.clear()

    def event_map(self, mode: str) -> Mapping[str, str]:
        return self.maps[mode]

    def set_mode(self, mode: str) -> None:
        if self.mode == "drive" and mode != "drive":  # keys held while driving still repeat
            self._settle_until = self.clock() + self.cfg.settle_s
            self._last.clear()
        super().set_mode(mode)

    def _read_bytes(self) -> str:
        assert self.fd is not None, "keyboard: not connected (use `with device:`)"
        chunks = []
        while select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1024)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def read(self) -> DeviceState:
        keys, self._pending = parse_keys(self._pending + self._read_bytes())
        now = self.clock()
        if self.mode != "drive":
            return DeviceState(events=self._menu_events(keys, now))
        cfg, table = self.cfg, self.maps["drive"]
        events: list[str] = []
        for key in keys:
            if key in table:
                events.append(table[key])
            else:
                self._last[key] = now
        axes: dict[str, float] = {}
        for key, axis in self.axis_keys.items():
            if key not in self._last:
                continue
            age = now - self._last[key]
            mag = 1.0 if age <= cfg.hold_s else math.exp(-(age - cfg.hold_s) / cfg.decay_s)
            name, sign = (axis[1:], -1.0) if axis.startswith("-") else (axis, 1.0)
            axes[name] = max(-1.0, min(1.0, axes.get(name, 0.0) + sign * mag))
        held = frozenset(k for k, t in self._last.items() if now - t <= cfg.button_hold_s)
        return DeviceState(axes, held, tuple(events))

    def _menu_events(self, keys: list[str], now: float) -> tuple[str, ...]:
        """Events of ``keys`` outside driving: letters case-insensitive; a driving key counts
        only once no byte of a driving key has come for ``settle_s`` (auto-repeat ended)."""
        table = self.maps[self.mode]
        events = []
        for key in keys:
            if key.lower() in self.driving and now < self._settle_until:
                self._settle_until = now + self.cfg.settle_s
                continue
            event = table.get(key, table.get(key.lower()))
            if event is not None:
                events.append(event)
        return tuple(events)

    def motion(self, kind: str, joints: Sequence[str]) -> dict[str, str]:
        rows = {}
        for key, axis in self.axis_keys.items():
            name = axis.lstrip("-")
            rows[key] = CAR_TEXT.get(axis) or f"{name} {'-' if axis.startswith('-') else '+'}"
        if self.cfg.layout == "arm" and "gripper" in joints:
            rows.update({ARM_BUTTONS[0]: "gripper open", ARM_BUTTONS[1]: "gripper close"})
        return rows

    def car_mapping(self) -> CarMapperConfig:
        return CarMapperConfig(steer_axis="steer", throttle_axis="throttle", deadzone=0.05)

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        names = {a.lstrip("-") for a in self.axis_keys.values()}
        return ArmMapperConfig(axes={j: j for j in joints if j in names},
                               gripper_joint="gripper" if "gripper" in joints else None,
                               gripper_open=ARM_BUTTONS[0], gripper_close=ARM_BUTTONS[1],
                               deadzone=0.05)
