"""The Feetech STS3215 bus emulator: lerobot's own FeetechMotorsBus over a real pseudo-terminal,
raw protocol bytes, and random frames.

The lerobot tests need lerobot's ``feetech`` extra (feetech-servo-sdk, pyserial, deepdiff);
without it they are skipped, and the byte-level tests still run.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hardware.emulators.feetech import FRAME_GAP_S, FeetechBus, make_bus
from hardware.emulators.plants import IdealPlant
from hardware.emulators.sts3215 import REGISTERS, STS3215

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ROOT = Path(__file__).resolve().parents[1]


def frame(servo_id: int, instruction: int, *params: int) -> bytes:
    """An instruction packet written out by hand from Feetech's protocol description."""
    body = [servo_id, len(params) + 2, instruction, *params]
    return bytes([0xFF, 0xFF, *body, ~sum(body) & 0xFF])


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for ``check()`` to hold: what lerobot sends without a reply (a sync write, a
    broadcast) reaches the emulator's state a moment after the call returns."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the emulator never got there"
        time.sleep(0.005)


class Port:
    """The driver's end of the pty, opened as a raw byte stream (no pyserial needed)."""

    def __init__(self, path: str, baud: int = termios.B1000000) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.set_baud(baud)

    def set_baud(self, speed: int) -> None:
        """Set the line speed (a termios constant), as pyserial's ``baudrate`` does."""
        attrs = termios.tcgetattr(self.fd)
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def ask(self, data: bytes, wait: float = 0.05, first: float = 0.5) -> bytes:
        """Send ``data``; every byte that comes back, the first within ``first`` seconds (a
        busy machine may delay the emulator's answer), each next within ``wait`` of the last.
        "No reply" costs ``first``: long enough that a late answer is not mistaken for none
        and left to leak into the next question."""
        os.write(self.fd, data)
        out = b""
        while select.select([self.fd], [], [], wait if out else max(first, wait))[0]:
            out += os.read(self.fd, 4096)
        return out

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def emu() -> Iterator[FeetechBus]:
    with make_bus(6) as bus:
        yield bus


@pytest.fixture
def port(emu: FeetechBus) -> Iterator[Port]:
    p = Port(emu.port)
    yield p
    p.close()


def test_the_control_table_is_lerobots() -> None:
    """Every register lerobot knows for the STS3215 sits at the same address with the same size
    and sign bit in the emulator (written independently from Feetech's manual)."""
    from lerobot.motors.feetech.tables import (
        MODEL_NUMBER_TABLE,
        STS_SMS_SERIES_CONTROL_TABLE,
        STS_SMS_SERIES_ENCODINGS_TABLE,
    )

    for name, (address, size) in STS_SMS_SERIES_CONTROL_TABLE.items():
        name = name.strip()
        if name == "Moving_Velocity":  # lerobot's alias of Moving_Velocity_Threshold (80)
            name = "Moving_Velocity_Threshold"
        assert (REGISTERS[name].address, REGISTERS[name].size) == (address, size), name
    for name, bit in STS_SMS_SERIES_ENCODINGS_TABLE.items():
        if name in REGISTERS:
            assert REGISTERS[name].sign_bit == bit, name
    assert REGISTERS["Model_Number"].default == MODEL_NUMBER_TABLE["sts3215"]


# --------------------------------------------------------------------------- raw bytes
def test_replies_byte_for_byte(emu: FeetechBus, port: Port) -> None:
    # PING servo 1 -> FF FF 01 02 00 FC ; READ Model_Number (3, 2) -> 777 = 09 03 little-endian
    assert port.ask(frame(1, 0x01)) == bytes.fromhex("ffff010200fc")
    assert port.ask(frame(1, 0x02, 3, 2)) == bytes.fromhex("ffff0104000903ee")
    # WRITE Torque_Enable=1 to servo 2 -> status; then the goal (sign-magnitude, little-endian)
    assert port.ask(frame(2, 0x03, 40, 1)) == bytes.fromhex("ffff020200fb")
    port.ask(frame(2, 0x03, 42, 0x00, 0x08))
    assert emu.servo(2).value("Goal_Position") == 2048
    # SYNC_READ Present_Position of 3, 1: one status packet each, in the order asked
    out = port.ask(frame(0xFE, 0x82, 56, 2, 3, 1))
    assert [out[:3], out[8:11]] == [b"\xff\xff\x03", b"\xff\xff\x01"] and len(out) == 16
    # SYNC_WRITE goals to 1 and 2 (broadcast: no reply)
    assert port.ask(frame(0xFE, 0x83, 42, 2, 1, 0x10, 0x02, 2, 0x20, 0x03)) == b""
    assert [emu.servo(i).value("Goal_Position") for i in (1, 2)] == [2048, 800]  # 1: torque off
    # REG_WRITE waits for ACTION
    port.ask(frame(2, 0x04, 42, 0x00, 0x04))
    assert emu.servo(2).value("Goal_Position") == 800
    assert port.ask(frame(0xFE, 0x05)) == b""
    assert emu.servo(2).value("Goal_Position") == 1024


