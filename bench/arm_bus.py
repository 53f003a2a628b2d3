"""The emulated SO-101 through robolearn's driver and lerobot's bus code, over a real pty.

``python -m bench.arm_bus [--quick] [--only cycle,link,fuzz]``

- **cycle**: one bus cycle (sync-read 6 positions + sync-write 6 goals, lerobot's
  ``FeetechMotorsBus``) against the wire-time bound at 1 Mbps (the bytes of both packets and
  the six status replies, 10 bits a byte; the emulator delivers each reply when it would have
  finished arriving on a real bus). Also robolearn's full observe + act (positions and
  velocities; positions read twice and compared).
- **link**: link loss to robot stopped, 20 trials each: emulator SIGKILLed, port closed (cable
  pulled), and the host process SIGKILLed while it drives the arm. The first two: time from the
  loss to the control loop having stopped (the driver's ``RobotError``, the loop's halt). The
  third: the SO-101's servos have no bus watchdog, so they hold their last goal: time until
  the arm stands still at it, and the servos' torque state afterwards.
- **fuzz**: 1e5 damaged status replies (bit flips, cut short, noise bytes, noise before the
  packet, lost) into the driver while it runs a control loop on a standing arm: every reading
  it accepts is compared with the simulation's truth; garbled readings accepted must be 0,
  goals outside the calibrated limits 0, and every failure a named ``RobotError``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hardware.emulators.feetech import make_bus
from hardware.emulators.hand import calibrate_with_hand
from hardware.emulators.so101_plant import SO101Plant, joint_ranges_steps, middle_steps
from robolearn.robot import RobotError, make_robot

ROOT = Path(__file__).resolve().parents[1]
BAUD = 1_000_000


def wire_bound_ms(n: int = 6) -> float:
    """Bytes on the wire for one cycle at 1 Mbps, 10 bits a byte: SYNC_READ (2 header + id,
    len, instr, addr, count + n ids + checksum), n replies of 2 data bytes (8 bytes each),
    SYNC_WRITE of 2 bytes to n servos (2 + id, len, instr, addr, count + 3n + checksum)."""
    sync_read = 7 + n + 1
    replies = n * 8
    sync_write = 7 + 3 * n + 1
    return (sync_read + replies + sync_write) * 10 / BAUD * 1000


def calibrated_dir() -> str:
    """Calibrate an emulated SO-101 once through lerobot's flow; returns the directory."""
    cal = tempfile.mkdtemp(prefix="robolearn_bench_cal_")
    plant = SO101Plant()
    with make_bus(6, plant) as bus:
        calibrate_with_hand("so101", bus.port, plant, middle_steps(), joint_ranges_steps(), cal,
                            arm_id="bench")
    return cal


def arm(cal: str, port: str, **kw: Any) -> Any:
    return make_robot("so101", port=port, calibration_dir=cal, id="bench", home_s=0.3, **kw)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# --------------------------------------------------------------------------- cycle
def bench_cycle(cal: str, n: int) -> None:
    plant = SO101Plant()
    with make_bus(6, plant) as bus:
        a = arm(cal, bus.port)
        with a:
            a.reset()
            lerobot_bus = a._lr.bus
            goal = lerobot_bus.sync_read("Present_Position")
            cycle, full = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                lerobot_bus.sync_read("Present_Position")
                lerobot_bus.sync_write("Goal_Position", goal)
                cycle.append(1000 * (time.perf_counter() - t0))
            home = np.asarray(a.cfg.home)
            for _ in range(n):
                t0 = time.perf_counter()
                a.observe()
                a.act(home)
                full.append(1000 * (time.perf_counter() - t0))
    bound = wire_bound_ms()
    med = statistics.median(cycle)
    print(f"bus cycle, lerobot sync_read(6 positions) + sync_write(6 goals), {n} cycles:")
    print(f"  wire-time bound at 1 Mbps: {bound:.3f} ms")
    print(f"  measured: median {med:.3f} ms, p99 {pct(cycle, 99):.3f} ms "
          f"-> {med / bound:.2f}x the bound (the rest: pty, Python, lerobot/scservo_sdk)")
    print(f"robolearn observe (positions read twice, velocities) + act, {n} cycles: "
          f"median {statistics.median(full):.3f} ms, p99 {pct(full, 99):.3f} ms "
          f"({statistics.median(full) / (1000 / 30):.1%} of a 30 Hz period)")


