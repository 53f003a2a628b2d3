"""The Dynamixel Protocol 2.0 bus emulator (the Koch v1.1's servos): raw protocol bytes written
by hand from the protocol description, lerobot's own DynamixelMotorsBus and KochFollower over a
real pseudo-terminal, the Bus_Watchdog, and the simulated arm behind the servos."""

from __future__ import annotations

import builtins
import os
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware.emulators.dynamixel import FRAME_GAP_S, DynamixelBus, make_bus
from hardware.emulators.plants import IdealPlant
from hardware.emulators.xl_servos import MODELS, XL330_M288, XL430_W250
from tests.test_feetech_emulator import Port, eventually

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
KOCH = dict(zip(NAMES, ["xl430-w250"] * 2 + ["xl330-m288"] * 4, strict=True))
ROOT = Path(__file__).resolve().parents[1]


def crc(data: bytes) -> int:
    """CRC-16, polynomial 0x8005, initial 0, MSB first: bit by bit, as the e-manual states it."""
    value = 0
    for byte in data:
        value ^= byte << 8
        for _ in range(8):
            value = ((value << 1) ^ 0x8005 if value & 0x8000 else value << 1) & 0xFFFF
    return value


def frame(servo_id: int, instruction: int, *params: int) -> bytes:
    """A Protocol 2.0 packet written out by hand: header, reserved 0, id, LEN (LE16, counting
    instruction + stuffed params + CRC), instruction, params with FF FF FD -> FF FF FD FD, CRC."""
    body = bytes([instruction, *params]).replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")
    head = bytes([0xFF, 0xFF, 0xFD, 0x00, servo_id]) + (len(body) + 2).to_bytes(2, "little") + body
    return head + crc(head).to_bytes(2, "little")


def reply(servo_id: int, error: int, *data: int) -> bytes:
    return frame(servo_id, 0x55, error, *data)


def u16(v: int) -> list[int]:
    return list(v.to_bytes(2, "little"))


def i32(v: int) -> list[int]:
    return list(v.to_bytes(4, "little", signed=True))


@pytest.fixture
def emu() -> Iterator[DynamixelBus]:
    with make_bus(6) as bus:
        yield bus


@pytest.fixture
def port(emu: DynamixelBus) -> Iterator[Port]:
    p = Port(emu.port)
    yield p
    p.close()


def test_the_crc_matches_the_e_manuals_example() -> None:
    # the e-manual's PING of id 1, and an XM430's reply (model 1030, firmware 0x26)
    assert frame(1, 0x01) == bytes.fromhex("fffffd0001030001194e")
    assert reply(1, 0, 0x06, 0x04, 0x26) == bytes.fromhex("fffffd000107005500060426655d")


def test_the_control_tables_are_lerobots() -> None:
    """Every register lerobot knows for the X series sits at the same address with the same
    size in both models (written independently from the e-manual), except those a model
    lacks; model numbers, operating modes, baud rates and signed registers agree."""
    from lerobot.motors.dynamixel.tables import (
        MODEL_NUMBER_TABLE,
        MODEL_OPERATING_MODES,
        X_SERIES_BAUDRATE_TABLE,
        X_SERIES_CONTROL_TABLE,
        X_SERIES_ENCODINGS_TABLE,
    )

    lacks = {"xl430-w250": {"Acceleration_Limit", "Current_Limit", "Goal_Current"},
             "xl330-m288": {"Acceleration_Limit"},
             "xl330-m077": {"Acceleration_Limit"}}  # not in these models' e-manual tables
    for model in MODELS.values():
        regs = model.registers
        for name, (address, size) in X_SERIES_CONTROL_TABLE.items():
            if name in lacks[model.name]:
                assert name not in regs
            else:
                assert (regs[name].address, regs[name].size) == (address, size), name
        for name in X_SERIES_ENCODINGS_TABLE:
            if name in regs:
                assert regs[name].signed, name
        assert model.number == MODEL_NUMBER_TABLE[model.name]
        assert model.modes == set(MODEL_OPERATING_MODES[model.name])
        for rate, value in X_SERIES_BAUDRATE_TABLE.items():
            assert model.bauds[value] == rate


