"""The host side of the RC-car serial protocol (``hardware/rc_car/PROTOCOL.md``).

A frame on the wire is ``COBS(payload + CRC16) + b"\\x00"``; the payload is a type byte and a
little-endian body. The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF),
which the standard library computes as ``binascii.crc_hqx(payload, 0xFFFF)``; COBS comes from the
``cobs`` package. The firmware (C) implements the same in ``firmware/rc_core.c``.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from cobs import cobs

PROTOCOL_VERSION = 1
NEUTRAL_US = 1500
PULSE_MIN_US, PULSE_MAX_US = 1000, 2000
TIMEOUT_MIN_MS, TIMEOUT_MAX_MS = 20, 90

HELLO, ARM, DRIVE, DISARM, STATUS = 0x01, 0x02, 0x03, 0x04, 0x05
HELLO_REPLY, TELEMETRY = 0x81, 0x83

FLAG_LINKED, FLAG_ARMED, FLAG_FAILSAFE = 0x01, 0x02, 0x04
FLAG_WDT_RESET, FLAG_READY, FLAG_RX_OVERFLOW = 0x08, 0x10, 0x20

_TELEMETRY = struct.Struct("<HBIIIIHHHHHH")  # 31 bytes after the type byte
_HELLO_REPLY = struct.Struct("<BBBHB")


class FrameError(ValueError):
    """A received frame failed its COBS, CRC, length or type check (what, in the message)."""


def crc16(data: bytes) -> int:
    return binascii.crc_hqx(data, 0xFFFF)


def encode(payload: bytes) -> bytes:
    """One wire frame: COBS(payload + CRC16 little-endian) + delimiter."""
    return cobs.encode(payload + struct.pack("<H", crc16(payload))) + b"\x00"


def decode(frame: bytes) -> bytes:
    """The payload of one frame (without its 0x00 delimiter); raises :class:`FrameError`."""
    try:
        raw = cobs.decode(frame)
    except cobs.DecodeError as exc:
        raise FrameError(f"bad COBS ({exc})") from None
    if len(raw) < 3:
        raise FrameError(f"too short ({len(raw)} bytes)")
    body, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
    if crc16(body) != crc:
        raise FrameError(f"CRC mismatch (got {crc:#06x}, computed {crc16(body):#06x})")
    return body


def hello(version: int = PROTOCOL_VERSION) -> bytes:
    return encode(bytes((HELLO, version)))


def arm(seq: int, timeout_ms: int) -> bytes:
    return encode(struct.pack("<BHH", ARM, seq & 0xFFFF, timeout_ms))


def drive(seq: int, steer_us: int, esc_us: int) -> bytes:
    return encode(struct.pack("<BHHH", DRIVE, seq & 0xFFFF, steer_us, esc_us))


def disarm(seq: int) -> bytes:
    return encode(struct.pack("<BH", DISARM, seq & 0xFFFF))


def status() -> bytes:
    return encode(bytes((STATUS,)))


@dataclass(frozen=True)
class HelloReply:
    version: int
    firmware: str  # "major.minor"
    default_timeout_ms: int
    watchdog_reset: bool  # the firmware's last boot came from its hardware watchdog


@dataclass(frozen=True)
class Telemetry:
    last_seq: int
    flags: int
    time_us: int  # firmware clock (wraps at 2**32)
    ticks: int  # encoder edges since boot (wraps at 2**32)
    last_edge_us: int
    edge_interval_us: int  # between the last two edges; 0: fewer than two edges
    steer_us: int  # pulse widths being output now
    esc_us: int
    bad_frames: int  # frames the firmware dropped (COBS, CRC, length)
    invalid_cmds: int  # well-formed commands it refused (range, sequence, state, version)
    failsafes: int
    rx_overflows: int

    @property
    def armed(self) -> bool:
        return bool(self.flags & FLAG_ARMED)

    @property
    def failsafe(self) -> bool:
        return bool(self.flags & FLAG_FAILSAFE)

    @property
    def ready(self) -> bool:
        return bool(self.flags & FLAG_READY)

    @property
    def linked(self) -> bool:
        return bool(self.flags & FLAG_LINKED)


def parse(payload: bytes) -> HelloReply | Telemetry:
    """A decoded payload as a message; raises :class:`FrameError` for an unknown or short one."""
    kind, body = payload[0], payload[1:]
    if kind == TELEMETRY and len(body) == _TELEMETRY.size:
        return Telemetry(*_TELEMETRY.unpack(body))
    if kind == HELLO_REPLY and len(body) == _HELLO_REPLY.size:
        version, major, minor, timeout, boot = _HELLO_REPLY.unpack(body)
        return HelloReply(version, f"{major}.{minor}", timeout, bool(boot & FLAG_WDT_RESET))
    raise FrameError(f"unknown message type {kind:#04x} with {len(body)} body bytes")


class FrameReader:
    """Splits a byte stream into frames at each 0x00; a frame longer than ``max_len`` is
    dropped (counted in ``oversize``) instead of growing without bound on garbage."""

    def __init__(self, max_len: int = 64) -> None:
        self._buf = bytearray()
        self._skip = False
        self.max_len = max_len
        self.oversize = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return frames
            self._append(data[start:end])
            if not self._skip and self._buf:
                frames.append(bytes(self._buf))
            self._buf.clear()
            self._skip = False
            start = end + 1

    def _append(self, part: bytes) -> None:
        if self._skip:
            return
        self._buf += part
        if len(self._buf) > self.max_len:
            self._buf.clear()
            self._skip = True
            self.oversize += 1
