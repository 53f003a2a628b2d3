"""Measurements on the firmware-in-the-loop car, shared by ``tests/test_rc_car.py`` and
``bench/rc_car.py``: start the emulator, run a host that drives and then dies (or closes the
port, or streams garbage), and read the firmware's pins from rcsim's log.

Latency is measured in the firmware's simulated time, on its pins: from the moment the last byte
of the last valid frame entered the UART to the falling edge of the first neutral ESC pulse.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hardware.rc_car import protocol as P

ROOT = Path(__file__).resolve().parents[2]
JITTER_US = 10  # pulse widths within this of 1500 us are neutral: the ISR-timed edges jitter by
# a few us when another interrupt (UART, encoder, 1 ms tick) runs first, as on the real chip


class Emulator:
    """``python -m hardware.emulators.rc_car`` with a log and a status file."""

    def __init__(self, track: str = "oval") -> None:
        self.dir = tempfile.mkdtemp(prefix="rc_car_emu_")
        self.log = os.path.join(self.dir, "rcsim.log")
        self.status_path = os.path.join(self.dir, "status.json")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hardware.emulators.rc_car", "--track", track, "--log",
             self.log, "--status", self.status_path], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().strip()
        if not self.port.startswith("/dev/"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"rc_car emulator did not start: {self.port!r} {err[-500:]}")
        self.localisation = self.proc.stdout.readline().split()[1]

    def command(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def status(self) -> dict[str, Any]:
        import json

        for _ in range(50):
            try:
                with open(self.status_path) as f:
                    doc: dict[str, Any] = json.load(f)
                    return doc
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError("the emulator wrote no status")

    def log_size(self) -> int:
        return os.path.getsize(self.log)

    def log_since(self, offset: int) -> list[list[str]]:
        with open(self.log) as f:
            f.seek(offset)
            text = f.read()
        text = text[:text.rfind("\n") + 1]  # whole lines only: rcsim may be mid-line
        return [e for e in (line.split() for line in text.splitlines())
                if (e[0] == "R" and len(e) == 3) or (e[0] == "P" and len(e) == 4)
                or e[0] == "X"]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return str(err)


# A host that handshakes, arms and drives at 50 Hz with the ESC at 1700 us, then ends as told:
# "killed" (it waits to be SIGKILLed), "closed" (closes the port, exits without DISARM), or
# "garbage" (streams random bytes for 0.6 s instead of frames). It prints the number of valid
# bytes it wrote before the garbage.
HOST = r"""
import os, sys, time, random
import serial
from hardware.rc_car import protocol as P
port, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = serial.Serial(port, 115200, timeout=0.01)
s.reset_input_buffer()
n = s.write(P.hello()); time.sleep(0.05)
n += s.write(P.arm(1, 80)); time.sleep(0.02)
seq = 2
t = time.monotonic()
for i in range(25):
    n += s.write(P.drive(seq, 1500, 1700)); seq += 1
    t += 0.02; time.sleep(max(0.0, t - time.monotonic()))
    s.reset_input_buffer()
print(n, flush=True)
if mode == "killed":
    while True:
        n += s.write(P.drive(seq, 1500, 1700)); seq += 1
        t += 0.02; time.sleep(max(0.0, t - time.monotonic()))
        s.reset_input_buffer()
elif mode == "closed":
    s.close()
else:
    rng = random.Random(seed)
    end = time.monotonic() + 0.6
    while time.monotonic() < end:
        s.write(bytes(rng.randrange(256) for _ in range(64)))
        time.sleep(0.005)