# --------------------------------------------------------------------------- raw bytes
def test_replies_byte_for_byte(emu: DynamixelBus, port: Port) -> None:
    assert port.ask(frame(1, 0x01)) == reply(1, 0, *u16(1060), XL430_W250.firmware)
    assert port.ask(frame(3, 0x01)) == reply(3, 0, *u16(1200), XL330_M288.firmware)
    # READ Model_Number (0, 2) of servo 2
    assert port.ask(frame(2, 0x02, *u16(0), *u16(2))) == reply(2, 0, *u16(1060))
    # WRITE Torque_Enable (64) = 1 -> status; then a goal (LE32)
    assert port.ask(frame(2, 0x03, *u16(64), 1)) == reply(2, 0)
    assert port.ask(frame(2, 0x03, *u16(116), *i32(3000))) == reply(2, 0)
    assert emu.servo(2).value("Goal_Position") == 3000
    # SYNC_READ Present_Position (132, 4) of 4, 1: one status packet each, in the order asked
    out = port.ask(frame(0xFE, 0x82, *u16(132), *u16(4), 4, 1))
    assert out == reply(4, 0, *i32(2048)) + reply(1, 0, *i32(2048))
    # SYNC_WRITE goals to 1 (torque off: ignored, the goal follows the joint) and 2: no reply
    assert port.ask(frame(0xFE, 0x83, *u16(116), *u16(4), 1, *i32(100), 2, *i32(2500))) == b""
    assert [emu.servo(i).value("Goal_Position") for i in (1, 2)] == [2048, 2500]
    # BULK_READ: id, address, length per servo; replies in list order
    out = port.ask(frame(0xFE, 0x92, 2, *u16(116), *u16(4), 5, *u16(7), *u16(1)))
    assert out == reply(2, 0, *i32(2500)) + reply(5, 0, 5)
    # BULK_WRITE: id, address, length, data per servo
    assert port.ask(frame(0xFE, 0x93, 2, *u16(116), *u16(4), *i32(2400),
                          5, *u16(65), *u16(1), 1)) == b""
    assert (emu.servo(2).value("Goal_Position"), emu.servo(5).value("LED")) == (2400, 1)
    # REG_WRITE waits for ACTION (broadcast: no reply)
    assert port.ask(frame(2, 0x04, *u16(116), *i32(1000))) == reply(2, 0)
    assert emu.servo(2).value("Goal_Position") == 2400
    assert port.ask(frame(0xFE, 0x05)) == b""
    assert emu.servo(2).value("Goal_Position") == 1000
    assert port.ask(frame(2, 0x05)) == reply(2, 0x02)  # ACTION with nothing registered


def test_status_packets_carry_the_servos_errors(emu: DynamixelBus, port: Port) -> None:
    port.ask(frame(1, 0x03, *u16(64), 1))
    assert port.ask(frame(1, 0x03, *u16(20), *i32(10))) == reply(1, 0x07)  # EEPROM, torque on
    assert port.ask(frame(1, 0x03, *u16(116), *u16(10))) == reply(1, 0x05)  # half a register
    assert port.ask(frame(1, 0x03, *u16(11), 0)) == reply(1, 0x07)  # still locked
    port.ask(frame(1, 0x03, *u16(64), 0))
    assert port.ask(frame(1, 0x03, *u16(11), 0)) == reply(1, 0x04)  # XL430: no current mode
    assert port.ask(frame(3, 0x03, *u16(11), 0)) == reply(3, 0)  # XL330 has it
    assert port.ask(frame(1, 0x03, *u16(132), *i32(5))) == reply(1, 0x07)  # read-only
    # position mode (3): a goal outside Min/Max_Position_Limit is refused (Data Limit Error)
    port.ask(frame(1, 0x03, *u16(48), *i32(3000), *i32(1000)))  # max 3000, min 1000 at once
    port.ask(frame(1, 0x03, *u16(64), 1))
    assert port.ask(frame(1, 0x03, *u16(116), *i32(3500))) == reply(1, 0x06)
    assert port.ask(frame(1, 0x03, *u16(116), *i32(2900))) == reply(1, 0)
    assert emu.servo(1).goal_target() == 2900.0
    assert emu.servo(1).value("Moving") == 1  # on its way at 3000 steps/s
    # a hardware error in Shutdown (overheating) switches torque off; the alert bit is set
    emu.servo(1).temperature = 80.0
    assert port.ask(frame(1, 0x01)) == reply(1, 0x80, *u16(1060), XL430_W250.firmware)
    assert emu.servo(1).value("Torque_Enable") == 0
    assert emu.servo(1).value("Hardware_Error_Status") == 0x04
    emu.servo(1).temperature = 30.0
    assert port.ask(frame(1, 0x08)) == reply(1, 0x80)  # REBOOT answers, then clears it
    assert port.ask(frame(1, 0x01))[8] == 0


