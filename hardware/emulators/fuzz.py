"""Fuzzing the servo bus emulators in process: random bytes, valid frames with random
corruptions, and random valid frames (checksum or CRC right) with random instructions and
parameters, fed to ``FeetechBus.receive`` / ``DynamixelBus.receive`` (no link, no wire timing).

What must hold, checked on every frame: no exception escapes the emulator; every reply is a
well-formed status packet; every goal that reaches the plant lies within the servo's position
limits wherever the servo enforces them (Feetech: always, unless both limits are 0; Dynamixel:
position mode 3); and the servos' state stays valid (Dynamixel: every writable register holds
a value its range allows, Bus_Watchdog 0..127 or 0xFF; Feetech: positions within one turn).
Used by ``tests/test_emulator_fuzz.py`` (1e4 frames each) and ``python -m bench.fuzz_emulators``
(1e5 each).
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hardware.emulators import dynamixel as dxl
from hardware.emulators import feetech as fee
from hardware.emulators import sts3215
from hardware.emulators.plants import IdealPlant
from hardware.emulators.xl_servos import WATCHDOG_ERROR, XServo

IDS = list(range(1, 7))


@dataclass
class FuzzReport:
    emulator: str
    inputs: dict[str, int] = field(default_factory=dict)  # frames sent, by kind
    stats: dict[str, int] = field(default_factory=dict)  # the bus's counters: served, dropped
    replies: int = 0
    crashes: int = 0
    violations: list[str] = field(default_factory=list)  # the first few broken invariants
    n_violations: int = 0
    first_crash: str = ""
    seconds: float = 0.0

    def violation(self, what: str) -> None:
        self.n_violations += 1
        if len(self.violations) < 10:
            self.violations.append(what)


class CheckingPlant(IdealPlant):
    """An ideal plant that checks every goal it is given against ``check``."""

    def __init__(self, check: Callable[[int, float | None], str | None]) -> None:
        super().__init__(IDS)
        self.check = check
        self.broken: list[str] = []

    def drive(self, servo_id: int, target: float | None) -> None:
        problem = self.check(servo_id, target)
        if problem:
            self.broken.append(problem)
        super().drive(servo_id, target)


# --------------------------------------------------------------------------- Feetech
# the registers that move a joint or bound it: chosen half the time, so that random frames
# reach the states worth checking (torque on, limits set, goals written)
FEETECH_HOT = ("Torque_Enable", "Goal_Position", "Min_Position_Limit", "Max_Position_Limit",
               "Homing_Offset", "Lock")
DYNAMIXEL_HOT = ("Torque_Enable", "Goal_Position", "Min_Position_Limit", "Max_Position_Limit",
                 "Homing_Offset", "Operating_Mode", "Drive_Mode", "Bus_Watchdog")


def _instruction(rng: np.random.Generator, common: list[int], rare: list[int]) -> int:
    roll = rng.random()
    if roll < 0.85:
        return int(rng.choice(common))
    return int(rng.choice(rare)) if roll < 0.95 else int(rng.integers(0, 256))


def _feetech_frame(rng: np.random.Generator) -> bytes:
    servo = int(rng.choice([*IDS, 0xFE, int(rng.integers(0, 256))]))
    instr = _instruction(rng, [0x01, 0x02, 0x03, 0x03, 0x03, 0x04, 0x82, 0x83, 0x83],
                         [0x05, 0x06])
    names = FEETECH_HOT if rng.random() < 0.5 else list(sts3215.REGISTERS)
    reg = sts3215.REGISTERS[str(rng.choice(names))]
    value = list(rng.integers(0, 256, reg.size).tolist())
    if instr in (0x03, 0x04):
        params = [reg.address, *value]
    elif instr == 0x02:
        params = [reg.address, reg.size]
    elif instr == 0x82:
        params = [reg.address, reg.size, *rng.choice(IDS, int(rng.integers(1, 7))).tolist()]
    elif instr == 0x83:
        ids = rng.choice(IDS, int(rng.integers(1, 7)), replace=False).tolist()
        params = [reg.address, reg.size] + [b for i in ids for b in
                                            [i, *rng.integers(0, 256, reg.size).tolist()]]
    else:
        params = []
    if rng.random() < 0.2:  # any parameters at all
        params = rng.integers(0, 256, int(rng.integers(0, 12))).tolist()
    return fee.packet(servo, instr, bytes(int(p) for p in params[:240]))


def _feetech_reply_ok(out: bytes) -> bool:
    return (out[:2] == b"\xff\xff" and len(out) == out[3] + 4
            and fee.checksum(out[2:-1]) == out[-1] and out[4] <= 0x7F)


def _feetech_checks(servos: list[sts3215.STS3215]) -> tuple[
        Callable[[int, float | None], str | None], Callable[[], str | None]]:
    def raw(s: sts3215.STS3215, name: str) -> int:
        reg = sts3215.REGISTERS[name]
        value = int.from_bytes(s.table[reg.address:reg.address + reg.size], "little")
        return value if reg.sign_bit is None else sts3215.decode_sign_magnitude(value, reg.sign_bit)

    def on_drive(joint: int, target: float | None) -> str | None:
        if target is None:
            return None
        if not 0 <= target < 4096:
            return f"feetech joint {joint}: target {target} outside one turn"
        s = next(s for s in servos if s.joint == joint)
        low, high = raw(s, "Min_Position_Limit"), raw(s, "Max_Position_Limit")
        if (low or high) and low <= high < 4096:
            goal = (round(target) - raw(s, "Homing_Offset")) % 4096
            if not low <= goal <= high:
                return f"feetech joint {joint}: goal {goal} outside limits {low}..{high}"
        return None

    def state() -> str | None:
        for s in servos:
            if raw(s, "Present_Position") not in range(4096):
                return f"feetech servo {s.id}: Present_Position {raw(s, 'Present_Position')}"
        return None
    return on_drive, state


def make_feetech() -> tuple[fee.FeetechBus, CheckingPlant, Callable[[], str | None]]:
    servos: list[sts3215.STS3215] = []
    on_drive, state = _feetech_checks(servos)
    plant = CheckingPlant(on_drive)
    servos += [sts3215.STS3215(i, plant) for i in IDS]
    return fee.FeetechBus(servos, timing=False), plant, state


# --------------------------------------------------------------------------- Dynamixel
def _dynamixel_frame(rng: np.random.Generator) -> bytes:
    regs = dxl.XL330_M288.registers
    servo = int(rng.choice([*IDS, 0xFE, int(rng.integers(0, 256))]))
    instr = _instruction(rng, [0x01, 0x02, 0x03, 0x03, 0x03, 0x04, 0x82, 0x83, 0x83, 0x92, 0x93],
                         [0x05, 0x06, 0x08])
    reg = regs[str(rng.choice(DYNAMIXEL_HOT if rng.random() < 0.5 else list(regs)))]

    def value() -> list[int]:
        if rng.random() < 0.7 and reg.writable:  # mostly values the register accepts
            v = int(rng.integers(reg.low, reg.high + 1))
            return list(v.to_bytes(reg.size, "little", signed=reg.signed))
        return rng.integers(0, 256, reg.size).tolist()

    def u16(v: int) -> list[int]:
        return [v & 0xFF, v >> 8]

    ids = rng.choice(IDS, int(rng.integers(1, 7)), replace=False).tolist()
    params: list[int]
    if instr in (0x03, 0x04):
        params = [*u16(reg.address), *value()]
    elif instr == 0x02:
        params = [*u16(reg.address), *u16(reg.size)]
    elif instr == 0x06:
        params = [int(rng.choice([0x01, 0x02, 0xFF, int(rng.integers(0, 256))]))]
    elif instr == 0x82:
        params = [*u16(reg.address), *u16(reg.size), *ids]
    elif instr == 0x83:
        params = [*u16(reg.address), *u16(reg.size), *[b for i in ids for b in [i, *value()]]]
    elif instr == 0x92:
        params = [b for i in ids for b in [i, *u16(reg.address), *u16(reg.size)]]
    elif instr == 0x93:
        params = [b for i in ids for b in [i, *u16(reg.address), *u16(reg.size), *value()]]
    else:
        params = []
    if rng.random() < 0.2:
        params = rng.integers(0, 256, int(rng.integers(0, 16))).tolist()
    return dxl.packet(servo, instr, bytes(int(p) for p in params))


def _dynamixel_reply_ok(out: bytes) -> bool:
    return (out[:4] == b"\xff\xff\xfd\x00" and out[4] <= dxl.MAX_ID and out[7] == dxl.STATUS
            and len(out) == (out[5] | out[6] << 8) + 7
            and dxl.crc16(out[:-2]) == out[-2] | out[-1] << 8)


def _raw(s: XServo, name: str) -> int:
    reg = s.regs[name]
    return int.from_bytes(s.table[reg.address:reg.address + reg.size], "little",
                          signed=reg.signed)


def _dynamixel_checks(servos: list[XServo]) -> tuple[
        Callable[[int, float | None], str | None], Callable[[], str | None]]:
    def on_drive(joint: int, target: float | None) -> str | None:
        s = next((s for s in servos if s.joint == joint), None)
        if target is None or s is None or s.table[11] != 3:
            return None
        low, high = _raw(s, "Min_Position_Limit"), _raw(s, "Max_Position_Limit")
        servo_frame = 4096 - target if s.table[10] & 1 else target
        goal = round(servo_frame) + _raw(s, "Homing_Offset")
        if low <= high and not low <= goal <= high:
            return f"dynamixel joint {joint}: goal {goal} outside limits {low}..{high}"
        return None

    def state() -> str | None:
        for s in servos:
            for name, reg in s.regs.items():
                if not reg.writable:
                    continue
                v = _raw(s, name)
                high = len(s.model.bauds) - 1 if name == "Baud_Rate" else reg.high
                if name == "Bus_Watchdog" and v == WATCHDOG_ERROR:
                    continue
                if not reg.low <= v <= high:
                    return f"dynamixel servo {s.id}: {name} = {v} outside {reg.low}..{high}"
            if s.table[11] not in s.model.modes:
                return f"dynamixel servo {s.id}: Operating_Mode {s.table[11]}"
        return None
    return on_drive, state


def make_dynamixel() -> tuple[dxl.DynamixelBus, CheckingPlant, Callable[[], str | None]]:
    servos: list[XServo] = []
    on_drive, state = _dynamixel_checks(servos)
    plant = CheckingPlant(on_drive)
    models = list(dxl.KOCH_MODELS)
    servos += [XServo(i, models[i - 1], plant) for i in IDS]
    return dxl.DynamixelBus(servos, timing=False), plant, state


# --------------------------------------------------------------------------- the fuzz loop
def corrupt(frame: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random corruption of a valid frame: (its kind, the bytes)."""
    data = bytearray(frame)
    kind = str(rng.choice(["bit_flip", "truncated", "inserted", "deleted", "wrong_length"]))
    at = int(rng.integers(len(data)))
    if kind == "bit_flip":
        for i in rng.choice(len(data), min(len(data), int(rng.integers(1, 4))), replace=False):
            data[int(i)] ^= 1 << int(rng.integers(8))
    elif kind == "truncated":
        del data[at:]
    elif kind == "inserted":
        data[at:at] = rng.integers(0, 256, int(rng.integers(1, 4))).astype(np.uint8).tobytes()
    elif kind == "deleted":
        del data[at]
    else:  # the length field (Feetech byte 3, Dynamixel bytes 5-6)
        i = 3 if data[2] != 0xFD else 5
        data[i] = (data[i] + int(rng.integers(1, 255))) & 0xFF
    return kind, bytes(data)


