"""A bus of Dynamixel X-series servos behind a pseudo-terminal, speaking Protocol 2.0 byte for
byte (the Koch v1.1 follower: XL430-W250 on ids 1-2, XL330-M288 on ids 3-6).

``python -m hardware.emulators.dynamixel --servos 6 --plant koch`` prints the port path and
serves until SIGINT/SIGTERM (:mod:`hardware.emulators.serve`); lerobot's ``DynamixelMotorsBus``
opens it instead of ``/dev/ttyUSB0``. It shares no code with the SDK it is tested against:

- Instruction packet ``FF FF FD 00 | ID | LEN_L LEN_H | INSTR | params | CRC_L CRC_H``; LEN
  counts the instruction, the (stuffed) params and the CRC; CRC-16 with polynomial 0x8005,
  initial value 0, over everything before it. Byte stuffing: ``FF FF FD`` inside the
  instruction and params is sent as ``FF FF FD FD``; the parser removes the extra ``FD`` after
  checking the CRC, status packets get it added before theirs is computed.
- Status packet: instruction 0x55, then the error byte (error number in bits 0-6, bit 7 the
  hardware alert), then the data.
- PING 0x01 (reply: model number, firmware; broadcast: every servo answers, in id order),
  READ 0x02, WRITE 0x03, REG_WRITE 0x04, ACTION 0x05, FACTORY_RESET 0x06 (not broadcast),
  REBOOT 0x08, SYNC_READ 0x82 and BULK_READ 0x92 (one status packet per listed servo, in list
  order), SYNC_WRITE 0x83 and BULK_WRITE 0x93 (no reply). lerobot 0.6.1 uses PING (and
  broadcast PING to find a motor), READ, WRITE, SYNC_READ and SYNC_WRITE.
- ``Status_Return_Level``: 0 answers PING only, 1 also reads, 2 everything; no servo answers
  a broadcast other than PING. An unknown instruction addressed to one servo is answered with
  Instruction Error; a known one with the wrong parameters is dropped (``malformed``).
- Dropped without a reply and counted in :attr:`DynamixelBus.stats`: a bad CRC (``bad_crc``),
  a header with a reserved byte other than 0, an impossible id or length (``bad_header``), a
  frame whose bytes stop for :data:`FRAME_GAP_S` (``cut_short``), a malformed frame, and a frame
  at a baud rate other than the addressed servos' own (``wrong_baud``: they see noise). After a
  bad frame the parser resynchronises one byte later, so a good frame behind it is served.
  (The e-manual lists a CRC error number, 3; this emulator does not answer a frame whose CRC
  fails, as its id cannot be trusted.)
- Wire time: a reply is written when it would have finished arriving on a real bus at the
  line's baud rate: the request's bytes, the servo's ``Return_Delay_Time``, then the reply's
  bytes (10 bits a byte), one servo after the other.
- Bus_Watchdog: every instruction packet at a servo's baud for its id or the broadcast id
  feeds its watchdog; the serving thread wakes at the earliest deadline, so a host that goes
  silent has the servo stopped within the period (see :mod:`hardware.emulators.xl_servos`).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hardware.emulators import serve
from hardware.emulators.plants import IdealPlant, Plant
from hardware.emulators.pty_link import PtyLink
from hardware.emulators.xl_servos import (
    INSTRUCTION_ERROR,
    MODELS,
    XL330_M288,
    XL430_W250,
    Model,
    XServo,
)

BROADCAST = 0xFE
MAX_ID = 0xFC
MAX_PACKET = 1024  # bytes, header to CRC
FRAME_GAP_S = 0.005  # a frame whose bytes stop for this long was cut short
HEADER = b"\xff\xff\xfd"
STATUS = 0x55
PING, READ, WRITE, REG_WRITE, ACTION, FACTORY_RESET, REBOOT = 0x01, 0x02, 0x03, 0x04, 0x05, \
    0x06, 0x08
SYNC_READ, SYNC_WRITE, BULK_READ, BULK_WRITE = 0x82, 0x83, 0x92, 0x93
KOCH_MODELS: tuple[Model, ...] = (XL430_W250, XL430_W250) + (XL330_M288,) * 4  # ids 1..6


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x8005 if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: Iterable[int]) -> int:
    """CRC-16/BUYPASS (polynomial 0x8005, initial 0, no reflection), as Protocol 2.0 uses."""
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert ``FD`` after every ``FF FF FD`` (``body``: instruction and params)."""
    return body.replace(HEADER, HEADER + b"\xfd")