# --------------------------------------------------------------------------- link loss
def _loop_until_lost(a: Any, lost: dict[str, float]) -> float:
    """Run a 30 Hz loop (observe, act) until the driver raises; seconds from ``lost["t"]``."""
    home = np.asarray(a.cfg.home)
    t = time.perf_counter()
    while True:
        try:
            a.observe()
            a.act(home + 0.05 * np.sin(time.perf_counter()))
        except RobotError:
            a.disconnect()  # the loop's halt: stop (fails: the link is gone), commit, release
            return time.perf_counter() - lost["t"]
        t += 1 / 30
        time.sleep(max(0.0, t - time.perf_counter()))


def trial_emulator_gone(cal: str, how: str) -> float:
    """The emulator as its own process, SIGKILLed or told to unplug; the loss -> loop stopped."""
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulators.feetech", "--servos", "6",
                             "--plant", "so101", "--hand"], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=1)
    assert proc.stdout is not None and proc.stdin is not None
    port = proc.stdout.readline().strip()
    a = arm(cal, port)
    a.connect()
    a.observe()
    lost: dict[str, float] = {}
    import threading

    def cut() -> None:
        time.sleep(0.3)
        lost["t"] = time.perf_counter()
        if how == "killed":
            proc.kill()
        else:
            assert proc.stdin is not None
            proc.stdin.write("unplug\n")
            proc.stdin.flush()

    threading.Thread(target=cut, daemon=True).start()
    took = _loop_until_lost(a, lost)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return took


HOST = r"""
import sys, time, numpy as np
from robolearn.robot import make_robot
a = make_robot(sys.argv[3], port=sys.argv[1], calibration_dir=sys.argv[2], id="bench", home_s=0.3)
a.connect(); a.reset()
print("driving", flush=True)
home = np.asarray(a.cfg.home); t0 = time.perf_counter(); swing = np.array([0.6, 0, 0, 0, 0, 0])
while True:
    a.observe(); a.act(home + swing * np.sin(6 * (time.perf_counter() - t0)))
    time.sleep(1 / 30)
"""


