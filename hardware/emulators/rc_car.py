"""The RC car with its firmware in the loop: what ``robolearn emulate rc_car`` runs.

The compiled firmware (``hardware/rc_car/firmware``, the binary you would flash) runs in simavr
on a simulated ATmega328P (``hardware/rc_car/simhost/rcsim``, a C program on libsimavr); its
UART is a pseudo-terminal, which is the port robolearn's driver opens. This process is the rest
of the car:

- the **servo and ESC**: rcsim measures every pulse on the steering and ESC pins; the steering
  servo turns the MuJoCo car's front wheels to ``(width - 1500) / 500`` of full lock (2000 us =
  full left), the ESC drives the rear wheels at ``(width - 1500) / 500`` of full speed (forward
  above 1500 us; a crawler-style ESC without brake-then-reverse logic), and like a real ESC it
  cuts the motor when pulses stop for more than ``--signal-loss-ms``;
- the **wheel encoder**: the rear wheels' rotation becomes rising edges on the firmware's
  interrupt pin (``--ticks-per-rev`` a wheel turn; one channel, so no direction);
- a **localisation source** the car does not have on board (a motion-capture system or RTK GPS
  on a real track): the true pose published on ZeroMQ as JSON ``{"t", "x", "y", "yaw"}`` at
  ``--pose-hz``, which the driver reads only when configured to
  (``robot.localisation=zmq://...``);
- the **judge**: collisions with the walls, laps and lap times from the simulator's ground truth,
  written to ``--status`` (JSON) for benches and tests; the driver never reads them.

stdout: the port path (first line), then ``localisation zmq://127.0.0.1:PORT``. stdin takes what
a person does at the track: ``place [CHECKPOINT [LATERAL_M [YAW_RAD]]]`` (carry the car to a
start; the judge starts a new run), ``reset`` (press the board's reset button: the firmware
reboots, as when a USB-serial adapter's DTR line pulses). The simulated clock of the firmware
tracks wall time, and the physics steps in wall time, so every timing measured through this
emulator is real.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

RC_DIR = Path(__file__).resolve().parents[1] / "rc_car"
FIRMWARE = RC_DIR / "firmware" / "build" / "rc_car.elf"
RCSIM = RC_DIR / "simhost" / "build" / "rcsim"
PACKAGES = "gcc-avr avr-libc simavr libsimavr-dev"


class BuildError(RuntimeError):
    """The firmware or its simulated board could not be built (the message says why)."""


def build() -> tuple[Path, Path]:
    """Build (when out of date) and return the firmware ELF and the rcsim program."""
    try:
        out = subprocess.run(["make", "-s", "-C", str(RC_DIR), "firmware", "simhost"],
                             capture_output=True, text=True, timeout=300)
    except FileNotFoundError:
        raise BuildError("building the RC-car firmware needs `make` (apt-get install make)"
                         ) from None
    if out.returncode != 0:
        last = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["?"]
        raise BuildError(f"building the RC-car firmware failed ({last[0]}); it needs "
                         f"{PACKAGES} (apt-get install {PACKAGES}, or `make setup`)")
    return FIRMWARE, RCSIM


class Board:
    """The firmware running in rcsim: its pty, its measured pulses, its encoder pin."""

    def __init__(self, log: str | None = None) -> None:
        elf, rcsim = build()
        argv = [str(rcsim), str(elf)] + (["--log", log] if log else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self._in: IO[str] = self.proc.stdin
        line = ""
        for line in self.proc.stdout:  # simavr prints what it loaded first
            if line.startswith("pty "):
                break
        if not line.startswith("pty "):
            raise BuildError(f"rcsim exited ({self.proc.wait()}) before opening its pty")
        self.port = line.split(maxsplit=1)[1].strip()
        self.width = {"S": 1500, "E": 1500}  # last measured pulse widths, us
        self.last = {"S": 0.0, "E": 0.0}  # time.monotonic() of each channel's last pulse
        self.pulses = {"S": 0, "E": 0}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                         name="rcsim-pulses").start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "P":
                ch, width = parts[2], int(parts[3])
                with self._lock:
                    self.width[ch], self.last[ch] = width, time.monotonic()
                    self.pulses[ch] += 1

    def pulse(self, ch: str) -> tuple[int, float]:
        """(width us, seconds since it was measured) of channel "S" (steering) or "E" (ESC)."""
        with self._lock:
            return self.width[ch], time.monotonic() - self.last[ch]

    def _send(self, text: str) -> None:
        try:
            self._in.write(text + "\n")
            self._in.flush()
        except (BrokenPipeError, ValueError):
            pass

    def encoder(self, ticks: int, period_us: int) -> None:
        self._send(f"T {ticks} {period_us}")

    def reset(self) -> None:
        self._send("R")

    def close(self) -> None:
        self._send("Q")
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RcCarPlant:
    """The MuJoCo car driven by the board's pulses, stepped in wall time in its own thread."""

    def __init__(self, board: Board, track: str = "oval", physics_hz: float = 100.0,
                 ticks_per_rev: int = 64, signal_loss_ms: float = 60.0, pose_port: int = 0,
                 pose_hz: float = 50.0, status: str | None = None) -> None:
        import zmq

        from sim.car.robot import SimCar
        from sim.car.tasks import LapTask

        self.board, self.ticks_per_rev = board, ticks_per_rev
        self.signal_loss_s = signal_loss_ms / 1000
        self.car = SimCar(track=track, fps=physics_hz, max_action_delta=0.0)
        self.car.connect()
        m = self.car.model
        self._spin = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("spin_rl", "spin_rr")]
        self.period = 1.0 / physics_hz
        self._pose_every = max(int(round(physics_hz / pose_hz)), 1)
        self._ctx = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, 4)
        if pose_port:
            self._pub.bind(f"tcp://127.0.0.1:{pose_port}")
            self.pose_port = pose_port
        else:
            self.pose_port = self._pub.bind_to_random_port("tcp://127.0.0.1")
        self.status_path = status
        self.task = LapTask()
        self._lock = threading.Lock()
        self._place: tuple[int, float, float] | None = (0, 0.0, 0.0)
        self.overruns = 0  # physics steps that started more than one period late
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rc-car-physics", daemon=True)
        self._thread.start()

    def place(self, checkpoint: int = 0, lateral: float = 0.0, yaw: float = 0.0) -> None:
        with self._lock:
            self._place = (checkpoint, lateral, yaw)

    def _new_run(self, where: tuple[int, float, float]) -> None:
        k, lateral, yaw = where
        self.car.reset(options={"checkpoint": k, "lateral": lateral, "yaw": yaw})
        self.task.reset(self.car)
        self._wheel = float(np.mean(self.car.data.qpos[self._spin]))
        self.collisions = self.collision_steps = 0
        self._touching = False
        self._run_start = time.monotonic()
        self._steps = 0

    def _run(self) -> None:
        ticks_acc, ticks = 0.0, 0
        next_t = time.monotonic()
        steer = 0.0
        while not self._stop.is_set():
            with self._lock:
                where, self._place = self._place, None
            if where is not None:
                self._new_run(where)
            s_us, s_age = self.board.pulse("S")
            e_us, e_age = self.board.pulse("E")
            if s_age < self.signal_loss_s:  # a servo without pulses stays where it is
                steer = (s_us - 1500) / 500
            throttle = (e_us - 1500) / 500 if e_age < self.signal_loss_s else 0.0
            self.car.act(np.array((steer, throttle)))
            wheel = float(np.mean(self.car.data.qpos[self._spin]))
            ticks_acc += abs(wheel - self._wheel) * self.ticks_per_rev / (2 * math.pi)
            self._wheel = wheel
            if int(ticks_acc) > ticks:
                ticks = int(ticks_acc)
                self.board.encoder(ticks, int(self.period * 1e6))
            self.task.reward_terms(self.car, np.zeros(2))
            st = self.car.state()
            if st["collision"]:
                self.collision_steps += 1
                self.collisions += int(not self._touching)
            self._touching = bool(st["collision"])
            self._steps += 1
            if self._steps % self._pose_every == 0:
                self._pub.send_string(json.dumps({
                    "t": time.time(), "x": float(st["pos"][0]), "y": float(st["pos"][1]),
                    "yaw": float(st["yaw"])}))
            if self.status_path and self._steps % 10 == 0:
                self._write_status(st, s_us, e_us)
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -self.period:
                self.overruns += 1
                next_t = time.monotonic()  # too late to catch up: keep the rate from now on

    def _write_status(self, st: dict[str, Any], s_us: int, e_us: int) -> None:
        info = self.task.info()
        doc = {"run_s": time.monotonic() - self._run_start, "sim_time": st["time"],
               "collisions": self.collisions, "collision_steps": self.collision_steps,
               "laps": info["laps"], "lap_times": info["lap_times"],
               "checkpoints_reached": info["checkpoints_reached"],
               "x": float(st["pos"][0]), "y": float(st["pos"][1]), "yaw": float(st["yaw"]),
               "speed": float(st["speed"]), "steer_us": s_us, "esc_us": e_us,
               "esc_pulses": self.board.pulses["E"], "overruns": self.overruns}
        assert self.status_path is not None
        tmp = f"{self.status_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.status_path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._pub.close(linger=0)
        self._ctx.term()
        self.car.disconnect()