def test_a_bad_checksum_gets_no_reply_and_changes_nothing(emu: FeetechBus, port: Port) -> None:
    good = frame(3, 0x03, 7, 0)  # Return_Delay_Time = 0
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    assert port.ask(bad) == b""
    assert emu.servo(3).value("Return_Delay_Time") == 250
    assert emu.stats["bad_checksum"] == 1
    assert port.ask(good) == frame(3, 0x00)  # a status packet has the same layout, ERR 0
    assert emu.servo(3).value("Return_Delay_Time") == 0


def test_a_truncated_frame_is_ignored(emu: FeetechBus, port: Port) -> None:
    write = frame(4, 0x03, 33, 3)  # Operating_Mode = 3
    assert port.ask(write[:5], wait=3 * FRAME_GAP_S) == b""
    assert port.ask(frame(4, 0x01)) == frame(4, 0x00)  # the next frame is served
    assert emu.servo(4).value("Operating_Mode") == 0 and emu.stats["cut_short"] == 1
    # cut short with a good frame right behind: the parser finds it inside the broken one
    assert port.ask(write[:6] + frame(5, 0x01)) == frame(5, 0x00)
    assert emu.servo(4).value("Operating_Mode") == 0


def test_the_servos_answer_only_at_their_own_baud_rate(emu: FeetechBus, port: Port) -> None:
    assert port.ask(frame(6, 0x03, 6, 5)) == frame(6, 0x00)  # Baud_Rate = 57 600 (answered at 1M)
    assert port.ask(frame(6, 0x01)) == b""  # the driver still at 1 Mbps: noise to servo 6
    port.set_baud(termios.B57600)
    assert port.ask(frame(6, 0x01)) == frame(6, 0x00)
    assert port.ask(frame(1, 0x01)) == b""


def test_random_frames_do_not_crash_the_emulator() -> None:
    """1e4 random frames, half with a valid checksum (random instructions, ids, addresses,
    lengths): no exception; every reply is a well-formed status packet; no goal beyond the
    position limits reaches the plant."""
    plant = IdealPlant(list(range(1, 7)))
    targets: list[float | None] = []
    drive = plant.drive

    def recording_drive(servo_id: int, target: float | None) -> None:
        targets.append(target)
        drive(servo_id, target)

    plant.drive = recording_drive  # type: ignore[method-assign]
    bus = FeetechBus([STS3215(i, plant) for i in range(1, 7)], timing=False)
    rng = np.random.default_rng(0)
    instructions = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x82, 0x83, 0x00, 0x7F]
    replies = 0
    for k in range(10_000):
        if k % 2:
            n = int(rng.choice([0, 2, 3, 4, int(rng.integers(0, 12))]))
            params = rng.integers(0, 256, n).tolist()
            data = frame(int(rng.choice([1, 2, 3, 6, 9, 0xFE])),
                         int(rng.choice(instructions)), *params)
        else:
            data = rng.integers(0, 256, int(rng.integers(1, 20))).astype(np.uint8).tobytes()
        for out in bus.receive(data):
            replies += 1
            assert out[:2] == b"\xff\xff" and len(out) == out[3] + 4
            assert ~sum(out[2:-1]) & 0xFF == out[-1] and out[4] <= 0x7F
    assert replies > 300 and bus.stats["frames"] > 4000
    assert all(t is None or 0 <= t < 4096 for t in targets)
    assert all(s.value("Present_Position") in range(4096) for s in bus.servos)


def test_goals_are_clamped_to_the_position_limits(emu: FeetechBus, port: Port) -> None:
    """Min/Max_Position_Limit 1000..3000: a goal of 3500 or of -5 (sign bit 15) drives the joint
    to the nearest limit, never past it; the register keeps what was written."""
    port.ask(frame(1, 0x03, 9, 0xE8, 0x03, 0xB8, 0x0B))  # limits 1000, 3000 in one write
    port.ask(frame(1, 0x03, 40, 1))
    port.ask(frame(1, 0x03, 42, 0xAC, 0x0D))  # 3500
    assert emu.servo(1).goal_target() == 3000.0
    port.ask(frame(1, 0x03, 42, 0x05, 0x80))  # -5
    assert emu.servo(1).goal_target() == 1000.0 and emu.servo(1).value("Goal_Position") == -5


