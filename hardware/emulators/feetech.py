"""A bus of Feetech STS3215 servos behind a pseudo-terminal, speaking protocol 0 byte for byte.

``python -m hardware.emulators.feetech --servos 6`` prints the port path (``/dev/pts/N``) and
serves until killed; any driver that talks to a Feetech bus through a serial port (lerobot's
``FeetechMotorsBus``, Feetech's SDK) opens that path instead of ``/dev/ttyACM0``. An independent
implementation of the protocol (it shares no code with the SDK it is tested against):

- Instruction packet ``FF FF ID LEN INSTR P1..Pn CHK``, ``LEN = n + 2``,
  ``CHK = ~(ID + LEN + INSTR + sum(P)) & 0xFF``; status packet ``FF FF ID LEN ERR D1..Dn CHK``.
- PING 0x01, READ 0x02 (addr, n), WRITE 0x03 (addr, data), REG_WRITE 0x04 and ACTION 0x05,
  RESET 0x06, SYNC_READ 0x82 (addr, n, ids: one status packet per listed servo, in list
  order), SYNC_WRITE 0x83 (addr, n, then id + n bytes per servo). Broadcast id 0xFE: every
  servo obeys and none replies, except to PING (each servo answers, in id order).
- Dropped without a reply, changing nothing: a bad checksum, a frame cut short (its bytes stop
  for :data:`FRAME_GAP_S`), a malformed frame (wrong parameter count), an unknown instruction,
  a READ to the broadcast id, and everything a servo receives at a baud rate other than its
  own ``Baud_Rate`` (it sees noise). After a bad frame the parser resynchronises one byte
  later, as the servo's does, so a good frame right behind a broken one is still served.
- Wire time: a reply is written when it would have finished arriving on a real bus at the
  line's baud rate: the request's bytes, the servo's ``Return_Delay_Time``, then the reply's
  bytes (10 bits a byte), one servo after the other for a SYNC_READ.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hardware.emulators import serve
from hardware.emulators.plants import IdealPlant, Plant
from hardware.emulators.pty_link import PtyLink
from hardware.emulators.sts3215 import STS3215

log = logging.getLogger(__name__)

BROADCAST = 0xFE
MAX_ID = 0xFC
MAX_PACKET = 250  # bytes, header to checksum
FRAME_GAP_S = 0.005  # a frame whose bytes stop for this long was cut short: forget it
PING, READ, WRITE, REG_WRITE, ACTION, RESET, SYNC_READ, SYNC_WRITE = (
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x82, 0x83)


def checksum(body: Iterable[int]) -> int:
    """``~sum & 0xFF`` over everything between the header and the checksum."""
    return ~sum(body) & 0xFF


def packet(servo_id: int, code: int, params: bytes = b"") -> bytes:
    """A whole packet: an instruction (``code`` = instruction) or a status (``code`` = error)."""
    body = bytes((servo_id, len(params) + 2, code)) + params
    return b"\xff\xff" + body + bytes((checksum(body),))


Reply = tuple[STS3215, bytes]  # the servo answering, its status packet


@dataclass(frozen=True)
class Frame:
    servo_id: int
    instruction: int
    params: bytes
    size: int  # bytes on the wire


class FrameParser:
    """Bytes in, whole instruction packets out; what cannot be a packet is counted and
    dropped (``stats``: ``frames``, ``bad_checksum``, ``bad_header``, ``cut_short``)."""

    def __init__(self, gap_s: float = FRAME_GAP_S) -> None:
        self.gap_s = gap_s
        self.stats: Counter[str] = Counter()
        self._buf = bytearray()
        self._last = 0.0

    def feed(self, data: bytes, now: float | None = None) -> list[Frame]:
        now = time.monotonic() if now is None else now
        self.expire(now)
        self._buf += data
        self._last = now
        return list(self._frames())

    def expire(self, now: float) -> None:
        """Forget a frame whose bytes stopped coming ``gap_s`` ago."""
        if self._buf and now - self._last > self.gap_s:
            self.stats["cut_short"] += 1
            self._buf.clear()

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def _frames(self) -> Iterable[Frame]:
        buf = self._buf
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:  # keep a lone 0xFF: it may start the next header
                del buf[:len(buf) - 1 if buf[-1:] == b"\xff" else len(buf)]
                return
            del buf[:start]
            if len(buf) < 4:
                return
            servo_id, length = buf[2], buf[3]
            if servo_id == 0xFF:  # FF FF FF: the header starts one byte later
                del buf[0]
                continue
            if servo_id > BROADCAST or servo_id == 0xFD or length < 2 \
                    or length + 4 > MAX_PACKET:
                self.stats["bad_header"] += 1
                del buf[0]
                continue
            size = length + 4
            if len(buf) < size:
                return
            if checksum(buf[2:size - 1]) != buf[size - 1]:
                self.stats["bad_checksum"] += 1
                del buf[0]  # resynchronise inside the bad frame
                continue
            frame = Frame(servo_id, buf[4], bytes(buf[5:size - 1]), size)
            del buf[:size]
            self.stats["frames"] += 1
            yield frame


class FeetechBus:
    """Servos on one link: parses what the driver sends, lets each servo act, answers.

    ``timing=False`` answers at once (fuzzing, unit tests); ``baud`` is the line speed assumed
    where the link cannot tell the one the driver set."""

    def __init__(self, servos: list[STS3215], link: PtyLink | None = None, *,
                 baud: int = 1_000_000, timing: bool = True, corrupt: float = 0.0,
                 seed: int = 0) -> None:
        ids = [s.id for s in servos]
        if len(set(ids)) != len(ids):
            raise ValueError(f"two servos share an id: {sorted(ids)}")
        self.servos = servos
        self.link = link
        self.baud = baud
        self.timing = timing
        if not 0.0 <= corrupt <= 1.0:
            raise ValueError(f"corrupt must be a probability in [0, 1], got {corrupt}")
        self.corrupt = corrupt  # chance that a reply is damaged on the wire (see _damage)
        self._rng = random.Random(seed)
        self.parser = FrameParser()
        self.stats = self.parser.stats
        self.lock = threading.RLock()  # held while a frame is served; hold it to look inside
        self._wire_free = 0.0  # when the wire is quiet again (monotonic seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handlers: dict[int, Callable[[Frame, list[STS3215]], list[Reply]]] = {
            PING: self._ping, READ: self._read, WRITE: self._write, REG_WRITE: self._reg_write,
            ACTION: self._action, RESET: self._reset, SYNC_READ: self._sync_read,
            SYNC_WRITE: self._sync_write}

    @property
    def port(self) -> str:
        if self.link is None:
            raise RuntimeError("this bus has no link")
        return self.link.port

    def servo(self, servo_id: int) -> STS3215:
        return next(s for s in self.servos if s.id == servo_id)

    # ------------------------------------------------------------------ serving
    def receive(self, data: bytes) -> list[bytes]:
        """Serve the bytes the driver sent; returns the replies (already written to the link,
        each at its wire time, when there is one)."""
        with self.lock:
            now = time.monotonic()
            replies = []
            for frame in self.parser.feed(data, now):
                replies += [p for _, p in self._serve(frame, now)]
            return replies

    def _serve(self, frame: Frame, now: float) -> list[Reply]:
        line = self.link.baud() if self.link is not None else None
        baud = line or self.baud
        listening = [s for s in self.servos if line is None or s.baud == line]
        handler = self._handlers.get(frame.instruction)
        if handler is None:
            self.stats["unknown_instruction"] += 1
            return []
        if frame.servo_id != BROADCAST:
            listening = [s for s in listening if s.id == frame.servo_id]
        try:
            replies = handler(frame, listening)
        except _Malformed:
            self.stats["malformed"] += 1
            return []
        self._send(replies, frame.size, baud, now)
        return replies

    def _send(self, replies: list[Reply], request_size: int, baud: int, now: float) -> None:
        byte_s = 10.0 / baud
        t = max(now, self._wire_free) + request_size * byte_s
        for servo, reply in replies:
            t += servo.return_delay_s + len(reply) * byte_s
            if self.corrupt and self._rng.random() < self.corrupt:
                reply = self._damage(reply)
            if self.link is not None:
                if self.timing:
                    _sleep_until(t)
                if reply:
                    self.link.write(reply)
        self._wire_free = t

    def _damage(self, reply: bytes) -> bytes:
        """A reply as a noisy or broken wire delivers it (counted in ``stats["damaged_*"]``):
        one bit flipped, cut short, bytes replaced by noise, noise before it, lost, or
        ``forged``: data bytes replaced and the checksum made to match (what random noise
        does one time in 256 with an 8-bit checksum, here made common)."""
        rng, data = self._rng, bytearray(reply)
        kinds = ("bitflip", "truncated", "noise", "prefix", "lost", "forged")
        kind = rng.choice(kinds if len(data) > 6 else kinds[:-1])
        self.stats[f"damaged_{kind}"] += 1
        if kind == "bitflip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "truncated":
            del data[rng.randrange(1, len(data)):]
        elif kind == "noise":
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "prefix":
            data[:0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind == "forged":
            for _ in range(rng.randint(1, 2)):
                data[rng.randrange(5, len(data) - 1)] = rng.randrange(256)
            data[-1] = checksum(data[2:-1])
        else:
            data.clear()
        return bytes(data)

    def start(self) -> FeetechBus:
        """Serve the link from a daemon thread until :meth:`stop`."""
        if self.link is None:
            raise RuntimeError("start() needs a link")
        self._thread = threading.Thread(target=self._run, name="feetech-emulator", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.link is not None
        while not self._stop.is_set():
            data = self.link.read(FRAME_GAP_S if self.parser.pending else None)
            if data:
                self.receive(data)
            else:
                with self.lock:
                    self.parser.expire(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        if self.link is not None:
            self.link.wake()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.link is not None:
            self.link.close()

    def __enter__(self) -> FeetechBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ instructions
    def _ping(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        _expect(frame, 0)
        return [(s, packet(s.id, s.error())) for s in sorted(servos, key=lambda s: s.id)]

    def _read(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        _expect(frame, 2)
        address, length = frame.params
        if frame.servo_id == BROADCAST or length > MAX_PACKET - 6:
            raise _Malformed
        return [(s, packet(s.id, s.error(), s.read(address, length))) for s in servos]

    def _write(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        if len(frame.params) < 2:
            raise _Malformed
        return self._acked(frame, servos, lambda s: s.write(frame.params[0], frame.params[1:]))

    def _reg_write(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        if len(frame.params) < 2:
            raise _Malformed
        return self._acked(frame, servos,
                           lambda s: s.reg_write(frame.params[0], frame.params[1:]))

    def _action(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        _expect(frame, 0)
        return self._acked(frame, servos, STS3215.action)

    def _reset(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        _expect(frame, 0)
        return self._acked(frame, servos, STS3215.factory_reset)

    def _sync_read(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        if frame.servo_id != BROADCAST or len(frame.params) < 3:
            raise _Malformed
        address, length, ids = frame.params[0], frame.params[1], frame.params[2:]
        if length > MAX_PACKET - 6:
            raise _Malformed
        by_id = {s.id: s for s in servos}
        return [(by_id[i], packet(i, by_id[i].error(), by_id[i].read(address, length)))
                for i in ids if i in by_id]

    def _sync_write(self, frame: Frame, servos: list[STS3215]) -> list[Reply]:
        params = frame.params
        if frame.servo_id != BROADCAST or len(params) < 2:
            raise _Malformed
        address, length = params[0], params[1]
        blocks = params[2:]
        if length == 0 or len(blocks) % (length + 1):
            raise _Malformed
        by_id = {s.id: s for s in servos}
        for k in range(0, len(blocks), length + 1):
            target = by_id.get(blocks[k])
            if target is not None:
                target.write(address, blocks[k + 1:k + 1 + length])
        return []

    @staticmethod
    def _acked(frame: Frame, servos: list[STS3215], act: Callable[[STS3215], None]
               ) -> list[Reply]:
        """Let each servo ``act``; the ones addressed by id answer (under the id the frame
        used: a servo whose ID was just written still answers the driver that asked)."""
        replies = []
        for s in servos:
            servo_id = s.id
            act(s)
            if frame.servo_id != BROADCAST and s.answers_writes:
                replies.append((s, packet(servo_id, s.error())))
        return replies


class _Malformed(Exception):
    """A frame with a good checksum that no servo can act on."""


def _expect(frame: Frame, n: int) -> None:
    if len(frame.params) != n:
        raise _Malformed


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def make_bus(n_servos: int = 6, plant: Plant | None = None, *, baud: int = 1_000_000,
             timing: bool = True, link: PtyLink | None = None, corrupt: float = 0.0,
             seed: int = 0) -> FeetechBus:
    """``n_servos`` STS3215 with ids 1..n on a new pty (not yet served: ``start()`` or
    ``with``), moving the joints of ``plant`` (default: an :class:`IdealPlant`)."""
    ids = list(range(1, n_servos + 1))
    plant = plant if plant is not None else IdealPlant(ids)
    return FeetechBus([STS3215(i, plant) for i in ids], link if link is not None else PtyLink(),
                      baud=baud, timing=timing, corrupt=corrupt, seed=seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hardware.emulators.feetech",
                                 description="Emulate a bus of Feetech STS3215 servos on a "
                                             "pseudo-terminal; prints its path, serves until "
                                             "killed.")
    ap.add_argument("--servos", type=int, default=6, help="number of servos, ids 1..N")
    ap.add_argument("--baud", type=int, default=1_000_000,
                    help="line speed assumed where the port's cannot be read (bit/s)")
    ap.add_argument("--no-timing", action="store_true",
                    help="answer at once instead of at the bytes' wire time")
    ap.add_argument("--plant", choices=("ideal", "so101"), default="ideal",
                    help="what the servos move: ideal joints, or the simulated SO-101 of "
                         "sim/arm (6 servos)")
    serve.add_arguments(ap, "so101")
    args = ap.parse_args(argv)
    if not 1 <= args.servos <= MAX_ID:
        ap.error(f"--servos must be in 1..{MAX_ID}, got {args.servos}")
    plant: Plant | None = None
    if args.plant == "so101":
        if args.servos != 6:
            ap.error(f"--plant so101 has 6 joints: use --servos 6, not {args.servos}")
        from hardware.emulators.so101_plant import SO101Plant

        plant = SO101Plant()
    bus = make_bus(args.servos, plant, baud=args.baud, timing=not args.no_timing)
    return serve.serve(ap, args, bus, plant, "so101")


if __name__ == "__main__":
    sys.exit(main())