def _commands(plant: RcCarPlant, board: Board, stream: IO[str], say: Any) -> None:
    for line in stream:
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "place":
                vals = [float(v) for v in parts[1:4]]
                plant.place(int(vals[0]) if vals else 0, *vals[1:])
                say("placed")
            elif parts[0] == "reset":
                board.reset()
                say("reset")
            else:
                say(f"unknown command {parts[0]!r}: place [CHECKPOINT [LATERAL [YAW]]], reset")
        except ValueError as exc:
            say(f"bad arguments to {parts[0]}: {exc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hardware.emulators.rc_car", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--track", default="oval")
    ap.add_argument("--physics-hz", type=float, default=100.0)
    ap.add_argument("--ticks-per-rev", type=int, default=64)
    ap.add_argument("--signal-loss-ms", type=float, default=60.0)
    ap.add_argument("--pose-port", type=int, default=0, help="0: any free port")
    ap.add_argument("--pose-hz", type=float, default=50.0)
    ap.add_argument("--status", help="write the judge's JSON status here (5 times a second)")
    ap.add_argument("--log", help="rcsim's log of UART bytes and pulses, simulated time")
    args = ap.parse_args(argv)
    try:
        board = Board(log=args.log)
    except BuildError as exc:
        print(f"robolearn emulate rc_car: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    def say(text: str) -> None:
        print(text, flush=True)

    plant = RcCarPlant(board, track=args.track, physics_hz=args.physics_hz,
                       ticks_per_rev=args.ticks_per_rev, signal_loss_ms=args.signal_loss_ms,
                       pose_port=args.pose_port, pose_hz=args.pose_hz, status=args.status)
    try:
        say(board.port)
        say(f"localisation zmq://127.0.0.1:{plant.pose_port}")
        threading.Thread(target=_commands, args=(plant, board, sys.stdin, say),
                         daemon=True).start()
        while not done.wait(0.2):
            if board.proc.poll() is not None:
                print(f"rcsim exited ({board.proc.returncode})", file=sys.stderr)
                return 1
    finally:
        plant.close()
        board.close()
    print(f"served {board.pulses['E']} ESC pulses; physics overruns: {plant.overruns}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