def kill_host_mid_motion(port: str, cal: str, robot: str, clock: Any = time.perf_counter
                         ) -> float:
    """Start a host process driving ``robot`` on ``port`` (the :data:`HOST` script), let it
    swing the arm for 0.4-0.7 s, SIGKILL it; returns ``clock()`` at the kill, once it is dead."""
    proc = subprocess.Popen([sys.executable, "-c", HOST, port, cal, robot], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "driving", proc.stderr
    time.sleep(0.4 + np.random.default_rng().uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    killed = float(clock())
    proc.wait()
    return killed


def trial_host_killed(cal: str) -> tuple[float, bool, float]:
    """The host process SIGKILLed mid-motion: seconds until the arm stands still, whether
    torque is still on, and how far (rad) the arm is from the last goal it was sent."""
    plant = SO101Plant()
    with make_bus(6, plant) as bus:
        t_kill = kill_host_mid_motion(bus.port, cal, "so101")
        still_since = None
        while time.perf_counter() - t_kill < 2.0:
            speed = abs(plant.sense(1).velocity) * 2 * np.pi / 4096
            now = time.perf_counter()
            if speed < 0.02:
                still_since = still_since or now
                if now - still_since > 0.1:
                    break
            else:
                still_since = None
            time.sleep(0.002)
        stopped = (still_since or time.perf_counter()) - t_kill
        with bus.lock:
            servo = bus.servo(1)
            torque = servo.torque
            goal = servo.goal_target()
        gap = abs(plant.sense(1).position - (goal or 0.0)) * 2 * np.pi / 4096
    return stopped, torque, gap


def koch_calibrated_dir() -> str:
    from hardware.emulators import dynamixel
    from hardware.emulators.so101_plant import KOCH_SERVO_JOINTS

    cal = tempfile.mkdtemp(prefix="robolearn_bench_cal_koch_")
    plant = SO101Plant(servo_map=KOCH_SERVO_JOINTS)
    with dynamixel.make_bus(6, plant) as bus:
        calibrate_with_hand("koch", bus.port, plant, middle_steps(), joint_ranges_steps(), cal,
                            arm_id="bench")
    return cal


def trial_koch_host_killed(cal: str) -> float:
    """The Koch's host SIGKILLed mid-motion: seconds from the kill until every servo's bus
    watchdog (80 ms by default, set by the driver) has stopped it."""
    from hardware.emulators import dynamixel
    from hardware.emulators.so101_plant import KOCH_SERVO_JOINTS

    plant = SO101Plant(servo_map=KOCH_SERVO_JOINTS)
    with dynamixel.make_bus(6, plant) as bus:
        t_kill = kill_host_mid_motion(bus.port, cal, "koch", clock=time.monotonic)
        while time.monotonic() - t_kill < 1.0:
            with bus.lock:
                fired = [bus.servo(i).watchdog_fired_at for i in range(1, 7)]
            if all(t is not None for t in fired):
                return max(t for t in fired if t is not None) - t_kill
            time.sleep(0.002)
    return float("inf")


def bench_link(cal: str, trials: int) -> None:
    print(f"link loss -> robot stopped, {trials} trials each (target <= 100 ms):")
    for how in ("killed", "unplugged"):
        took = [1000 * trial_emulator_gone(cal, how) for _ in range(trials)]
        print(f"  emulator {how:9s}: loop stopped after median {statistics.median(took):.1f} ms, "
              f"max {max(took):.1f} ms; {sum(t <= 100 for t in took)}/{trials} within 100 ms")
    results = [trial_host_killed(cal) for _ in range(trials)]
    took = [1000 * r[0] for r in results]
    print(f"  host SIGKILLed   : the SO-101's servos hold their last goal (no bus watchdog): "
          f"arm still after median {statistics.median(took):.0f} ms, max {max(took):.0f} ms; "
          f"torque on in {sum(r[1] for r in results)}/{trials}; "
          f"max distance from the last goal {max(r[2] for r in results):.3f} rad")
    kcal = koch_calibrated_dir()
    took = [1000 * trial_koch_host_killed(kcal) for _ in range(trials)]
    print(f"  Koch host SIGKILLed: every servo stopped by its bus watchdog (80 ms) after median "
          f"{statistics.median(took):.0f} ms, max {max(took):.0f} ms from the kill; "
          f"{sum(t <= 100 for t in took)}/{trials} within 100 ms (the watchdog counts from the "
          f"last packet, which came up to one 33 ms period before the kill)")


# --------------------------------------------------------------------------- fuzz
def bench_fuzz(cal: str, frames: int, corrupt: float) -> None:
    plant = SO101Plant()
    bus = make_bus(6, plant, seed=1).start()
    a = arm(cal, bus.port)
    try:
        a.connect()
        a.reset()
        home = a.hold_action()
        time.sleep(0.5)  # settle: the arm stands at home, the truth moves no more
        truth = plant.joint_angles()
        bus.corrupt = corrupt
        accepted = wrong = cycles = 0
        errors: Counter[str] = Counter()
        worst = 0.0
        t0 = time.perf_counter()
        while sum(v for k, v in bus.stats.items() if k.startswith("damaged_")) < frames:
            cycles += 1
            try:
                q = a.positions()
                a.act(home)
            except RobotError as exc:
                text = str(exc)
                errors["disagreeing readings" if "disagreeing" in text else
                       "link lost (lerobot gave up after its retries)"] += 1
                if not text.startswith("so101 on "):
                    errors["UNNAMED"] += 1
                continue
            accepted += 1
            err = float(np.abs(q[:5] - truth[:5]).max())
            worst = max(worst, err)
            if err > 0.02:
                wrong += 1
        took = time.perf_counter() - t0
        bus.corrupt = 0.0
        outside = sum(s.goals_outside_limits for s in bus.servos)
    finally:
        a.disconnect()
        bus.stop()
    damaged = {k[8:]: v for k, v in bus.stats.items() if k.startswith("damaged_")}
    print(f"driver-path fuzz: {sum(damaged.values())} damaged replies ({damaged}) at "
          f"p={corrupt} per reply, {cycles} cycles in {took:.0f} s:")
    print(f"  readings accepted {accepted}, of them wrong by > 0.02 rad: {wrong} (worst error "
          f"{worst:.4f} rad); reads that disagreed and were repeated: {a.garbled_reads}")
    print(f"  cycles refused with a named RobotError: {dict(errors)}; goals outside the "
          f"calibrated limits: {outside}; emulator dropped: "
          f"{ {k: v for k, v in bus.stats.items() if not k.startswith('damaged_')} }")


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("hardware").setLevel(logging.ERROR)  # the expected link-loss warnings
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--only", default="cycle,link,fuzz", help="comma list of parts")
    ap.add_argument("--frames", type=int, default=100_000, help="fuzz: damaged replies")
    ap.add_argument("--corrupt", type=float, default=0.3, help="fuzz: chance a reply is damaged")
    args = ap.parse_args(argv)
    parts = args.only.split(",")
    cal = calibrated_dir()
    if "cycle" in parts:
        bench_cycle(cal, 200 if args.quick else 2000)
    if "link" in parts:
        bench_link(cal, 3 if args.quick else 20)
    if "fuzz" in parts:
        bench_fuzz(cal, 2000 if args.quick else args.frames, args.corrupt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
