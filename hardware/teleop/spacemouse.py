"""A 3Dconnexion SpaceMouse read from its Linux hidraw node: no driver, no extra package.

HID report format (the one pyspacemouse's ``devices.toml`` and spacenavd decode), each report
starting with its report ID:

* ID 1, 7 bytes (SpaceNavigator, SpaceMouse Compact / Pro, wired): translation x, y, z as
  int16 little-endian at bytes 1..6. ID 1, 13 bytes (SpaceMouse Wireless, Pro Wireless,
  Enterprise, Universal Receiver): translation then rotation rx, ry, rz at bytes 7..12.
* ID 2, 7 bytes (older devices): rotation rx, ry, rz as int16 little-endian at bytes 1..6.
* ID 3: buttons, a little-endian bitmask from byte 1 (bit 0: left / menu, bit 1: right / fit).

Values span about +-350 counts. Axes are reported like pyspacemouse's: ``x`` right, ``y``
forward (-raw y), ``z`` up (-raw z), ``pitch`` (-rx), ``roll`` (-ry), ``yaw`` (rz), each
divided by ``full_scale`` and clipped to [-1, 1]. Buttons are named ``btn0``, ``btn1``...

Buttons: while driving a car, btn1 ends the episode and btn0 toggles a takeover; an arm's
gripper takes both (open: btn1, close: btn0), so its episodes run to the step limit unless
``events`` binds other buttons. Before an episode btn1 starts recording and btn0 quits; after
it btn1 keeps and btn0 discards.

Linux needs read access to the node: a udev rule such as
``KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0666"`` (046d for older devices).
"""

from __future__ import annotations

import errno
import glob
import os
import select
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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

VENDORS = (0x046D, 0x256F)  # Logitech (older 3Dconnexion), 3Dconnexion
TRANSLATION = ("x", "y", "z")
ROTATION = ("pitch", "roll", "yaw")
SIGNS = {"x": 1, "y": -1, "z": -1, "pitch": -1, "roll": -1, "yaw": 1}
GRIPPER_BUTTONS = ("btn1", "btn0")  # open, close
# default button -> event maps: while driving (per layout), before and after an episode
DRIVE_EVENTS: dict[str, dict[str, str]] = {"car": {"btn1": "end", "btn0": "takeover"}, "arm": {}}
READY_EVENTS = {"btn1": "start", "btn0": "quit"}
QUERY_EVENTS = {"btn1": "approve", "btn0": "reject"}
REVIEW_EVENTS = {"btn1": "keep", "btn0": "discard"}


@dataclass(frozen=True)
class Report:
    """One decoded HID report: raw counts of the axes it carries, or the buttons held."""

    axes: dict[str, int]  # axis name -> signed counts (pyspacemouse's signs applied)
    buttons: frozenset[int] | None  # indices of the buttons held; None: not a button report


def parse_report(data: bytes) -> Report | None:
    """Decode one SpaceMouse HID report (see the module doc); None for reports it ignores
    (LED, battery...) or that are too short."""
    if len(data) < 2:
        return None
    rid = data[0]
    if rid in (1, 2) and len(data) >= 7:
        n = 6 if rid == 1 and len(data) >= 13 else 3
        values = struct.unpack_from(f"<{n}h", data, 1)
        names = (TRANSLATION + ROTATION)[:n] if rid == 1 else ROTATION
        return Report({k: SIGNS[k] * v for k, v in zip(names, values, strict=True)}, None)
    if rid == 3:
        mask = int.from_bytes(data[1:], "little")
        return Report({}, frozenset(i for i in range(mask.bit_length()) if mask >> i & 1))
    return None


def find_hidraw(vendors: Sequence[int] = VENDORS) -> str | None:
    """The first /dev/hidrawN whose USB/Bluetooth vendor is one of ``vendors``."""
    for node in sorted(glob.glob("/sys/class/hidraw/hidraw*")):
        uevent = Path(node, "device", "uevent")
        try:
            hid_id = next(line for line in uevent.read_text().splitlines()
                          if line.startswith("HID_ID="))
        except (OSError, StopIteration):
            continue
        _, vendor, _ = hid_id.split("=", 1)[1].split(":")
        if int(vendor, 16) in vendors:
            return f"/dev/{os.path.basename(node)}"
    return None


