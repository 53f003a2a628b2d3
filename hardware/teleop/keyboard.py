"""A terminal keyboard: works over SSH, no display needed.

The terminal is put in cbreak mode (keys arrive one by one, no echo, Ctrl-C still interrupts)
and restored on disconnect, also when the ``with`` block raises. A terminal sends no key-up
events, only a key's byte again at the auto-repeat rate while it is held, so a key press sets
its axis to +-1 for ``hold_s`` and the axis then decays to 0 with time constant ``decay_s``;
a key counts as a held button for ``button_hold_s`` after its last byte.

Default keys (``car`` layout)::

    w / up     throttle +        a / left   steer left (+)     K keep     D discard
    s / down   throttle -        d / right  steer right (-)    S success  (shift: s, d drive)

``arm`` layout: left/right shoulder_pan +/-, up/down shoulder_lift +/-, t/g elbow_flex,
y/h wrist_flex, u/j wrist_roll, o / c open / close the gripper.
Events in both layouts (case-insensitive, except s and d in the car layout, which drive):
k keep, d discard, r re-record, s success, f failure, q quit, space takeover (toggle).
"""

from __future__ import annotations

import math
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hardware.teleop.base import ArmMapperConfig, CarMapperConfig, DeviceState, TeleopDevice
from robolearn.config import InvalidValue

# escape sequences of the keys named in key maps (normal and application cursor mode)
ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
           "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left"}
ESC_PREFIXES = {seq[:i] for seq in ESCAPES for i in range(1, len(seq))}

EVENT_KEYS = {"k": "keep", "d": "discard", "r": "rerecord", "s": "success", "f": "failure",
              "q": "quit", " ": "takeover"}

CAR_KEYS = {"w": "throttle", "up": "throttle", "s": "-throttle", "down": "-throttle",
            "a": "steer", "left": "steer", "d": "-steer", "right": "-steer"}

ARM_KEYS = {"left": "shoulder_pan", "right": "-shoulder_pan", "up": "shoulder_lift",
            "down": "-shoulder_lift", "t": "elbow_flex", "g": "-elbow_flex",
            "y": "wrist_flex", "h": "-wrist_flex", "u": "wrist_roll", "j": "-wrist_roll"}
ARM_BUTTONS = ("o", "c")  # gripper open, close


def default_events(axis_keys: dict[str, str]) -> dict[str, str]:
    """Event keys in both cases, less those that ``axis_keys`` drive with."""
    events = {**EVENT_KEYS, **{k.upper(): e for k, e in EVENT_KEYS.items() if k != " "}}
    return {k: e for k, e in events.items() if k not in axis_keys}


@dataclass
class KeyboardConfig:
    layout: str = "car"  # default key map: "car" (WASD / arrows) or "arm" (see module doc)
    tty: str | None = None  # terminal device to read, e.g. /dev/pts/3; None: stdin
    axis_keys: dict[str, str] | None = None  # key -> axis ("-axis": negative); None: layout's
    events: dict[str, str] | None = None  # key -> event; None: k d r s f q space (see above)
    hold_s: float = 0.1  # s a key's axis stays at +-1 after its last byte
    decay_s: float = 0.15  # s, time constant of the axis decay after hold_s
    button_hold_s: float = 0.6  # s a key counts as held after its last byte (auto-repeat gap)

    def __post_init__(self) -> None:
        if self.layout not in ("car", "arm"):
            raise InvalidValue("layout", f"must be 'car' or 'arm', got {self.layout!r}")
        for key in ("hold_s", "button_hold_s"):
            if not getattr(self, key) >= 0:
                raise InvalidValue(key, f"must be >= 0 s, got {getattr(self, key)}")
        if not self.decay_s > 0:
            raise InvalidValue("decay_s", f"must be > 0 s, got {self.decay_s}")
        if self.axis_keys is None:
            self.axis_keys = dict(CAR_KEYS if self.layout == "car" else ARM_KEYS)
        if self.events is None:
            self.events = default_events(self.axis_keys)
        bad = {e for e in self.events.values() if e not in EVENT_KEYS.values()}
        if bad:
            raise InvalidValue("events", f"unknown event(s) {sorted(bad)}; "
                               f"known: {', '.join(EVENT_KEYS.values())}")
        both = set(self.events) & set(self.axis_keys)
        if both:
            raise InvalidValue("events", f"key(s) {sorted(both)} also drive an axis")


def parse_keys(buf: str) -> tuple[list[str], str]:
    """Split terminal input into key names (``"a"``, ``"up"``...); returns the keys and an
    unfinished escape sequence to prepend to the next read. A lone ESC is ``"esc"``."""
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
            keys.append(buf[i])
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
        self.clock = clock
        self._given_fd = fd
        self.fd: int | None = None
        self._owned = False  # we opened self.fd and close it on disconnect
        self._saved: list | None = None  # terminal attributes to restore
        self._pending = ""
        self._last: dict[str, float] = {}  # key -> time of its last byte

    def connect(self) -> None:
        if self.fd is not None:
            return
        if self._given_fd is not None:
            self.fd = self._given_fd
        elif self.cfg.tty is not None:
            self.fd, self._owned = os.open(self.cfg.tty, os.O_RDWR | os.O_NOCTTY), True
        else:
            self.fd = sys.stdin.fileno()
        if not os.isatty(self.fd):
            fd, self.fd = self.fd, None
            if self._owned:
                os.close(fd)
            raise RuntimeError("keyboard teleop needs a terminal (run it in a TTY / over ssh -t)")
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
        cfg = self.cfg
        assert cfg.axis_keys is not None and cfg.events is not None
        events: list[str] = []
        for key in keys:
            if key in cfg.events:
                events.append(cfg.events[key])
            else:
                self._last[key] = now
        axes: dict[str, float] = {}
        for key, axis in cfg.axis_keys.items():
            if key not in self._last:
                continue
            age = now - self._last[key]
            mag = 1.0 if age <= cfg.hold_s else math.exp(-(age - cfg.hold_s) / cfg.decay_s)
            name, sign = (axis[1:], -1.0) if axis.startswith("-") else (axis, 1.0)
            axes[name] = max(-1.0, min(1.0, axes.get(name, 0.0) + sign * mag))
        held = frozenset(k for k, t in self._last.items() if now - t <= cfg.button_hold_s)
        return DeviceState(axes, held, tuple(events))

    def car_mapping(self) -> CarMapperConfig:
        return CarMapperConfig(steer_axis="steer", throttle_axis="throttle", deadzone=0.05)

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        assert self.cfg.axis_keys is not None
        names = {a.lstrip("-") for a in self.cfg.axis_keys.values()}
        return ArmMapperConfig(axes={j: j for j in joints if j in names},
                               gripper_joint="gripper" if "gripper" in joints else None,
                               gripper_open=ARM_BUTTONS[0], gripper_close=ARM_BUTTONS[1],
                               deadzone=0.05)

