"""A Feetech STS3215 servo: its control table and what writing to it does.

The table's addresses and sizes are the STS/SMS series table of Feetech's manual (the same as
lerobot's ``motors/feetech/tables.py``; ``tests/test_feetech_emulator.py`` checks the two agree).
Values are little-endian (protocol 0). What the model does:

- **EEPROM and RAM.** Addresses below 40 are EEPROM: a write takes effect at once and is kept
  over a power cycle (:meth:`STS3215.power_cycle`) only while ``Lock`` is 0, as on the servo
  (``Lock`` is 1 after power-on). RAM (40 and up) starts from its defaults at power-on.
- **Read-only registers** (firmware, model, present values, status) ignore writes.
- **Positions.** ``Present_Position = actual - Homing_Offset`` (mod 4096), and a goal drives the
  joint to ``Goal_Position + Homing_Offset``; the goal is clamped to
  ``[Min_Position_Limit, Max_Position_Limit]`` before it reaches the plant (unless both limits
  are 0, the servo's multi-turn setting). ``Homing_Offset`` is sign-magnitude with its sign at
  bit 11, positions and velocities at bit 15, the load at bit 10.
- **Torque.** ``Torque_Enable`` 0 frees the joint; while it is off ``Goal_Position`` follows the
  present position, so switching torque on holds the joint where it is.
- **Errors.** Input voltage outside ``[Min_Voltage_Limit, Max_Voltage_Limit]`` (0.1 V units) sets
  bit 0x01, a temperature above ``Max_Temperature_Limit`` bit 0x04; :attr:`STS3215.faults`
  injects any bits (0x02 angle sensor, 0x08 over-current, 0x20 overload). An error whose bit is
  in ``Unloading_Condition`` switches torque off. Every status packet carries the bits.
- **Reply rules.** ``Response_Status_Level`` 0: only PING and READ are answered;
  ``Return_Delay_Time`` is in 2 us units; ``Baud_Rate`` indexes :data:`BAUD_RATES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hardware.emulators.plants import STEPS_PER_TURN, Plant

MODEL_NUMBER = 777
FIRMWARE = (3, 10)  # major, minor: the same on every emulated servo (lerobot checks)
BAUD_RATES = (1_000_000, 500_000, 250_000, 128_000, 115_200, 57_600, 38_400, 19_200)
EEPROM_END = 40  # addresses below are EEPROM
TABLE_SIZE = 87

ERR_VOLTAGE, ERR_ANGLE, ERR_OVERHEAT, ERR_OVERCURRENT, ERR_OVERLOAD = 0x01, 0x02, 0x04, 0x08, 0x20


@dataclass(frozen=True)
class Register:
    address: int
    size: int  # bytes
    default: int = 0  # factory value (EEPROM) or power-on value (RAM)
    sign_bit: int | None = None  # sign-magnitude values: the bit that holds the sign
    writable: bool = True


REGISTERS: dict[str, Register] = {
    # EEPROM
    "Firmware_Major_Version": Register(0, 1, FIRMWARE[0], writable=False),
    "Firmware_Minor_Version": Register(1, 1, FIRMWARE[1], writable=False),
    "Model_Number": Register(3, 2, MODEL_NUMBER, writable=False),
    "ID": Register(5, 1, 1),
    "Baud_Rate": Register(6, 1, 0),
    "Return_Delay_Time": Register(7, 1, 250),  # 2 us units: 500 us from the factory
    "Response_Status_Level": Register(8, 1, 1),
    "Min_Position_Limit": Register(9, 2, 0),
    "Max_Position_Limit": Register(11, 2, 4095),
    "Max_Temperature_Limit": Register(13, 1, 70),  # deg C
    "Max_Voltage_Limit": Register(14, 1, 140),  # 0.1 V
    "Min_Voltage_Limit": Register(15, 1, 40),  # 0.1 V
    "Max_Torque_Limit": Register(16, 2, 1000),  # 0.1 %
    "Phase": Register(18, 1, 0x0C),
    "Unloading_Condition": Register(19, 1, ERR_OVERHEAT | ERR_OVERCURRENT | ERR_OVERLOAD),
    "LED_Alarm_Condition": Register(20, 1, 47),
    "P_Coefficient": Register(21, 1, 32),
    "D_Coefficient": Register(22, 1, 32),
    "I_Coefficient": Register(23, 1, 0),
    "Minimum_Startup_Force": Register(24, 2, 16),
    "CW_Dead_Zone": Register(26, 1, 1),
    "CCW_Dead_Zone": Register(27, 1, 1),
    "Protection_Current": Register(28, 2, 500),
    "Angular_Resolution": Register(30, 1, 1),
    "Homing_Offset": Register(31, 2, 0, sign_bit=11),
    "Operating_Mode": Register(33, 1, 0),
    "Protective_Torque": Register(34, 1, 20),
    "Protection_Time": Register(35, 1, 200),
    "Overload_Torque": Register(36, 1, 80),
    "Velocity_closed_loop_P_proportional_coefficient": Register(37, 1, 10),
    "Over_Current_Protection_Time": Register(38, 1, 200),
    "Velocity_closed_loop_I_integral_coefficient": Register(39, 1, 200),
    # RAM
    "Torque_Enable": Register(40, 1, 0),
    "Acceleration": Register(41, 1, 0),
    "Goal_Position": Register(42, 2, 0, sign_bit=15),
    "Goal_Time": Register(44, 2, 0),
    "Goal_Velocity": Register(46, 2, 0, sign_bit=15),
    "Torque_Limit": Register(48, 2, 1000),
    "Lock": Register(55, 1, 1),
    "Present_Position": Register(56, 2, 0, sign_bit=15, writable=False),
    "Present_Velocity": Register(58, 2, 0, sign_bit=15, writable=False),  # steps/s
    "Present_Load": Register(60, 2, 0, sign_bit=10, writable=False),  # 0.1 % of max torque
    "Present_Voltage": Register(62, 1, 0, writable=False),  # 0.1 V
    "Present_Temperature": Register(63, 1, 0, writable=False),  # deg C
    "Status": Register(65, 1, 0, writable=False),  # the error bits
    "Moving": Register(66, 1, 0, writable=False),
    "Present_Current": Register(69, 2, 0, writable=False),  # 6.5 mA
    "Goal_Position_2": Register(71, 2, 0, writable=False),
    "Moving_Velocity_Threshold": Register(80, 1, 2),
    "DTs": Register(81, 1, 1),
    "Velocity_Unit_factor": Register(82, 1, 1),
    "Hts": Register(83, 1, 0),
    "Maximum_Velocity_Limit": Register(84, 1, 0),
    "Maximum_Acceleration": Register(85, 1, 0),
    "Acceleration_Multiplier": Register(86, 1, 0),
}

_WRITABLE = frozenset(a for r in REGISTERS.values() if r.writable
                      for a in range(r.address, r.address + r.size))
STALL_CURRENT_A = 2.7  # STS3215 at 12 V


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    magnitude = min(abs(value), (1 << sign_bit) - 1)
    return magnitude | (1 << sign_bit) if value < 0 else magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if raw & (1 << sign_bit) else magnitude


def _defaults() -> bytearray:
    table = bytearray(TABLE_SIZE)
    for reg in REGISTERS.values():
        table[reg.address:reg.address + reg.size] = reg.default.to_bytes(reg.size, "little")
    return table


GOAL_ADDRESS = 42  # Goal_Position's first byte


class STS3215:
    """One servo on the bus: its control table, backed by joint ``servo_id`` of ``plant``.

    ``voltage`` (V) and ``temperature`` (deg C) are the servo's surroundings: set them (or
    :attr:`faults`) to make it report errors."""

    def __init__(self, servo_id: int, plant: Plant, *, voltage: float = 12.0,
                 temperature: float = 30.0) -> None:
        if not 0 <= servo_id <= 0xFC:
            raise ValueError(f"servo id must be in 0..252, got {servo_id}")
        self.plant, self.joint = plant, servo_id  # the joint keeps its number if the ID changes
        self.voltage, self.temperature = voltage, temperature
        self.faults = 0
        # goals written outside [Min_Position_Limit, Max_Position_Limit] with torque on (the
        # servo clamps them; a driver that enforces its calibrated limits never sends one)
        self.goals_outside_limits = 0
        self.table = _defaults()
        self.table[5] = servo_id
        self._flash = bytes(self.table[:EEPROM_END])  # the EEPROM kept over a power cycle
        self._staged: tuple[int, bytes] | None = None  # REG_WRITE, applied by ACTION
        self.power_cycle()

    # ------------------------------------------------------------------ registers
    def value(self, name: str) -> int:
        """A register's value, decoded (sign-magnitude registers signed)."""
        reg = REGISTERS[name]
        self._refresh()
        raw = int.from_bytes(self.table[reg.address:reg.address + reg.size], "little")
        return raw if reg.sign_bit is None else decode_sign_magnitude(raw, reg.sign_bit)

    def _set(self, name: str, value: int) -> None:
        reg = REGISTERS[name]
        raw = value if reg.sign_bit is None else encode_sign_magnitude(value, reg.sign_bit)
        self.table[reg.address:reg.address + reg.size] = (raw & ((1 << 8 * reg.size) - 1)
                                                          ).to_bytes(reg.size, "little")

    @property
    def id(self) -> int:
        return self.table[5]

    @property
    def baud(self) -> int:
        return BAUD_RATES[self.table[6]] if self.table[6] < len(BAUD_RATES) else 0

    @property
    def return_delay_s(self) -> float:
        return self.table[7] * 2e-6

    @property
    def answers_writes(self) -> bool:
        return self.table[8] != 0

    @property
    def torque(self) -> bool:
        return self.table[40] != 0

    # ------------------------------------------------------------------ instructions
    def read(self, address: int, length: int) -> bytes:
        """READ: ``length`` bytes from ``address`` (0 past the end of the table)."""
        self._refresh()
        data = bytes(self.table[address:address + length])
        return data + bytes(length - len(data))

    def write(self, address: int, data: bytes) -> None:
        """WRITE: each byte lands where the table has a writable register."""
        self._refresh()
        touched = [a for a in range(address, address + len(data)) if a in _WRITABLE]
        for a in touched:
            self.table[a] = data[a - address]
        if GOAL_ADDRESS in touched and self.torque:
            goal = self.value("Goal_Position")
            low, high = self.value("Min_Position_Limit"), self.value("Max_Position_Limit")
            if (low or high) and not low <= goal <= high:
                self.goals_outside_limits += 1  # clamped below, as the servo does; counted
        if any(a < EEPROM_END for a in touched) and self.table[55] == 0:
            self._flash = bytes(self.table[:EEPROM_END])
        if touched:
            self._command()

    def reg_write(self, address: int, data: bytes) -> None:
        self._staged = (address, bytes(data))

    def action(self) -> None:
        if self._staged is not None:
            self.write(*self._staged)
            self._staged = None

    def error(self) -> int:
        """The error bits of a status packet (and of the ``Status`` register)."""
        bits = self.faults
        if not self.table[15] <= round(self.voltage * 10) <= self.table[14]:
            bits |= ERR_VOLTAGE
        if self.temperature > self.table[13]:
            bits |= ERR_OVERHEAT
        return bits & 0x7F

    def power_cycle(self) -> None:
        """Power off and on: EEPROM from what was kept, RAM from its defaults, torque off."""
        defaults = _defaults()
        self.table[:EEPROM_END] = self._flash
        self.table[EEPROM_END:] = defaults[EEPROM_END:]
        self.table[48:50] = self.table[16:18]  # Torque_Limit starts at Max_Torque_Limit
        self._staged = None
        self._refresh()
        self._command()

    def factory_reset(self) -> None:
        """RESET: factory values, keeping the ID (the servo stays reachable where it is)."""
        servo_id = self.id
        self.table[:EEPROM_END] = _defaults()[:EEPROM_END]
        self.table[5] = servo_id
        self._flash = bytes(self.table[:EEPROM_END])
        self.power_cycle()

    # ------------------------------------------------------------------ the joint
    def goal_target(self) -> float | None:
        """The actual position the plant is told to hold (steps), None with torque off."""
        if not self.torque:
            return None
        goal = self.value("Goal_Position")
        low, high = self.value("Min_Position_Limit"), self.value("Max_Position_Limit")
        if low or high:
            goal = min(max(goal, low), high)
        return float((goal + self.value("Homing_Offset")) % STEPS_PER_TURN)

    def _command(self) -> None:
        if self.error() & self.table[19]:  # an unloading error: torque off
            self.table[40] = 0
        self.plant.drive(self.joint, self.goal_target())

    def _refresh(self) -> None:
        """Present values from the plant and the surroundings."""
        sensed = self.plant.sense(self.joint)
        offset = decode_sign_magnitude(int.from_bytes(self.table[31:33], "little"), 11)
        present = (round(sensed.position) - offset) % STEPS_PER_TURN
        self._set("Present_Position", present)
        self._set("Present_Velocity", round(sensed.velocity))
        self._set("Present_Load", round(max(-1.0, min(1.0, sensed.load)) * 1000))
        self._set("Present_Voltage", max(0, min(255, round(self.voltage * 10))))
        self._set("Present_Temperature", max(0, min(255, round(self.temperature))))
        self._set("Present_Current", round(abs(sensed.load) * STALL_CURRENT_A / 0.0065))
        self._set("Moving", int(abs(sensed.velocity) > 2 * self.table[80]))
        errors = self.error()
        self._set("Status", errors)
        if errors & self.table[19] and self.torque:
            self.table[40] = 0
            self.plant.drive(self.joint, None)
        if not self.torque:  # the goal follows the joint: torque on holds it where it is
            self._set("Goal_Position", present)