"""


@dataclass
class FailsafeTrial:
    mode: str
    latency_ms: float  # last valid byte into the UART -> falling edge of the first neutral pulse
    applied_after: int  # ESC pulses not neutral after the failsafe (must be 0)
    steering_centred: bool  # the steering pulse after the failsafe is 1500 us
    host_stalls: int = 0  # attempts retried: the host itself paused > 80 ms while driving


def failsafe_trial(emu: Emulator, mode: str, seed: int = 0, retries: int = 3) -> FailsafeTrial:
    """One trial: drive, then end as ``mode`` says; measured on the pins. An attempt in which
    the host itself stalled past the failsafe while still driving (a loaded machine: the ESC
    went neutral before the host's last valid frame) measures the host, not the firmware: it is
    retried, up to ``retries`` times, and counted."""
    for stalls in range(retries + 1):
        trial = _failsafe_attempt(emu, mode, seed * 10 + stalls)
        if trial is not None:
            trial.host_stalls = stalls
            return trial
    raise RuntimeError(f"failsafe trial ({mode}): the host stalled in {retries + 1} attempts")


def _failsafe_attempt(emu: Emulator, mode: str, seed: int) -> FailsafeTrial | None:
    start = emu.log_size()
    host = subprocess.Popen([sys.executable, "-c", HOST, emu.port, mode, str(seed)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    valid = int(host.stdout.readline())  # the host is driving
    rng = np.random.default_rng(seed)
    if mode == "killed":
        time.sleep(float(rng.uniform(0.05, 0.3)))
        host.send_signal(signal.SIGKILL)
    host.wait(timeout=10)
    time.sleep(0.35)  # well past the failsafe
    events = emu.log_since(start)
    rx = [(int(e[1]), int(e[2])) for e in events if e[0] == "R"]
    if mode == "garbage":  # rcsim counts bytes since it started; this host's first is rx[0]
        t_last = next(t for t, c in rx if c == rx[0][1] - 1 + valid)
    else:
        t_last = rx[-1][0]
    esc = [(int(e[1]), int(e[3])) for e in events if e[0] == "P" and e[2] == "E"]
    steer = [(int(e[1]), int(e[3])) for e in events if e[0] == "P" and e[2] == "S"]
    driving = [i for i, (t, w) in enumerate(esc) if t < t_last and abs(w - 1700) <= JITTER_US]
    if driving and any(abs(w - 1500) <= JITTER_US for t, w in esc[driving[0]:]
                       if t < t_last - 5000):
        return None  # neutral while the host still drove: it stalled past the timeout
    t_neutral = next(t for t, w in esc if t > t_last and abs(w - 1500) <= JITTER_US)
    after = [w for t, w in esc if t > t_neutral]
    s_after = [w for t, w in steer if t > t_neutral - 4000]
    return FailsafeTrial(mode, (t_neutral - t_last) / 1000,
                         sum(abs(w - 1500) > JITTER_US for w in after),
                         bool(s_after) and abs(s_after[0] - 1500) <= JITTER_US)


def first_pulses_after_reset(emu: Emulator) -> tuple[int, int, float]:
    """Reset the board (DTR); (first steering width, first ESC width, ms to the first pulse)."""
    start = emu.log_size()
    emu.command("reset")
    time.sleep(0.2)
    events = emu.log_since(start)
    t_reset = next(int(e[1]) for e in events if e[0] == "X")
    s = next((int(e[1]), int(e[3])) for e in events if e[0] == "P" and e[2] == "S"
             and int(e[1]) > t_reset)
    e = next((int(e[1]), int(e[3])) for e in events if e[0] == "P" and e[2] == "E"
             and int(e[1]) > t_reset)
    return s[1], e[1], (s[0] - s[1] - t_reset) / 1000


def pure_pursuit_run(robot: Any, steps: int, fps: float, speed: float = 2.0,
                     realtime: bool = True, policy: Any = None) -> float:
    """Drive ``robot`` (rc_car or sim_car) with pure pursuit (or ``policy(obs)``) for ``steps``
    control periods from checkpoint 0, at the control rate when ``realtime``; returns the wall
    time spent."""
    from sim.car.driver import PurePursuitDriver

    drive = policy or PurePursuitDriver(robot.track, speed=speed)
    obs = robot.reset(seed=0, options={"checkpoint": 0, "lateral": 0.0, "yaw": 0.0})
    t0 = time.monotonic()
    next_t = t0
    for _ in range(steps):
        robot.act(drive(obs))
        if realtime:
            next_t += 1.0 / fps
            time.sleep(max(0.0, next_t - time.monotonic()))
        obs = robot.observe()
    return time.monotonic() - t0


class FakeBoard:
    """A byte-level double of the car's board on a pty: answers HELLO with ``version`` and
    interleaves ``garbage`` between valid telemetry frames."""

    def __init__(self, version: int = P.PROTOCOL_VERSION, garbage: bytes = b"") -> None:
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave
        self.version, self.garbage = version, garbage
        self.damage: Any = None  # optional f(frame bytes) -> bytes sent instead
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _telemetry(self, seq: int, armed: bool) -> bytes:
        body = struct.pack("<HBIIIIHHHHHH", seq, P.FLAG_LINKED | P.FLAG_READY | (
            P.FLAG_ARMED if armed else 0), int(time.monotonic() * 1e6) & 0xFFFFFFFF, 0, 0, 0,
            1500, 1500, 0, 0, 0, 0)
        return P.encode(bytes((P.TELEMETRY,)) + body)

    def _run(self) -> None:
        reader, armed, seq = P.FrameReader(), False, 0
        while not self._stop:
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            for f in reader.feed(data):
                payload = P.decode(f)
                if payload[0] == P.HELLO:
                    out = P.encode(struct.pack("<BBBBHB", P.HELLO_REPLY, self.version, 9, 9,
                                               80, 0))
                else:
                    if payload[0] in (P.ARM, P.DRIVE):
                        armed, seq = True, struct.unpack("<H", payload[1:3])[0]
                    tele = self._telemetry(seq, armed)
                    if self.damage is not None:
                        tele = self.damage(tele)
                    out = self.garbage + tele + self.garbage
                try:
                    os.write(self.master, out)
                except OSError:
                    return  # closed under us

    def close(self) -> None:
        self._stop = True
        os.close(self.master)
        os.close(self._slave)