@dataclass
class SpaceMouseConfig:
    path: str | None = None  # hidraw node, e.g. /dev/hidraw3; None: the first 3Dconnexion one
    full_scale: float = 350.0  # counts read as a full deflection (1.0)
    layout: str = "arm"  # robot kind the default events are for: "car" or "arm"
    events: dict[str, str] | None = None  # (button: btn0, btn1... -> event on press while
    #   driving); None: the layout's (car: btn1 end, btn0 takeover; arm: none, both grip)
    ready_events: dict[str, str] = field(default_factory=lambda: dict(READY_EVENTS))  # (button ->
    #   event before an episode): btn1 starts recording, btn0 quits
    review_events: dict[str, str] = field(default_factory=lambda: dict(REVIEW_EVENTS))  # (button ->
    #   event after an episode): btn1 keep, btn0 discard
    query_events: dict[str, str] = field(default_factory=lambda: dict(QUERY_EVENTS))  # (button ->
    #   event when the robot asks about its plan): btn1 approve, btn0 reject

    def __post_init__(self) -> None:
        if not self.full_scale > 0:
            raise InvalidValue("full_scale", f"must be > 0 counts, got {self.full_scale}")
        if self.layout not in DRIVE_EVENTS:
            raise InvalidValue("layout", f"must be 'car' or 'arm', got {self.layout!r}")
        if self.events is None:
            self.events = dict(DRIVE_EVENTS[self.layout])
        check_events("events", self.events, "drive")
        check_events("ready_events", self.ready_events, "ready")
        check_events("review_events", self.review_events, "review")
        check_events("query_events", self.query_events, "query")
        gripper = sorted(set(self.events) & set(GRIPPER_BUTTONS)) if self.layout == "arm" else []
        if gripper:
            raise InvalidValue("events", f"button(s) {gripper} drive the arm's gripper")


class SpaceMouseDevice(TeleopDevice):
    """Reads every pending report from the hidraw node (or an open ``fd`` delivering one HID
    report per read) on each :meth:`read`; axes keep their last reported value."""

    name = "spacemouse"
    axis_labels: ClassVar[Mapping[str, tuple[str, tuple[str, str] | None]]] = {
        "x": ("cap sideways", ("right", "left")), "y": ("cap forward/back", ("forward", "back")),
        "z": ("cap up/down", ("up", "down")), "pitch": ("cap tilt (pitch)", None),
        "roll": ("cap tilt (roll)", None), "yaw": ("cap twist", ("left", "right"))}

    @classmethod
    def config_for(cls, kind: str, **cfg: Any) -> SpaceMouseConfig:
        """Config for a ``"car"`` or ``"arm"`` robot: the default events follow the robot."""
        return SpaceMouseConfig(**{"layout": kind, **cfg})

    def __init__(self, cfg: SpaceMouseConfig | None = None, fd: int | None = None) -> None:
        self.cfg = cfg or SpaceMouseConfig()
        self._given_fd = fd
        self.fd: int | None = None
        self._owned = False
        assert self.cfg.events is not None
        self.maps = {"drive": self.cfg.events, "ready": self.cfg.ready_events,
                     "review": self.cfg.review_events, "query": self.cfg.query_events}
        self._counts = dict.fromkeys(TRANSLATION + ROTATION, 0)
        self._held: frozenset[str] = frozenset()

    def connect(self) -> None:
        if self.fd is not None:
            return
        if self._given_fd is not None:
            self.fd = self._given_fd
            return
        path = self.cfg.path or find_hidraw()
        if path is None:
            raise DeviceError("teleop=spacemouse: no 3Dconnexion device found (no /dev/hidraw* "
                              "of vendor 046d or 256f): plug it in, or set "
                              "teleop_config.path=/dev/hidrawN")
        try:
            self.fd, self._owned = os.open(path, os.O_RDONLY | os.O_NONBLOCK), True
        except PermissionError as exc:
            raise DeviceError(f"teleop=spacemouse: no permission to read {path}: add a udev "
                              "rule (see hardware/teleop/spacemouse.py)") from exc
        except OSError as exc:
            raise DeviceError(f"teleop=spacemouse: cannot open {path}: {exc.strerror}; check "
                              "teleop_config.path") from exc

    def disconnect(self) -> None:
        if self.fd is not None and self._owned:
            os.close(self.fd)
        self.fd, self._owned = None, False

    def read(self) -> DeviceState:
        assert self.fd is not None, "spacemouse: not connected (use `with device:`)"
        held = self._held
        events: list[str] = []
        while select.select([self.fd], [], [], 0)[0]:
            try:
                data = os.read(self.fd, 64)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
            if not data:
                break
            report = parse_report(data)
            if report is None:
                continue
            self._counts.update(report.axes)
            if report.buttons is not None:
                new = frozenset(f"btn{i}" for i in report.buttons)
                table = self.maps[self.mode]
                events += [table[b] for b in sorted(new - held) if b in table]
                held = new
        self._held = held
        s = self.cfg.full_scale
        axes = {k: max(-1.0, min(1.0, v / s)) for k, v in self._counts.items()}
        return DeviceState(axes, held, tuple(events))

    def event_map(self, mode: str) -> Mapping[str, str]:
        return self.maps[mode]

    def car_mapping(self) -> CarMapperConfig:
        # tilt/twist the cap: yaw (twist left) steers left, push forward (y) throttles
        return CarMapperConfig(steer_axis="yaw", throttle_axis="y", deadzone=0.1)

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        axes = {"shoulder_pan": "yaw", "shoulder_lift": "y", "elbow_flex": "z",
                "wrist_flex": "pitch", "wrist_roll": "roll"}
        return ArmMapperConfig(axes={j: a for j, a in axes.items() if j in joints},
                               gripper_joint="gripper" if "gripper" in joints else None,
                               gripper_open=GRIPPER_BUTTONS[0],
                               gripper_close=GRIPPER_BUTTONS[1], deadzone=0.1)