def test_the_entry_point_prints_the_port_and_serves_until_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulators.feetech", "--servos",
                             "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        p = Port(path)
        assert p.ask(frame(2, 0x01)) == frame(2, 0x00)
        assert p.ask(frame(3, 0x01)) == b""  # two servos: no id 3
        p.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "served 2 frames" in err


# --------------------------------------------------------------------------- lerobot's bus
def lerobot_bus(port: str, calibration: dict[str, Any] | None = None) -> Any:
    pytest.importorskip("scservo_sdk", reason="needs lerobot's feetech extra")
    pytest.importorskip("serial", reason="needs lerobot's feetech extra")
    pytest.importorskip("deepdiff", reason="needs lerobot's feetech extra")
    from lerobot.motors import Motor, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    motors = {n: Motor(i + 1, "sts3215", MotorNormMode.RANGE_M100_100)
              for i, n in enumerate(NAMES)}
    return FeetechMotorsBus(port, motors, calibration=calibration)


@pytest.fixture
def bus(emu: FeetechBus) -> Iterator[Any]:
    b = lerobot_bus(emu.port)
    b.connect()  # PING + model number and firmware of every motor
    yield b
    if b.is_connected:
        b.disconnect()


def test_lerobot_connects_reads_and_writes_eeprom_and_ram(emu: FeetechBus, bus: Any) -> None:
    assert bus.ping("gripper") == 777 and bus.ping(7) is None
    emu.servo(2).table[18] = 0x1C  # Phase bit 4 set: lerobot's configure clears it
    bus.configure_motors()
    for i, name in enumerate(NAMES, 1):
        assert bus.read("Return_Delay_Time", name) == 0 == emu.servo(i).value("Return_Delay_Time")
        assert bus.read("Maximum_Acceleration", name) == 254
    assert emu.servo(2).value("Phase") == 0x0C
    bus.write("P_Coefficient", "elbow_flex", 16)  # EEPROM
    bus.write("Torque_Limit", "elbow_flex", 500)  # RAM
    assert (bus.read("P_Coefficient", "elbow_flex"), bus.read("Torque_Limit", "elbow_flex")) \
        == (16, 500)
    assert bus.read("Present_Voltage", "gripper") == 120  # 0.1 V
    assert bus.read("Present_Temperature", "gripper") == 30


def test_lerobot_sync_reads_positions_and_sync_writes_goals(emu: FeetechBus, bus: Any) -> None:
    plant = emu.servos[0].plant
    assert isinstance(plant, IdealPlant)
    for i in range(1, 7):
        plant.move_by_hand(i, 1000 + 100 * i)
    assert bus.sync_read("Present_Position", normalize=False) == {
        n: 1000 + 100 * i for i, n in enumerate(NAMES, 1)}
    bus.enable_torque()
    assert [s.value("Torque_Enable") for s in emu.servos] == [1] * 6
    assert [s.value("Lock") for s in emu.servos] == [1] * 6
    goals = {n: 3000 - 50 * i for i, n in enumerate(NAMES, 1)}
    bus.sync_write("Goal_Position", goals, normalize=False)
    # a sync write has no reply: the emulator applies it a moment after lerobot returns
    eventually(lambda: [s.goal_target() for s in emu.servos] == [float(g) for g in goals.values()])
    deadline = time.monotonic() + 2.0
    while bus.sync_read("Present_Position", normalize=False) != goals:
        assert time.monotonic() < deadline, "the servos did not reach their goals"
        time.sleep(0.05)
    assert bus.sync_read("Moving", normalize=False) == dict.fromkeys(NAMES, 0)
    bus.disable_torque()
    assert [(s.value("Torque_Enable"), s.value("Lock")) for s in emu.servos] == [(0, 0)] * 6