def test_byte_stuffing_both_ways(emu: DynamixelBus, port: Port) -> None:
    """A Homing_Offset whose bytes are FF FF FD FF (-131073) travels stuffed both ways."""
    request = frame(4, 0x03, *u16(20), 0xFF, 0xFF, 0xFD, 0xFF)
    assert request[7:15] == bytes([0x03, 20, 0, 0xFF, 0xFF, 0xFD, 0xFD, 0xFF])  # stuffed
    assert port.ask(request) == reply(4, 0)
    assert emu.servo(4).value("Homing_Offset") == -131073
    out = port.ask(frame(4, 0x02, *u16(20), *u16(4)))
    assert out == reply(4, 0, 0xFF, 0xFF, 0xFD, 0xFF)
    assert out[9:14] == bytes([0xFF, 0xFF, 0xFD, 0xFD, 0xFF]) and out[5] == 9  # LEN counts it


def test_bad_crc_and_malformed_frames_get_no_reply(emu: DynamixelBus, port: Port) -> None:
    good = frame(3, 0x03, *u16(9), 0)  # Return_Delay_Time = 0
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    assert port.ask(bad) == b""
    assert emu.servo(3).value("Return_Delay_Time") == 250 and emu.stats["bad_crc"] == 1
    assert port.ask(good) == reply(3, 0)
    assert emu.servo(3).value("Return_Delay_Time") == 0
    assert port.ask(frame(3, 0x02, 9, 0, 1)) == b""  # READ with 3 parameters
    assert port.ask(frame(0xFE, 0x02, *u16(9), *u16(1))) == b""  # READ to everyone
    assert emu.stats["malformed"] == 2
    assert port.ask(frame(3, 0x7F)) == reply(3, 0x02)  # unknown instruction: Instruction Error
    bad_reserved = bytearray(frame(3, 0x01))
    bad_reserved[3] = 0x01
    assert port.ask(bytes(bad_reserved)) == b"" and emu.stats["bad_header"] >= 1


def test_a_truncated_frame_is_ignored(emu: DynamixelBus, port: Port) -> None:
    write = frame(4, 0x03, *u16(11), 4)  # Operating_Mode = 4
    assert port.ask(write[:9], wait=3 * FRAME_GAP_S) == b""
    assert port.ask(frame(4, 0x01))[:9] == reply(4, 0, 0, 0, 0)[:9]  # the next frame is served
    assert emu.servo(4).value("Operating_Mode") == 3 and emu.stats["cut_short"] >= 1
    # cut short with a good frame right behind: found inside the broken one
    assert port.ask(write[:10] + frame(5, 0x02, *u16(7), *u16(1))) == reply(5, 0, 5)
    assert emu.servo(4).value("Operating_Mode") == 3


def test_the_servos_answer_only_at_their_own_baud_rate(emu: DynamixelBus, port: Port) -> None:
    assert port.ask(frame(6, 0x03, *u16(8), 1)) == reply(6, 0)  # Baud_Rate = 57 600
    assert port.ask(frame(6, 0x01)) == b"" and emu.stats["wrong_baud"] == 1
    port.set_baud(termios.B57600)
    assert port.ask(frame(6, 0x01))[:8] == reply(6, 0, 0, 0, 0)[:8]
    assert port.ask(frame(1, 0x01)) == b""


def test_the_entry_point_prints_the_port_and_serves_until_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulators.dynamixel", "--servos",
                             "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/")
        p = Port(path)
        assert p.ask(frame(2, 0x01)) == reply(2, 0, *u16(1060), XL430_W250.firmware)
        assert p.ask(frame(3, 0x01)) == b""  # two servos: no id 3
        p.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "served 2 frames" in err


# --------------------------------------------------------------------------- lerobot's bus
def lerobot_bus(port: str, calibration: dict[str, Any] | None = None) -> Any:
    pytest.importorskip("dynamixel_sdk", reason="needs lerobot's dynamixel extra")
    from lerobot.motors import Motor, MotorNormMode
    from lerobot.motors.dynamixel import DynamixelMotorsBus

    motors = {n: Motor(i, KOCH[n], MotorNormMode.RANGE_M100_100)
              for i, n in enumerate(NAMES, 1)}
    return DynamixelMotorsBus(port, motors, calibration=calibration)


@pytest.fixture
def bus(emu: DynamixelBus) -> Iterator[Any]:
    b = lerobot_bus(emu.port)
    b.connect()  # pings every motor and checks its model number
    yield b
    if b.is_connected:
        b.disconnect()


