"""The RC car through its firmware in simavr (``robolearn emulate rc_car``), measured.

``python -m bench.rc_car [--quick] [--only failsafe,reset,lap,rtt,fuzz,driver,policy]
[--policy RUN_DIR]``

- **failsafe**: last valid frame -> neutral ESC pulse, on the firmware's pins in simulated time,
  ``--trials`` per way the host can fail (SIGKILLed, port closed, garbage streamed); against the
  100 ms bound. Also: steering centred, nothing applied afterwards.
- **reset**: the first pulses after a board reset (DTR), ``--trials / 5`` resets: neutral?
- **lap**: the scripted pure-pursuit driver laps the oval through driver -> firmware -> pulses
  -> MuJoCo; lap time and wall contacts against the same driver in pure simulation (baseline).
- **rtt**: command to telemetry round trip through the driver's link at 115 200 baud, p50/p99,
  against the wire-time bound (a DRIVE frame out, a TELEMETRY frame back, 10 bits a byte).
- **fuzz**: the firmware core under libFuzzer (``--fuzz-runs``, default 1e6): crashes, oracle
  violations (invalid commands applied), commands applied and checked.
- **driver**: damaged telemetry (bit flips, cut frames, noise) into the driver while it drives a
  byte-level board double: crashes (must be 0), frames counted bad, readings accepted.
- **policy** (with ``--policy RUN_DIR``, a BC policy trained on ``robolearn/SimCar-v0``): 20 runs
  of ``--run-s`` seconds from the track's checkpoints through the firmware, judged by the
  emulator (wall contacts); against the same policy in pure simulation.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from hardware.rc_car import protocol as P
from hardware.rc_car.trials import (
    JITTER_US,
    Emulator,
    FakeBoard,
    failsafe_trial,
    first_pulses_after_reset,
    pure_pursuit_run,
)
from robolearn.robot import make_robot

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "hardware" / "rc_car" / "firmware"
BYTE_S = 10 / 115200


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def bench_failsafe(emu: Emulator, trials: int) -> None:
    print(f"\n== failsafe: last valid frame -> neutral ESC pulse (pins, simulated time), "
          f"{trials} trials each; bound 100 ms")
    for mode in ("killed", "closed", "garbage"):
        rs = [failsafe_trial(emu, mode, seed) for seed in range(trials)]
        lat = [r.latency_ms for r in rs]
        ok = sum(r.latency_ms <= 100 and r.applied_after == 0 and r.steering_centred
                 for r in rs)
        print(f"host {mode:8s}: {ok}/{trials} within 100 ms, neutral and centred; latency "
              f"min {min(lat):.1f} median {statistics.median(lat):.1f} max {max(lat):.1f} ms "
              f"(max/bound {max(lat) / 100:.2f}); non-neutral pulses after: "
              f"{sum(r.applied_after for r in rs)}")


def bench_reset(emu: Emulator, n: int) -> None:
    firsts = [first_pulses_after_reset(emu) for _ in range(n)]
    ok = sum(abs(s - 1500) <= JITTER_US and abs(e - 1500) <= JITTER_US for s, e, _ in firsts)
    print(f"\n== reset: {ok}/{n} resets with neutral first pulses (steering, ESC); first pulse "
          f"{max(t for _, _, t in firsts):.1f} ms after the reset at most")


def _sim_lap() -> tuple[float, int]:
    from sim.car.driver import PurePursuitDriver
    from sim.car.tasks import LapTask

    sim, task = make_robot("sim_car", track="oval"), LapTask()
    with sim:
        obs = sim.reset(seed=0, options={"checkpoint": 0, "lateral": 0.0, "yaw": 0.0})
        task.reset(sim)
        drive = PurePursuitDriver(sim.track)
        while not task.laps:
            a = sim.act(drive(obs))
            task.reward_terms(sim, a)
            obs = sim.observe()
    return task.lap_times[0], task.collisions


def bench_lap(emu: Emulator, laps: int) -> None:
    sim_lap, sim_hits = _sim_lap()
    car = make_robot("rc_car", port=emu.port, localisation=emu.localisation)
    with car:
        emu.command("place 0")
        pure_pursuit_run(car, int((sim_lap * laps + 2.0) * 20), 20.0)
        counters = car.firmware_counters()
    st = emu.status()
    times = st["lap_times"]
    print(f"\n== lap: pure pursuit (2 m/s) on the oval; baseline: the same driver in pure "
          f"simulation, {sim_lap:.2f} s, {sim_hits} wall-contact steps")
    print(f"firmware in the loop: {len(times)} laps, times {', '.join(f'{t:.2f}' for t in times)}"
          f" s (first/baseline {times[0] / sim_lap:.3f}); wall contacts {st['collisions']}; "
          f"firmware failsafes {counters['fw_failsafes']}, bad frames {counters['bad_frames']}"
          if times else f"firmware in the loop: no lap completed ({st})")


def bench_rtt(emu: Emulator, n: int) -> None:
    import serial

    s = serial.Serial(emu.port, 115200, timeout=0.001)
    reader = P.FrameReader()
    try:
        s.reset_input_buffer()
        s.write(P.hello())
        time.sleep(1.1)  # after a reset the firmware holds neutral 1 s before it arms
        s.write(P.arm(1, 80))
        time.sleep(0.05)
        s.reset_input_buffer()
        rtts = []
        nxt = time.monotonic()
        for seq in range(2, n + 2):
            frame = P.drive(seq, 1500, 1500)
            t0 = time.perf_counter()
            s.write(frame)
            got = None
            while got is None and time.perf_counter() - t0 < 0.2:
                for f in reader.feed(s.read(64)):
                    msg = P.parse(P.decode(f))
                    if isinstance(msg, P.Telemetry) and msg.last_seq == seq:
                        got = time.perf_counter() - t0
            if got is not None:
                rtts.append(got * 1000)
            nxt += 0.05
            time.sleep(max(0.0, nxt - time.monotonic()))
        tele = len(P.encode(bytes(32)))
        bound = (len(P.drive(2, 1500, 1500)) + tele) * BYTE_S * 1000
        s.write(P.disarm(n + 2))
    finally:
        s.close()
    print(f"\n== rtt: DRIVE -> its TELEMETRY at 115200 baud, {len(rtts)}/{n} answered; wire-time "
          f"bound {bound:.2f} ms")
    print(f"p50 {_pct(rtts, 50):.2f} ms (p50/bound {_pct(rtts, 50) / bound:.2f}), p99 "
          f"{_pct(rtts, 99):.2f} ms (p99/bound {_pct(rtts, 99) / bound:.2f}), max {max(rtts):.2f}")


def bench_fuzz(runs: int) -> None:
    import tempfile

    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "fuzz"], check=True)
    with tempfile.TemporaryDirectory() as corpus:
        t0 = time.monotonic()
        out = subprocess.run([str(FIRMWARE_DIR / "build" / "fuzz_rc_core"), f"-runs={runs}",
                              "-seed=1", f"-artifact_prefix={corpus}/", corpus,
                              str(FIRMWARE_DIR / "fuzz_seeds")], capture_output=True, text=True)
        wall = time.monotonic() - t0
    summary = [line for line in out.stderr.splitlines() if line.startswith("rc_core fuzz")]
    crashed = out.returncode != 0
    print(f"\n== fuzz: firmware core (rc_core.c) under libFuzzer + ASan + UBSan, {runs} inputs "
          f"in {wall:.0f} s: {'CRASH / oracle violation' if crashed else '0 crashes, 0 invalid '
          'commands applied'}")
    print(summary[-1] if summary else out.stderr[-800:])


def bench_driver(frames: int) -> None:
    rng = np.random.default_rng(0)
    kinds = {"flip": 0, "cut": 0, "noise": 0, "intact": 0}

    def damage(tele: bytes) -> bytes:
        r = rng.random()
        if r < 0.25:
            kinds["flip"] += 1
            b = bytearray(tele)
            i = int(rng.integers(0, len(b) - 1))
            b[i] ^= 1 << int(rng.integers(0, 8))
            return bytes(b)
        if r < 0.5:
            kinds["cut"] += 1
            return tele[:int(rng.integers(1, len(tele) - 1))] + b"\x00"
        if r < 0.75:
            kinds["noise"] += 1
            return bytes(rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8)) + tele
        kinds["intact"] += 1
        return tele

    board = FakeBoard()
    board.damage = damage
    crashes, steps = 0, 0
    car = make_robot("rc_car", port=board.port, telemetry_timeout_s=0.5)
    t0 = time.monotonic()
    with car:
        car.reset()
        while sum(kinds.values()) < frames:
            try:
                car.act(np.array((0.0, 0.1)))
                obs = car.observe()["observation.state"]
                assert np.all(np.isfinite(obs))
                steps += 1
            except Exception:  # noqa: BLE001  (counted: the figure must be 0)
                crashes += 1
        stats = car.firmware_counters()
    board.close()
    print(f"\n== driver: {sum(kinds.values())} telemetry frames into the driver ({kinds}) over "
          f"{steps} control steps in {time.monotonic() - t0:.0f} s")
    print(f"exceptions in the loop: {crashes}; frames counted bad: {stats['bad_frames']} "
          f"(+{stats['oversize_frames']} oversize); telemetry accepted: {stats['telemetry']}; "
          f"last named: {car.last_bad_frame!r}")


def bench_policy(emu: Emulator, run_dir: str, runs: int, run_s: float) -> None:
    import torch

    from policies.base import Policy
    from robolearn.deploy import checkpoint_data

    torch.set_num_threads(1)
    policy_dir, _ = checkpoint_data(run_dir)
    policy = Policy.load(policy_dir, device="cpu")

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(policy.select_action(obs), dtype=np.float64).reshape(-1)

    steps = int(run_s * 20)
    starts = [(k % 12, float(np.random.default_rng(k).uniform(-0.2, 0.2))) for k in range(runs)]
    sim_clean = 0
    for k, lat in starts:
        sim = make_robot("sim_car", track="oval")
        with sim:
            policy.reset()
            obs = sim.reset(options={"checkpoint": k, "lateral": lat, "yaw": 0.0})
            hits = 0
            for _ in range(steps):
                sim.act(act(obs))
                obs = sim.observe()
                hits += bool(sim.state()["collision"])
            sim_clean += hits == 0
    clean, progress = 0, []
    car = make_robot("rc_car", port=emu.port, localisation=emu.localisation)
    with car:
        for k, lat in starts:
            emu.command(f"place {k} {lat}")
            time.sleep(0.15)
            policy.reset()
            obs = car.reset()
            nxt = time.monotonic()
            for _ in range(steps):
                car.act(act(obs))
                nxt += 0.05
                time.sleep(max(0.0, nxt - time.monotonic()))
                obs = car.observe()
            car.stop()
            st = emu.status()
            clean += st["collisions"] == 0
            progress.append(st["checkpoints_reached"])
    lo, hi = _wilson(clean, runs)
    print(f"\n== policy: {run_dir} (BC), {runs} runs of {run_s:g} s from the 12 checkpoints, "
          f"lateral offsets within 0.2 m")
    print(f"through the firmware: {clean}/{runs} runs without a wall contact "
          f"({100 * clean / runs:.0f}%, 95% CI {100 * lo:.0f}-{100 * hi:.0f}); checkpoints "
          f"reached per run median "
          f"{statistics.median(progress):.0f}; baseline pure simulation: {sim_clean}/{runs}")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few trials (a smoke run)")
    ap.add_argument("--only", default="failsafe,reset,lap,rtt,fuzz,driver,policy")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--fuzz-runs", type=int, default=1_000_000)
    ap.add_argument("--policy", help="a BC run directory trained on robolearn/SimCar-v0")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--run-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    trials = 3 if args.quick else args.trials
    if "fuzz" in only:
        bench_fuzz(20_000 if args.quick else args.fuzz_runs)
    if "driver" in only:
        bench_driver(500 if args.quick else 10_000)
    if only & {"failsafe", "reset", "lap", "rtt", "policy"}:
        emu = Emulator()
        time.sleep(1.1)
        try:
            if "failsafe" in only:
                bench_failsafe(emu, trials)
            if "reset" in only:
                bench_reset(emu, max(trials // 5, 2))
            if "rtt" in only:
                bench_rtt(emu, 100 if args.quick else 1000)
            if "lap" in only:
                bench_lap(emu, 1 if args.quick else 2)
            if "policy" in only and args.policy:
                bench_policy(emu, args.policy, 3 if args.quick else args.runs, args.run_s)
        finally:
            print(emu.stop().strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