def fuzz(name: str, n: int, seed: int = 0) -> FuzzReport:
    """Feed ``n`` inputs to a fresh emulator ``name`` ("feetech" or "dynamixel")."""
    rng = np.random.default_rng(seed)
    bus: fee.FeetechBus | dxl.DynamixelBus
    if name == "feetech":
        bus, plant, state = make_feetech()
        valid, reply_ok = _feetech_frame, _feetech_reply_ok
    elif name == "dynamixel":
        bus, plant, state = make_dynamixel()
        valid, reply_ok = _dynamixel_frame, _dynamixel_reply_ok
    else:
        raise ValueError(f"fuzz: unknown emulator {name!r}; known: feetech, dynamixel")
    report, inputs = FuzzReport(name), Counter[str]()
    t0 = time.perf_counter()
    for _ in range(n):
        roll = rng.random()
        if roll < 0.25:
            kind, data = "noise", rng.integers(0, 256, int(rng.integers(1, 40))).astype(
                np.uint8).tobytes()
        elif roll < 0.55:
            kind, data = corrupt(valid(rng), rng)
        else:
            kind, data = "valid", valid(rng)
        inputs[kind] += 1
        try:
            replies = bus.receive(data)
        except Exception:  # what the fuzz looks for: count it, keep the first
            report.crashes += 1
            report.first_crash = report.first_crash or traceback.format_exc()
            continue
        report.replies += len(replies)
        for out in replies:
            if not reply_ok(out):
                report.violation(f"{name}: malformed reply {out.hex()} to {data.hex()}")
        for problem in plant.broken:
            report.violation(f"{problem} (after {data.hex()})")
        plant.broken.clear()
        if (bad_state := state()) is not None:
            report.violation(f"{bad_state} (after {data.hex()})")
    report.seconds = time.perf_counter() - t0
    report.inputs = dict(inputs)
    report.stats = dict(bus.stats)
    return report