def unstuff(body: bytes) -> bytes:
    return body.replace(HEADER + b"\xfd", HEADER)


def packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A whole packet, stuffed and with its CRC: an instruction packet, or a status packet
    (``instruction`` 0x55, ``params`` starting with the error byte)."""
    body = stuff(bytes((instruction,)) + params)
    head = HEADER + bytes((0, servo_id)) + (len(body) + 2).to_bytes(2, "little") + body
    return head + crc16(head).to_bytes(2, "little")


def status(servo_id: int, error: int, data: bytes = b"") -> bytes:
    return packet(servo_id, STATUS, bytes((error,)) + data)


Reply = tuple[XServo, bytes]  # the servo answering, its status packet


@dataclass(frozen=True)
class Frame:
    servo_id: int
    instruction: int
    params: bytes  # unstuffed
    size: int  # bytes on the wire


class FrameParser:
    """Bytes in, whole instruction packets out; what cannot be one is counted (``stats``:
    ``frames``, ``bad_crc``, ``bad_header``, ``cut_short``) and dropped."""

    def __init__(self, gap_s: float = FRAME_GAP_S) -> None:
        self.gap_s = gap_s
        self.stats: Counter[str] = Counter()
        self._buf = bytearray()
        self._last = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def feed(self, data: bytes, now: float) -> list[Frame]:
        frames = self.expire(now)
        self._buf += data
        self._last = now
        return frames + list(self._frames())

    def expire(self, now: float) -> list[Frame]:
        """A frame whose bytes stopped ``gap_s`` ago was cut short: drop its header and look
        for whole frames in what followed it."""
        if not self._buf or now - self._last <= self.gap_s:
            return []
        frames = []
        while self._buf:
            frames += self._frames()
            if self._buf:  # an incomplete frame at the front: it will never be completed
                self.stats["cut_short"] += 1
                del self._buf[0]
        return frames

    def _frames(self) -> list[Frame]:
        buf = self._buf
        out: list[Frame] = []
        while True:
            start = buf.find(HEADER)
            if start < 0:  # keep a tail that may start the next header
                keep = 2 if buf.endswith(b"\xff\xff") else 1 if buf.endswith(b"\xff") else 0
                del buf[:len(buf) - keep]
                return out
            del buf[:start]
            if len(buf) < 7:
                return out
            length = buf[5] | buf[6] << 8
            if buf[3] != 0 or buf[4] in (0xFD, 0xFF) or (buf[4] > MAX_ID and buf[4] != BROADCAST) \
                    or length < 3 or length + 7 > MAX_PACKET:
                self.stats["bad_header"] += 1
                del buf[0]
                continue
            size = length + 7
            if len(buf) < size:
                return out
            if crc16(buf[:size - 2]) != buf[size - 2] | buf[size - 1] << 8:
                self.stats["bad_crc"] += 1
                del buf[0]  # resynchronise inside the bad frame
                continue
            body = unstuff(bytes(buf[7:size - 2]))
            out.append(Frame(buf[4], body[0], body[1:], size))
            del buf[:size]
            self.stats["frames"] += 1


class DynamixelBus:
    """Servos on one link: parses what the driver sends, lets each servo act, answers.

    ``timing=False`` answers at once (fuzzing, unit tests); ``baud`` is the line speed assumed
    where the link cannot tell the one the driver set."""

    def __init__(self, servos: list[XServo], link: PtyLink | None = None, *,
                 baud: int = 1_000_000, timing: bool = True) -> None:
        ids = [s.id for s in servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two servos share an id: {sorted(ids)}")
        self.servos = servos
        self.link = link
        self.baud = baud
        self.timing = timing
        self.parser = FrameParser()
        self.stats = self.parser.stats
        self.lock = threading.RLock()  # held while a frame is served; hold it to look inside
        self._wire_free = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: dict[int, Callable[[Frame, list[XServo]], list[Reply]]] = {
            PING: self._ping, READ: self._read, WRITE: self._write, REG_WRITE: self._reg_write,
            ACTION: self._action, FACTORY_RESET: self._factory_reset, REBOOT: self._reboot,
            SYNC_READ: self._sync_read, SYNC_WRITE: self._sync_write,
            BULK_READ: self._bulk_read, BULK_WRITE: self._bulk_write}

    @property
    def port(self) -> str:
        if self.link is None:
            raise RuntimeError("this bus has no link")
        return self.link.port

    def servo(self, servo_id: int) -> XServo:
        return next(s for s in self.servos if s.id == servo_id)

    # ------------------------------------------------------------------ serving
    def receive(self, data: bytes) -> list[bytes]:
        """Serve the bytes the driver sent; returns the replies (already written to the link,
        each at its wire time, when there is one)."""
        with self.lock:
            now = time.monotonic()
            return [p for frame in self.parser.feed(data, now)
                    for _, p in self._serve(frame, now)]

    def poll(self, now: float | None = None) -> list[bytes]:
        """What happens with no new bytes: frames cut short expire, watchdogs fire."""
        with self.lock:
            now = time.monotonic() if now is None else now
            replies = [p for frame in self.parser.expire(now) for _, p in self._serve(frame, now)]
            for s in self.servos:
                s.check_watchdog(now)
            return replies

    def next_deadline(self) -> float | None:
        """The earliest time a servo's watchdog fires if nothing comes (None: none will)."""
        deadlines = [d for s in self.servos if (d := s.watchdog_deadline()) is not None]
        return min(deadlines, default=None)

    def _serve(self, frame: Frame, now: float) -> list[Reply]:
        for s in self.servos:  # a watchdog due before this frame arrived fires first
            s.check_watchdog(now)
        line = self.link.baud() if self.link is not None else None
        addressed = [s for s in self.servos if frame.servo_id in (BROADCAST, s.id)]
        listening = [s for s in addressed if line is None or s.baud == line]
        if addressed and not listening:
            self.stats["wrong_baud"] += 1
        for s in listening:
            s.note_packet(now)
        handler = self._handlers.get(frame.instruction)
        try:
            if handler is None:
                self.stats["unknown_instruction"] += 1
                replies = [(s, status(s.id, s.error_byte(INSTRUCTION_ERROR)))
                           for s in listening if frame.servo_id != BROADCAST]
            else:
                replies = handler(frame, listening)
        except _Malformed:
            self.stats["malformed"] += 1
            return []
        self._send(replies, frame.size, line or self.baud, now)
        return replies

    def _send(self, replies: list[Reply], request_size: int, baud: int, now: float) -> None:
        byte_s = 10.0 / baud
        t = max(now, self._wire_free) + request_size * byte_s
        for servo, reply in replies:
            t += servo.return_delay_s + len(reply) * byte_s
            if self.link is not None:
                if self.timing:
                    _sleep_until(t)
                self.link.write(reply)
        self._wire_free = t

    def start(self) -> DynamixelBus:
        """Serve the link from a daemon thread until :meth:`stop`."""
        if self.link is None:
            raise RuntimeError("start() needs a link")
        self._thread = threading.Thread(target=self._run, name="dynamixel-emulator", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.link is not None
        while not self._stop.is_set():
            with self.lock:
                waits = [FRAME_GAP_S] if self.parser.pending else []
                deadline = self.next_deadline()
            if deadline is not None:
                waits.append(max(0.0, deadline - time.monotonic()))
            data = self.link.read(min(waits, default=None))
            if data:
                self.receive(data)
            else:
                self.poll()

    def stop(self) -> None:
        self._stop.set()
        if self.link is not None:
            self.link.wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.link is not None:
            self.link.close()

    def __enter__(self) -> DynamixelBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ instructions
    def _ping(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        _expect(frame, 0)
        return [(s, status(s.id, s.error_byte(), s.ping_data()))
                for s in sorted(servos, key=lambda s: s.id)]

    def _read(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        _expect(frame, 4)
        if frame.servo_id == BROADCAST:
            raise _Malformed
        address, length = _u16(frame.params, 0), _u16(frame.params, 2)
        return [_read_reply(s, address, length) for s in servos if s.status_return_level >= 1]

    def _write(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        if len(frame.params) < 3:
            raise _Malformed
        address, data = _u16(frame.params, 0), frame.params[2:]
        return _acked(frame, servos, lambda s: s.write(address, data))

    def _reg_write(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        if len(frame.params) < 3:
            raise _Malformed
        address, data = _u16(frame.params, 0), frame.params[2:]
        return _acked(frame, servos, lambda s: s.reg_write(address, data))

    def _action(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        _expect(frame, 0)
        return _acked(frame, servos, XServo.action)

    def _factory_reset(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        _expect(frame, 1)
        if frame.servo_id == BROADCAST:
            raise _Malformed
        return _acked(frame, servos, lambda s: s.factory_reset(frame.params[0]))

    def _reboot(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        _expect(frame, 0)
        replies = _acked(frame, servos, lambda s: 0)  # it answers, then restarts
        for s in servos:
            s.reboot()
        return replies

    def _sync_read(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        params = frame.params
        if frame.servo_id != BROADCAST or len(params) < 5:
            raise _Malformed
        address, length = _u16(params, 0), _u16(params, 2)
        by_id = {s.id: s for s in servos if s.status_return_level >= 1}
        return [_read_reply(by_id[i], address, length) for i in params[4:] if i in by_id]

    def _bulk_read(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        params = frame.params
        if frame.servo_id != BROADCAST or not params or len(params) % 5:
            raise _Malformed
        by_id = {s.id: s for s in servos if s.status_return_level >= 1}
        return [_read_reply(by_id[params[k]], _u16(params, k + 1), _u16(params, k + 3))
                for k in range(0, len(params), 5) if params[k] in by_id]

    def _sync_write(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        params = frame.params
        if frame.servo_id != BROADCAST or len(params) < 4:
            raise _Malformed
        address, length = _u16(params, 0), _u16(params, 2)
        blocks = params[4:]
        if length == 0 or not blocks or len(blocks) % (length + 1):
            raise _Malformed
        by_id = {s.id: s for s in servos}
        for k in range(0, len(blocks), length + 1):
            if (target := by_id.get(blocks[k])) is not None:
                target.write(address, blocks[k + 1:k + 1 + length])
        return []

    def _bulk_write(self, frame: Frame, servos: list[XServo]) -> list[Reply]:
        params, writes, k = frame.params, [], 0
        if frame.servo_id != BROADCAST or not params:
            raise _Malformed
        while k < len(params):  # id, address, length, data: checked whole before any lands
            if k + 5 > len(params) or k + 5 + _u16(params, k + 3) > len(params) \
                    or _u16(params, k + 3) == 0:
                raise _Malformed
            length = _u16(params, k + 3)
            writes.append((params[k], _u16(params, k + 1), params[k + 5:k + 5 + length]))
            k += 5 + length
        by_id = {s.id: s for s in servos}
        for servo_id, address, data in writes:
            if (target := by_id.get(servo_id)) is not None:
                target.write(address, data)
        return []


class _Malformed(Exception):
    """A frame with a good CRC that no servo can act on."""


def _expect(frame: Frame, n: int) -> None:
    if len(frame.params) != n:
        raise _Malformed


def _u16(data: bytes, at: int) -> int:
    return data[at] | data[at + 1] << 8


def _read_reply(servo: XServo, address: int, length: int) -> Reply:
    error, data = servo.read(address, length)
    return servo, status(servo.id, servo.error_byte(error), data)


def _acked(frame: Frame, servos: list[XServo], act: Callable[[XServo], int]) -> list[Reply]:
    """Let each servo ``act`` (it returns an error number); the one addressed by id answers
    when its Status_Return_Level is 2, under the id the frame used (a servo whose ID was just
    written still answers the driver that asked)."""
    replies = []
    for s in servos:
        level = s.status_return_level  # before the write: the reply rule in force
        error = act(s)
        if frame.servo_id != BROADCAST and level >= 2:
            replies.append((s, status(frame.servo_id, s.error_byte(error))))
    return replies


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def make_bus(n_servos: int = 6, plant: Plant | None = None, *,
             models: list[Model] | None = None, baud: int = 1_000_000, timing: bool = True,
             link: PtyLink | None = None) -> DynamixelBus:
    """``n_servos`` servos with ids 1..n on a new pty (not yet served: ``start()`` or
    ``with``), set up for ``baud`` as lerobot's ``setup_motor`` leaves them, moving the joints
    of ``plant`` (default: an :class:`IdealPlant`). ``models`` default: the Koch v1.1
    follower's (XL430-W250 on ids 1-2, XL330-M288 from id 3 on)."""
    ids = list(range(1, n_servos + 1))
    if models is None:
        models = [KOCH_MODELS[i - 1] if i <= len(KOCH_MODELS) else XL330_M288 for i in ids]
    if len(models) != n_servos:
        raise ValueError(f"make_bus: {n_servos} servos but {len(models)} models")
    plant = plant if plant is not None else IdealPlant(ids)
    return DynamixelBus([XServo(i, m, plant, baud=baud) for i, m in zip(ids, models, strict=True)],
                        link if link is not None else PtyLink(), baud=baud, timing=timing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hardware.emulators.dynamixel",
                                 description="Emulate a bus of Dynamixel X-series servos (the "
                                             "Koch v1.1 follower's) on a pseudo-terminal; "
                                             "prints its path, serves until killed.")
    ap.add_argument("--servos", type=int, default=6,
                    help="number of servos, ids 1..N (1-2 XL430-W250, the rest XL330-M288)")
    ap.add_argument("--baud", type=int, default=1_000_000,
                    help="the servos' line speed, as lerobot sets them up (bit/s)")
    ap.add_argument("--no-timing", action="store_true",
                    help="answer at once instead of at the bytes' wire time")
    ap.add_argument("--plant", choices=("ideal", "koch"), default="ideal",
                    help="what the servos move: ideal joints, or the simulated arm of sim/arm "
                         "(the SO-101 model, with the Koch's joint names; 6 servos)")
    ap.add_argument("--model", choices=sorted(MODELS), default=None,
                    help="every servo of this model (default: the Koch follower's: XL430-W250 "
                         "on ids 1-2, XL330-M288 after; the Koch leader's are xl330-m077)")
    serve.add_arguments(ap, "koch")
    args = ap.parse_args(argv)
    if not 1 <= args.servos <= MAX_ID:
        ap.error(f"--servos must be in 1..{MAX_ID}, got {args.servos}")
    if args.baud not in XL330_M288.bauds:
        ap.error(f"--baud must be one of {list(XL330_M288.bauds)}, got {args.baud}")
    plant: Plant | None = None
    if args.plant == "koch":
        if args.servos != 6:
            ap.error(f"--plant koch has 6 joints: use --servos 6, not {args.servos}")
        from hardware.emulators.so101_plant import KOCH_SERVO_JOINTS, SO101Plant

        plant = SO101Plant(servo_map=KOCH_SERVO_JOINTS)
    models = None if args.model is None else [MODELS[args.model]] * args.servos
    bus = make_bus(args.servos, plant, models=models, baud=args.baud, timing=not args.no_timing)
    return serve.serve(ap, args, bus, plant, "koch")


if __name__ == "__main__":
    sys.exit(main())
