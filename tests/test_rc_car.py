"""The RC car end to end: the real firmware binary in simavr, its pins measured, the real driver
over a pseudo-terminal, the MuJoCo car moved by the measured pulses; plus the firmware core's
fuzzer and byte-level doubles for the driver's error paths."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from hardware.emulators.rc_car import build
from hardware.rc_car import protocol as P
from hardware.rc_car.trials import (
    JITTER_US,
    Emulator,
    FakeBoard,
    failsafe_trial,
    first_pulses_after_reset,
    pure_pursuit_run,
)
from robolearn.robot import RobotError, make_robot

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "hardware" / "rc_car" / "firmware"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    e = Emulator()
    time.sleep(1.1)  # the firmware holds neutral 1 s before it accepts ARM (ESC arming)
    try:
        yield e
    finally:
        e.stop()


def test_firmware_fits_the_atmega328p() -> None:
    elf, _ = build()
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sizes = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
             if line.startswith(".")}
    assert sizes[".text"] + sizes.get(".data", 0) < 30 * 1024  # flash minus the bootloader
    assert sizes.get(".data", 0) + sizes.get(".bss", 0) < 1536  # 2 KiB RAM, room for the stack


def test_host_and_firmware_agree_on_the_crc() -> None:
    assert P.crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value (PROTOCOL.md)
    frame = P.drive(7, 1600, 1400)
    assert b"\x00" not in frame[:-1] and frame[-1] == 0
    assert P.decode(frame[:-1]) == struct.pack("<BHHH", P.DRIVE, 7, 1600, 1400)
    damaged = bytearray(frame[:-1])
    damaged[3] ^= 0x10
    with pytest.raises(P.FrameError):
        P.decode(bytes(damaged))


class Link:
    """Raw protocol access to the emulated board, for what the driver never sends."""

    def __init__(self, port: str) -> None:
        self.s = serial.Serial(port, 115200, timeout=0.01)
        self.s.reset_input_buffer()
        self.frames = P.FrameReader()

    def xfer(self, frame: bytes, timeout: float = 0.3) -> P.HelloReply | P.Telemetry:
        self.s.reset_input_buffer()
        self.s.write(frame)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for f in self.frames.feed(self.s.read(64)):
                try:  # the first bytes may be the tail of an earlier frame: skip it
                    return P.parse(P.decode(f))
                except P.FrameError:
                    continue
        raise AssertionError("no reply")


def test_commands_reach_the_pins_and_bad_frames_never_do(emu: Emulator) -> None:
    link = Link(emu.port)
    try:
        hello = link.xfer(P.hello())
        assert isinstance(hello, P.HelloReply) and hello.version == P.PROTOCOL_VERSION
        t = link.xfer(P.arm(100, 80))
        assert isinstance(t, P.Telemetry) and t.armed and t.ready
        bad0, inv0 = t.bad_frames, t.invalid_cmds
        for seq in range(101, 111):  # 0.5 s of driving at 20 Hz: widths measured on the pins
            t = link.xfer(P.drive(seq, 1650, 1720))
            time.sleep(0.05)
        st = emu.status()
        assert abs(st["steer_us"] - 1650) <= JITTER_US and abs(st["esc_us"] - 1720) <= JITTER_US
        damaged = bytearray(P.drive(111, 1650, 2000))
        damaged[4] ^= 0x01  # one bit: the CRC catches it
        link.s.write(bytes(damaged))
        t = link.xfer(P.drive(111, 1650, 2001))  # out of range
        t = link.xfer(P.drive(105, 1650, 1900))  # an old sequence number (a replay)
        assert isinstance(t, P.Telemetry)
        assert t.bad_frames == bad0 + 1 and t.invalid_cmds == inv0 + 2, t
        assert t.esc_us == 1720 and t.steer_us == 1650  # none of them was applied
        t = link.xfer(P.disarm(112))
        assert isinstance(t, P.Telemetry) and not t.armed and t.esc_us == 1500
    finally:
        link.s.close()


@pytest.mark.parametrize("mode", ["killed", "closed", "garbage"])
def test_failsafe_neutral_within_100ms_measured_on_the_pins(emu: Emulator, mode: str) -> None:
    """The host SIGKILLed, the port closed, or garbage instead of frames: the ESC pulse is
    neutral (and the steering centred) within 100 ms of the last valid frame, in the firmware's
    own time, and nothing is applied after."""
    for seed in range(2):
        trial = failsafe_trial(emu, mode, seed)
        assert trial.host_stalls <= 2, trial  # a host too loaded to keep 50 Hz: retried
        assert trial.latency_ms <= 100, trial
        assert trial.latency_ms >= 80, trial  # the 80 ms timeout, not an earlier stop
        assert trial.applied_after == 0 and trial.steering_centred, trial


def test_after_a_reset_the_first_pulses_are_neutral(emu: Emulator) -> None:
    steer, esc, first_ms = first_pulses_after_reset(emu)
    assert abs(steer - 1500) <= JITTER_US and abs(esc - 1500) <= JITTER_US
    assert first_ms <= 25  # the first servo frame after boot


def test_scripted_driver_laps_through_the_firmware_like_in_simulation(emu: Emulator) -> None:
    """Pure pursuit through driver -> protocol -> firmware -> pulses -> MuJoCo: a lap without
    touching a wall, the lap time within 10 % of the same driver in pure simulation."""
    sim_lap = _sim_lap_time()
    boards = [emu]
    try:
        for attempt in (1, 2):
            board = boards[-1]
            car = make_robot("rc_car", port=board.port, localisation=board.localisation)
            with car:
                board.command("place 0")
                before = car.firmware_counters()  # the board's counters run from its reset
                try:
                    pure_pursuit_run(car, int((sim_lap + 2.0) * 20), 20.0)
                except RobotError as exc:
                    # 20 Hz commands against an 80 ms failsafe leave 30 ms of slack: a host
                    # stall on a busy 2-core machine (the driver names it from the longest gap
                    # between two commands) is the test machine's, not the path's: one more
                    # lap on a fresh board, then it fails. A lost or damaged command fails now
                    if attempt == 2 or "this host stalled" not in str(exc):
                        raise
                    boards.append(Emulator())
                    time.sleep(1.1)  # the firmware's ESC arming
                    continue
                counters = {k: v - before.get(k, 0) for k, v in car.firmware_counters().items()}
            break
        st = boards[-1].status()
    finally:
        for board in boards[1:]:
            board.stop()
    assert st["laps"] >= 1 and st["collisions"] == 0, st
    assert abs(st["lap_times"][0] - sim_lap) <= 0.1 * sim_lap, (st["lap_times"], sim_lap)
    assert counters["fw_failsafes"] == 0 and counters["bad_frames"] == 0, counters


def _sim_lap_time() -> float:
    from sim.car.driver import PurePursuitDriver
    from sim.car.tasks import LapTask

    sim = make_robot("sim_car", track="oval")
    task = LapTask()
    with sim:
        obs = sim.reset(seed=0, options={"checkpoint": 0, "lateral": 0.0, "yaw": 0.0})
        task.reset(sim)
        drive = PurePursuitDriver(sim.track)
        for _ in range(600):
            a = sim.act(drive(obs))
            task.reward_terms(sim, a)
            obs = sim.observe()
            if task.laps:
                return task.lap_times[0]
    raise AssertionError("pure pursuit did not lap the oval in simulation")


def test_driver_names_a_firmware_of_another_protocol_version() -> None:
    board = FakeBoard(version=2)
    try:
        car = make_robot("rc_car", port=board.port)
        with pytest.raises(RobotError, match="protocol 2 .*this driver 1"):
            car.connect()
        assert not car.is_connected
    finally:
        board.close()


def test_garbled_telemetry_is_counted_and_named_never_fatal() -> None:
    rng = np.random.default_rng(0)
    noise = bytes(rng.integers(1, 256, 20, dtype=np.uint8)) + b"\x00" + b"\x05\x83\x01\x02\x00"
    board = FakeBoard(garbage=noise)
    try:
        car = make_robot("rc_car", port=board.port)
        with car:
            car.reset()
            for _ in range(30):
                car.act(np.array((0.1, 0.2)))
                car.observe()
                time.sleep(0.01)
            sent = car.act(np.array((np.nan, 0.5)))
            assert sent[1] == 0.0  # a NaN action stops the car: counted, not sent
            stats = car.firmware_counters()
        assert stats["bad_frames"] >= 30 and stats["telemetry"] >= 30, stats
        assert stats["nonfinite_actions"] == 1
        assert car.last_bad_frame  # what was wrong with the last one, named
    finally:
        board.close()


def test_a_silent_port_is_named_not_hung() -> None:
    master, slave = os.openpty()
    try:
        car = make_robot("rc_car", port=os.ttyname(slave), boot_timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(RobotError, match="no answer to HELLO .* firmware flashed"):
            car.connect()
        assert time.monotonic() - t0 < 2
    finally:
        os.close(master)
        os.close(slave)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="robot.failsafe_ms"):
        make_robot("rc_car", port="/dev/null", failsafe_ms=200)
    with pytest.raises(ValueError, match="steer_center_us"):
        make_robot("rc_car", port="/dev/null", steer_center_us=1800, steer_span_us=400)
    with pytest.raises(ValueError, match="robot.localisation"):
        make_robot("rc_car", port="/dev/null", localisation="udp://x")
    with pytest.raises(RobotError, match="robot.port is not set"):
        make_robot("rc_car").connect()


def test_firmware_parser_fuzzed_with_an_independent_oracle(tmp_path: Path) -> None:
    """libFuzzer over the firmware core (the same C source): 20 000 inputs in CI (the bench
    runs 1e6), no crash, no sanitizer report, no oracle violation, and commands really applied
    (the oracle is exercised, not idle)."""
    subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "fuzz"], check=True,
                   capture_output=True)
    out = subprocess.run([str(FIRMWARE_DIR / "build" / "fuzz_rc_core"), "-runs=20000",
                          "-seed=1", f"-artifact_prefix={tmp_path}/", str(tmp_path),
                          str(FIRMWARE_DIR / "fuzz_seeds")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Done 20000 runs" in out.stderr
    applied = int(out.stderr.split(" commands applied")[0].split()[-1])
    assert applied > 100, out.stderr[-500:]


def test_deploy_a_sim_trained_checkpoint_on_the_emulated_car(emu: Emulator, tmp_path: Path
                                                             ) -> None:
    """``robolearn deploy CHECKPOINT robot=rc_car robot.port=...``: the policy trained on
    sim_car drives the car through its firmware, every step recorded under the rc_car's name;
    then the board dies mid-episode and deploy ends in one line, the steps kept."""
    import subprocess
    import sys

    from data.store import EpisodeStore
    from tests.test_deploy import _checkpoint

    run = _checkpoint(tmp_path / "car", "robolearn/SimCar-v0")
    out = tmp_path / "deployed"
    emu.command("place 0")
    cmd = [sys.executable, "-m", "robolearn.cli", "deploy", str(run), "robot=rc_car",
           f"robot.port={emu.port}", f"robot.localisation={emu.localisation}", "max_steps=30",
           f"output={out}", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    with EpisodeStore.open(out) as store:
        assert len(store) == 1 and store.info(0).length == 30
        assert store.metadata.get("robot", store.info(0).metadata.get("robot")) == "rc_car"


def test_a_board_that_dies_mid_deploy_is_named_and_the_steps_kept(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from data.store import EpisodeStore
    from tests.test_deploy import _checkpoint

    run = _checkpoint(tmp_path / "car", "robolearn/SimCar-v0")
    board = Emulator()
    out = tmp_path / "cut"
    time.sleep(1.1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "robolearn.cli", "deploy", str(run), "robot=rc_car",
         f"robot.port={board.port}", f"robot.localisation={board.localisation}",
         "max_steps=100000", f"output={out}", "-q"], stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("deploying"), line
        # Kill the board once the policy's throttle has reached its pins and deploy has
        # flushed 10 steps to its store (its journal, inflight.json), not after a fixed
        # sleep: under load the firmware's arming delay alone took longer than 1.5 s once,
        # and a starved host once made 1 step in the second after the throttle arrived.
        end = time.monotonic() + 60
        while board.status()["esc_us"] <= 1510 and time.monotonic() < end \
                and proc.poll() is None:
            time.sleep(0.05)
        journal = out / "inflight.json"
        while time.monotonic() < end and proc.poll() is None:
            try:
                if json.loads(journal.read_text())["flushed"] >= 10:
                    break
            except (OSError, ValueError, KeyError):
                pass  # not written yet, or being replaced
            time.sleep(0.05)
        board.proc.send_signal(signal.SIGKILL)  # the emulator and its board: the link is gone
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
        board.stop()
    assert proc.returncode == 1, rest
    said = [ln for ln in rest.splitlines() if ln.startswith("robolearn deploy")]
    assert len(said) == 1 and "rc_car" in said[0] and "kept" in said[0], rest
    with EpisodeStore.open(out) as store:
        assert len(store) == 1 and store.info(0).length >= 10


def test_collect_drives_the_emulated_car_from_the_keyboard(emu: Emulator, tmp_path: Path
                                                           ) -> None:
    """``robolearn collect env=robolearn/RCCar-v0 robot.port=... source=teleop
    teleop=keyboard``: the keys reach the car through the firmware (the emulator sees the ESC
    pulses and the car moving), every step recorded as teleop."""
    from data.store import EpisodeStore
    from tests.test_collect import Terminal

    out = tmp_path / "laps.zarr"
    emu.command("place 0")
    time.sleep(0.4)  # the judge's status is written 10 times a second
    before = emu.status()
    term = Terminal(["collect", str(out), "env=robolearn/RCCar-v0", f"robot.port={emu.port}",
                     f"robot.localisation={emu.localisation}", "source=teleop",
                     "teleop=keyboard", "episodes=1"])
    try:
        term.wait_for("episode 1 of 1 (seed 0): enter: start", timeout=60)
        term.type(b"\r")
        term.type(b"w", times=30)  # 1.5 s of throttle
        term.wait_for("speed ")
        term.type(b"\r")
        term.wait_for("episode over (you ended it)", timeout=30)
        time.sleep(0.5)
        term.type(b"k")
        rc = term.close()
    finally:
        term.proc.kill()
    assert rc == 0, term.text
    st = emu.status()
    assert math.hypot(st["x"] - before["x"], st["y"] - before["y"]) > 0.2, (before, st)
    with EpisodeStore.open(out) as store:
        ep = store.episode(0)
        assert ep.info.sources.get("teleop", 0) == ep.info.length > 10
        assert ep["action"][:, 1].max() > 0.5  # the w key's throttle was sent
        assert np.abs(ep["observation.state"][:, 4]).max() > 0.3  # the encoder saw it move


def test_dead_reckoning_follows_the_car_from_its_start(emu: Emulator) -> None:
    """Without a localisation source the pose comes from the encoder and the commanded steering
    (bicycle model) from the start pose given to reset: after 5 s of pure pursuit through the
    first turn it is within 0.5 m of where the judge (the simulator) has the car."""
    emu.command("place 0")
    time.sleep(0.2)
    car = make_robot("rc_car", port=emu.port)  # localisation=dead_reckoning
    with car:
        pure_pursuit_run(car, 100, 20.0)
        x, y = car.state()["pos"][:2]
        car.stop()
    time.sleep(0.3)
    st = emu.status()
    assert math.hypot(st["x"] - x, st["y"] - y) < 0.5, ((x, y), st)
    assert st["checkpoints_reached"] >= 5  # it drove through the turn, not into a wall


def _rcsim_pid(emu: Emulator) -> int:
    """The simulated board's process (rcsim), a child of the emulator."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
            if name == "rcsim" and int(rest.split()[1]) == emu.proc.pid:
                return int(d.name)
    raise RuntimeError("no rcsim process under the emulator")