def test_lerobot_connects_reads_and_writes(emu: DynamixelBus, bus: Any) -> None:
    assert bus.ping("gripper") == 1200 and bus.ping("shoulder_pan") == 1060
    assert bus.ping(7) is None
    bus.configure_motors()  # Return_Delay_Time 0 on every motor
    assert [s.value("Return_Delay_Time") for s in emu.servos] == [0] * 6
    bus.write("Position_P_Gain", "elbow_flex", 1500)  # RAM
    bus.write("Operating_Mode", "gripper", 5)  # EEPROM, torque off
    assert (bus.read("Position_P_Gain", "elbow_flex"), bus.read("Operating_Mode", "gripper")) \
        == (1500, 5)
    assert bus.read("Present_Input_Voltage", "gripper") == 50  # 0.1 V, an XL330 at 5 V
    assert bus.read("Present_Input_Voltage", "shoulder_pan") == 120
    with pytest.raises(RuntimeError, match="out of range"):
        bus.write("Operating_Mode", "shoulder_pan", 5)  # the XL430 has no current modes
    # a model the bus does not expect fails lerobot's handshake
    wrong = lerobot_bus(emu.port)
    wrong.motors["gripper"].model = "xl430-w250"
    bus.disconnect()
    with pytest.raises(RuntimeError, match="incorrect model"):
        wrong.connect()
    wrong.port_handler.closePort()


def test_lerobot_sync_reads_positions_and_sync_writes_goals(emu: DynamixelBus,
                                                             bus: Any) -> None:
    plant = emu.servos[0].plant
    assert isinstance(plant, IdealPlant)
    for i in range(1, 7):
        plant.move_by_hand(i, 1000 + 100 * i)
    assert bus.sync_read("Present_Position", normalize=False) == {
        n: 1000 + 100 * i for i, n in enumerate(NAMES, 1)}
    bus.enable_torque()
    assert [s.value("Torque_Enable") for s in emu.servos] == [1] * 6
    with pytest.raises(RuntimeError, match="not available"):  # EEPROM locked by torque
        bus.write("Homing_Offset", "wrist_flex", 10)
    goals = {n: 3000 - 50 * i for i, n in enumerate(NAMES, 1)}
    bus.sync_write("Goal_Position", goals, normalize=False)
    eventually(lambda: [s.goal_target() for s in emu.servos] == [float(g) for g in goals.values()])
    deadline = time.monotonic() + 2.0
    while bus.sync_read("Present_Position", normalize=False) != goals:
        assert time.monotonic() < deadline, "the servos did not reach their goals"
        time.sleep(0.05)
    assert bus.sync_read("Moving", normalize=False) == dict.fromkeys(NAMES, 0)
    bus.disable_torque()
    assert [s.value("Torque_Enable") for s in emu.servos] == [0] * 6


def test_lerobots_calibration_round_trip(emu: DynamixelBus, bus: Any) -> None:
    """Half-turn homing makes present = actual + offset = 2047; the calibration lerobot writes
    reads back the same, and survives a REBOOT (EEPROM); reverse drive mode mirrors positions."""
    from lerobot.motors import MotorCalibration

    plant = emu.servos[0].plant
    assert isinstance(plant, IdealPlant)
    for i in range(1, 7):
        plant.move_by_hand(i, 300 * i)
    offsets = bus.set_half_turn_homings()
    assert offsets == {n: 2047 - 300 * i for i, n in enumerate(NAMES, 1)}
    assert bus.sync_read("Present_Position", normalize=False) == dict.fromkeys(NAMES, 2047)
    calibration = {n: MotorCalibration(i, 0, offsets[n], 1000 + i, 3000 + i)
                   for i, n in enumerate(NAMES, 1)}
    bus.write_calibration(calibration)
    assert bus.is_calibrated and bus.read_calibration() == calibration
    for i in range(1, 7):  # ROBOTIS' SDK sends REBOOT (0x08)
        assert bus.packet_handler.reboot(bus.port_handler, i) == (0, 0)  # success, no error
    eventually(lambda: all(s.value("Torque_Enable") == 0 for s in emu.servos))
    assert bus.read_calibration() == calibration
    # normalised goals map onto the calibrated range
    bus.enable_torque()
    bus.sync_write("Goal_Position", dict.fromkeys(NAMES, 100.0))
    eventually(lambda: emu.servo(3).value("Goal_Position") == 3003)
    assert emu.servo(3).goal_target() == 3003 - offsets["elbow_flex"]
    # reverse drive mode: the servo counts the other way (mirrored about mid-turn)
    bus.disable_torque()
    bus.write("Homing_Offset", "wrist_roll", 0)
    bus.write("Drive_Mode", "wrist_roll", 1)
    actual = round(plant.sense(5).position)
    assert bus.read("Present_Position", "wrist_roll", normalize=False) == 4096 - actual