def test_lerobots_calibration_lands_in_the_servos(emu: FeetechBus, bus: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """lerobot's SO-arm calibration steps: half-turn homing, ranges recorded while a person
    moves the joints (the Enter key is the only thing patched), written and kept in EEPROM."""
    from lerobot.motors import MotorCalibration, motors_bus

    plant = emu.servos[0].plant
    assert isinstance(plant, IdealPlant)
    for i in range(1, 7):
        plant.move_by_hand(i, 100 * i)  # actual positions 100 .. 600
    bus.disable_torque()
    offsets = bus.set_half_turn_homings()
    assert offsets == {n: 100 * i - 2047 for i, n in enumerate(NAMES, 1)}
    raw = int.from_bytes(emu.servo(1).table[31:33], "little")
    assert raw == (1 << 11) | 1947  # sign-magnitude, sign at bit 11
    assert bus.sync_read("Present_Position", normalize=False) == dict.fromkeys(NAMES, 2047)

    presses = iter([False] * 3 + [True])

    def person() -> None:  # swings each joint 500 steps either way while lerobot records
        for i in range(1, 7):
            for pos in (100 * i - 500, 100 * i + 500, 100 * i):
                plant.move_by_hand(i, pos)
                time.sleep(0.1)  # held long enough for lerobot's polling on a busy machine

    hand = threading.Thread(target=person)
    monkeypatch.setattr(motors_bus, "enter_pressed", lambda: next(presses) if not hand.is_alive()
                        else False)
    hand.start()
    mins, maxes = bus.record_ranges_of_motion(display_values=False)
    hand.join()
    assert mins == dict.fromkeys(NAMES, 1547) and maxes == dict.fromkeys(NAMES, 2547)
    calibration = {n: MotorCalibration(i, 0, offsets[n], mins[n], maxes[n])
                   for i, n in enumerate(NAMES, 1)}
    bus.write_calibration(calibration)
    assert bus.is_calibrated
    for s in emu.servos:  # unlocked (torque off): kept over a power cycle
        s.power_cycle()
    assert bus.read_calibration() == calibration
    # a goal past the recorded range never reaches the joint: the servo clamps it
    bus.enable_torque()
    bus.write("Goal_Position", "elbow_flex", 4000, normalize=False)
    assert emu.servo(3).goal_target() == (2547 + offsets["elbow_flex"]) % 4096
    # normalised: lerobot maps -100 .. 100 onto the recorded range
    bus.sync_write("Goal_Position", dict.fromkeys(NAMES, 100.0))
    eventually(lambda: emu.servo(1).value("Goal_Position") == 2547)  # no reply to wait for


def test_lerobot_sees_the_servos_errors_and_a_broadcast_ping(emu: FeetechBus, bus: Any) -> None:
    bus.enable_torque()
    emu.servo(5).temperature = 80.0  # above Max_Temperature_Limit (70): overheat, unloads
    with pytest.raises(RuntimeError, match="Overheat"):
        bus.read("Present_Position", "wrist_roll")
    assert emu.servo(5).value("Torque_Enable") == 0 and emu.servo(4).value("Torque_Enable") == 1
    emu.servo(5).temperature = 30.0
    assert bus.broadcast_ping() == dict.fromkeys(range(1, 7), 777)


def test_bus_cycles_take_at_least_their_wire_time(emu: FeetechBus, bus: Any) -> None:
    """Sync-read 6 positions + sync-write 6 goals at 1 Mbps with no return delay: 14 + 6 * 8
    bytes read, 8 + 6 * 3 written, 10 bits each = 0.88 ms on the wire at the least."""
    bus.configure_motors()
    bus.enable_torque()
    goals = dict.fromkeys(NAMES, 2048)
    bus.sync_write("Goal_Position", goals, normalize=False)
    t0 = time.perf_counter()
    for _ in range(20):  # each read waits for the previous write's bytes to clear the wire
        bus.sync_read("Present_Position", normalize=False)
        bus.sync_write("Goal_Position", goals, normalize=False)
    elapsed = time.perf_counter() - t0  # the last write returns before its bytes are out
    assert elapsed >= 20 * (14 + 6 * 8 + 8 + 6 * 3) * 10e-6 - (8 + 6 * 3) * 10e-6


# --------------------------------------------------------------------------- the SO-101 plant
def test_goals_drive_the_simulated_so101() -> None:
    """Servo 2 (shoulder_lift) with torque on is driven to 0.5 rad in the simulation and
    reports where the simulated joint is; servo 1 (shoulder_pan) with torque off is not."""
    from hardware.emulators.so101_plant import SO101Plant, angle_to_steps
    from sim.arm.model import HOME

    plant = SO101Plant()
    with make_bus(6, plant) as emu:
        port = Port(emu.port)
        goal = round(angle_to_steps(2, 0.5))
        port.ask(frame(2, 0x03, 40, 1))
        port.ask(frame(2, 0x03, 42, goal & 0xFF, goal >> 8))
        pan = round(angle_to_steps(1, 0.8))
        port.ask(frame(1, 0x03, 42, pan & 0xFF, pan >> 8))
        time.sleep(1.0)
        angles = plant.joint_angles()
        reply = port.ask(frame(2, 0x02, 56, 2))
        port.close()
    assert abs(angles[1] - 0.5) < 0.05
    present = int.from_bytes(reply[5:7], "little")
    assert abs(present - angle_to_steps(2, angles[1])) <= 1
    assert abs(angles[0] - HOME[0]) < 0.01  # shoulder_pan, torque off: its goal moves nothing