def test_a_paused_board_does_not_invent_a_late_host(emu: Emulator) -> None:
    """The OS pauses the simulated board for 70 ms (a busy machine does) while the host keeps
    its 50 ms cadence: the board slips its clock instead of racing to catch up, so the host's
    commands stay < 80 ms apart in the firmware's time and the failsafe does not fire. Racing
    stretched one gap to the pause plus the period (a full suite on 2 cores failed deploys
    this way at random)."""
    import signal
    import threading

    pid = _rcsim_pid(emu)
    car = make_robot("rc_car", port=emu.port, localisation=emu.localisation, failsafe_ms=80)

    def pause() -> None:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.07)
        os.kill(pid, signal.SIGCONT)

    with car:
        car.reset()
        before = car.firmware_counters()["fw_failsafes"]
        nxt = time.monotonic()
        for step in range(16):
            car.act(np.array((0.0, 0.0)))  # throttle 0: the car stays where it is
            if step in (3, 9):
                threading.Thread(target=pause).start()
            nxt += 0.05
            time.sleep(max(nxt - time.monotonic(), 0.0))
        car.observe()  # raises RobotError if the firmware's failsafe fired (so does act)
        assert car.firmware_counters()["fw_failsafes"] == before
        car.stop()


def test_a_first_command_just_after_a_standing_failsafe_still_drives(emu: Emulator) -> None:
    """The failsafe's own telemetry takes milliseconds to reach the driver. A host whose first
    command of an episode goes out just after the failsafe fired, before the driver has heard
    of it, must still drive (the driver ARMs before that command), not find its command refused
    and the episode stopped at its second step."""
    car = make_robot("rc_car", port=emu.port, localisation=emu.localisation, failsafe_ms=80)
    with car:
        car.reset()
        refused = car.firmware_counters()["fw_invalid_cmds"]
        for k in range(16):  # stand 72-102 ms, either side of the 80 ms failsafe
            car.reset()  # (re-arms quietly if the last episode's first command was refused)
            time.sleep(0.072 + 0.002 * k)
            car.act(np.array((0.0, 0.0)))  # throttle 0: the car stays where it is
        car.reset()  # fresh telemetry: the firmware counts every command it refused
        # (counted on the firmware, not by a second command: a host stalled past the failsafe
        # after the first command would fail that, whatever the driver did before it)
        assert car.firmware_counters()["fw_invalid_cmds"] == refused
        assert 1 <= car.stats["standing_rearms"] <= 16


def test_a_host_slow_before_the_first_command_re_arms_but_not_once_driving(emu: Emulator
                                                                            ) -> None:
    """Between reset() and the episode's first command the car stands at neutral; a host that
    takes longer than the failsafe there (a recorder's first write, a policy's first call)
    gets the car re-armed and counted. Once it has driven, the same silence is an error."""
    from robolearn.robot import RobotError

    car = make_robot("rc_car", port=emu.port, localisation=emu.localisation, failsafe_ms=80)
    with car:
        car.reset()
        time.sleep(0.3)  # the failsafe (80 ms) fires while the car stands
        car.act(np.array((0.0, 0.1)))
        assert car.stats["standing_rearms"] == 1
        time.sleep(0.3)  # now it was driving: the failsafe's stop is reported, and why
        with pytest.raises(RobotError, match="failsafe stopped the car.*longest gap between two "
                                             r"commands was [0-9]{3} ms: this host stalled"):
            car.act(np.array((0.0, 0.1)))
        car.reset()  # re-arms
        car.act(np.array((0.0, 0.0)))