def test_the_bus_watchdog_stops_a_servo_when_the_host_goes_silent(emu: DynamixelBus,
                                                                   bus: Any) -> None:
    plant = emu.servos[0].plant
    assert isinstance(plant, IdealPlant)
    plant.speed = 1000.0  # steps/s: the joint is still travelling when the host goes silent
    bus.enable_torque()
    bus.write("Bus_Watchdog", "shoulder_pan", 5)  # 5 x 20 ms
    for _ in range(8):  # traffic every 30 ms keeps it alive
        bus.sync_read("Present_Position", normalize=False)
        time.sleep(0.03)
    assert emu.servo(1).value("Bus_Watchdog") == 5
    bus.sync_write("Goal_Position", {"shoulder_pan": 4000}, normalize=False)
    time.sleep(0.5)  # silence: no packet at all
    servo = emu.servo(1)
    with emu.lock:
        last, fired = servo._last_packet, servo.watchdog_fired_at
    assert fired is not None, "the watchdog did not fire"
    assert 0.100 <= fired - last <= 0.100 + 0.020, f"stopped {fired - last:.3f} s after silence"
    stopped = plant.sense(1).position
    assert 2048 < stopped < 4000 - 100  # stopped on its way
    time.sleep(0.1)
    assert plant.sense(1).position == stopped  # and stays there
    assert plant.sense(2).position == 2048  # servo 2 (no watchdog) is not affected
    assert bus.read("Bus_Watchdog", "shoulder_pan") == 0xFF  # -1: watchdog error
    assert bus.read("Goal_Position", "shoulder_pan", normalize=False) == round(stopped)
    with pytest.raises(RuntimeError, match="out of range"):  # goals are read-only now
        bus.write("Goal_Position", "shoulder_pan", 3000, normalize=False)
    with pytest.raises(RuntimeError, match="out of range"):  # only 0 clears it
        bus.write("Bus_Watchdog", "shoulder_pan", 5)
    assert plant.sense(1).position == stopped
    bus.write("Bus_Watchdog", "shoulder_pan", 0)
    bus.write("Goal_Position", "shoulder_pan", 3000, normalize=False)
    eventually(lambda: plant.sense(1).position == 3000)


def test_the_koch_follower_runs_on_the_emulated_arm(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """lerobot's KochFollower, unmodified: connect writes the calibration it was given
    (answering its prompt with Enter), configure sets extended position mode on the joints and
    current-based position on the gripper; observations and actions go through the bus and
    the simulated arm moves."""
    pytest.importorskip("dynamixel_sdk", reason="needs lerobot's dynamixel extra")
    from lerobot.motors import MotorCalibration
    from lerobot.robots.koch_follower import KochFollower, KochFollowerConfig

    from hardware.emulators.so101_plant import KOCH_SERVO_JOINTS, SO101Plant

    plant = SO101Plant(servo_map=KOCH_SERVO_JOINTS)
    with make_bus(6, plant) as emu:
        robot = KochFollower(KochFollowerConfig(port=emu.port, id="emu",
                                                calibration_dir=tmp_path))
        robot.calibration = {n: MotorCalibration(i, 0, 0, 1000, 3096)
                             for i, n in enumerate(NAMES, 1)}
        monkeypatch.setattr(builtins, "input", lambda *_: "")
        robot.connect()
        try:
            assert [s.value("Operating_Mode") for s in emu.servos] == [4] * 5 + [5]
            assert emu.servo(3).value("Position_P_Gain") == 1500
            assert [s.value("Torque_Enable") for s in emu.servos] == [1] * 6
            obs = robot.get_observation()
            assert set(obs) == {f"{n}.pos" for n in NAMES}
            lift = round(plant.angle_to_steps(2, 0.5))
            action = {f"{n}.pos": obs[f"{n}.pos"] for n in NAMES}
            action["shoulder_lift.pos"] = (lift - 2048) / 1048 * 100  # range 1000..3096
            robot.send_action(action)
            time.sleep(1.0)
            angles = plant.joint_angles()
            assert abs(angles[1] - 0.5) < 0.05
            present = robot.bus.read("Present_Position", "shoulder_lift", normalize=False)
            assert abs(present - plant.angle_to_steps(2, angles[1])) <= 1
        finally:
            robot.disconnect()
        assert [s.value("Torque_Enable") for s in emu.servos] == [0] * 6
