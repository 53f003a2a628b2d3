"""Dynamixel X-series servos (XL430-W250, XL330-M288): their control table and what writing
to it does.

Written from the ROBOTIS e-manual's X-series control tables and Protocol 2.0 error codes (it
shares nothing with lerobot's ``motors/dynamixel/tables.py``; ``tests/test_dynamixel_emulator.py``
checks the two agree). Values are little-endian; signed registers are two's complement.

- **EEPROM (addresses 0..63) and RAM (64 and up).** EEPROM writes are refused with an Access
  Error while ``Torque_Enable`` is 1, and are kept over a REBOOT (:meth:`XServo.reboot`); RAM
  starts from its defaults at power-on.
- **Writes are checked whole** before anything lands (one error, nothing applied): a register
  written in part -> Data Length Error (5); read-only or undefined -> Access Error (7); a value
  outside the register's range -> Data Range Error (4); outside a limit set in another
  register -> Data Limit Error (6) (Goal_Position outside Min/Max_Position_Limit in position
  mode 3, goal PWM/velocity/current beyond PWM/Velocity/Current_Limit).
- **Positions.** ``Present_Position = actual + Homing_Offset`` (4 bytes, multi-turn, not
  wrapped), ``actual`` being the plant's encoder steps, mirrored (``4096 - steps``) when
  ``Drive_Mode`` bit 0 (reverse) is set. Operating modes 3 (position: goal clamped to the
  position limits on its way to the plant as well), 4 (extended position: limits unused) and
  5 (current-based position; the current limit is stored, not applied to the plant) drive the
  joint; in modes 0, 1 and 16 the goal current/velocity/PWM is stored but not modelled: the
  joint is left free. While torque is off ``Goal_Position`` follows the present position, so
  switching torque on holds the joint where it is.
- **Bus_Watchdog (98)**, 1..127 in 20 ms units, 0 off. While torque is on, if no instruction
  packet for this servo (its id or broadcast) arrives within the period the servo stops: it
  holds where it is (``Goal_Position := Present_Position``, ``Goal_Velocity := 0``) and the
  register reads 0xFF (-1). Until 0 is written to it, writes to the goal registers (100..119)
  answer Data Range Error and change nothing. The bus measures the time (:meth:`note_packet`,
  :meth:`check_watchdog`).
- **Hardware errors** (``Hardware_Error_Status``, 70): input voltage outside the voltage limits
  (bit 0), temperature above ``Temperature_Limit`` (bit 2), and any bits in :attr:`faults`
  (3 encoder, 4 electrical shock, 5 overload). They latch until REBOOT; one whose bit is in
  ``Shutdown`` (63) switches torque off and keeps it off. Every status packet then carries the
  alert bit 0x80.
- Not modelled: indirect addresses (168 and up: Access Error), the CLEAR instruction, profiles
  (the plant sets the joint's speed), backup/restore.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hardware.emulators.plants import STEPS_PER_TURN, Plant

EEPROM_END = 64
TABLE_SIZE = 148  # up to Present_Temperature (146) and Backup_Ready (147)
WATCHDOG_UNIT_S = 0.020
WATCHDOG_ERROR = 0xFF  # -1 as one byte
GOALS = range(100, 120)  # Goal_PWM .. Goal_Position: read-only while the watchdog has fired
EXTENDED_RANGE = 1_048_575  # |Goal_Position| in extended position modes

# status packet error numbers (Protocol 2.0) and the alert bit
RESULT_FAIL, INSTRUCTION_ERROR, CRC_ERROR, DATA_RANGE, DATA_LENGTH, DATA_LIMIT, ACCESS = range(1, 8)
ALERT = 0x80
HW_VOLTAGE, HW_OVERHEAT, HW_ENCODER, HW_SHOCK, HW_OVERLOAD = 0x01, 0x04, 0x08, 0x10, 0x20


@dataclass(frozen=True)
class Register:
    address: int
    size: int  # bytes
    default: int = 0  # factory value (EEPROM) or power-on value (RAM)
    low: int = 0  # the values a write may set (Data Range Error outside)
    high: int = 0
    signed: bool = False
    writable: bool = True


@dataclass(frozen=True)
class Model:
    """What differs between two X-series models."""

    name: str
    number: int  # Model_Number
    firmware: int
    bauds: tuple[int, ...]  # Baud_Rate value -> bit/s
    modes: frozenset[int]  # Operating_Mode values it accepts
    volts: float  # nominal supply, V
    stall_current_a: float  # at the nominal supply
    registers: dict[str, Register]


def _registers(*, temp_limit: int, volt_max: int, volt_min: int, vel_limit: int,
               vel_max: int, gains: tuple[int, int, int, int, int],
               current_limit: int | None) -> dict[str, Register]:
    """The X-series table; ``current_limit`` None: a model without current sensing (no
    Current_Limit, no Goal_Current; 126 reports the load in 0.1 %)."""
    vi, vp, pd, pi, pp = gains
    regs = {
        # EEPROM
        "Model_Number": Register(0, 2, writable=False),
        "Model_Information": Register(2, 4, writable=False),
        "Firmware_Version": Register(6, 1, writable=False),
        "ID": Register(7, 1, 1, 0, 252),
        "Baud_Rate": Register(8, 1, 1),  # high set per model
        "Return_Delay_Time": Register(9, 1, 250, 0, 254),  # 2 us units
        "Drive_Mode": Register(10, 1, 0, 0, 13),  # bit 0 reverse, 2 time-based, 3 torque-on
        "Operating_Mode": Register(11, 1, 3, 0, 16),
        "Secondary_ID": Register(12, 1, 255, 0, 255),
        "Protocol_Type": Register(13, 1, 2, 2, 2),  # Protocol 1.0 is not emulated
        "Homing_Offset": Register(20, 4, 0, -1_044_479, 1_044_479, signed=True),
        "Moving_Threshold": Register(24, 4, 10, 0, 1023),  # 0.229 rpm
        "Temperature_Limit": Register(31, 1, temp_limit, 0, 100),  # deg C
        "Max_Voltage_Limit": Register(32, 2, volt_max, volt_min, volt_max),  # 0.1 V
        "Min_Voltage_Limit": Register(34, 2, volt_min, volt_min, volt_max),
        "PWM_Limit": Register(36, 2, 885, 0, 885),
        "Velocity_Limit": Register(44, 4, vel_limit, 0, vel_max),
        "Max_Position_Limit": Register(48, 4, 4095, 0, 4095),
        "Min_Position_Limit": Register(52, 4, 0, 0, 4095),
        "Startup_Configuration": Register(60, 1, 0, 0, 3),
        "Shutdown": Register(63, 1, HW_OVERHEAT | HW_SHOCK | HW_OVERLOAD, 0, 0x3D),
        # RAM
        "Torque_Enable": Register(64, 1, 0, 0, 1),
        "LED": Register(65, 1, 0, 0, 1),
        "Status_Return_Level": Register(68, 1, 2, 0, 2),
        "Registered_Instruction": Register(69, 1, writable=False),
        "Hardware_Error_Status": Register(70, 1, writable=False),
        "Velocity_I_Gain": Register(76, 2, vi, 0, 16383),
        "Velocity_P_Gain": Register(78, 2, vp, 0, 16383),
        "Position_D_Gain": Register(80, 2, pd, 0, 16383),
        "Position_I_Gain": Register(82, 2, pi, 0, 16383),
        "Position_P_Gain": Register(84, 2, pp, 0, 16383),
        "Feedforward_2nd_Gain": Register(88, 2, 0, 0, 16383),
        "Feedforward_1st_Gain": Register(90, 2, 0, 0, 16383),
        "Bus_Watchdog": Register(98, 1, 0, 0, 127),
        "Goal_PWM": Register(100, 2, 0, -885, 885, signed=True),
        "Goal_Velocity": Register(104, 4, 0, -vel_max, vel_max, signed=True),
        "Profile_Acceleration": Register(108, 4, 0, 0, 32767),
        "Profile_Velocity": Register(112, 4, 0, 0, 32767),
        "Goal_Position": Register(116, 4, 0, -EXTENDED_RANGE, EXTENDED_RANGE, signed=True),
        "Realtime_Tick": Register(120, 2, writable=False),  # ms, mod 32768
        "Moving": Register(122, 1, writable=False),
        "Moving_Status": Register(123, 1, writable=False),
        "Present_PWM": Register(124, 2, signed=True, writable=False),
        "Present_Current": Register(126, 2, signed=True, writable=False),  # mA (load: 0.1 %)
        "Present_Velocity": Register(128, 4, signed=True, writable=False),  # 0.229 rpm
        "Present_Position": Register(132, 4, signed=True, writable=False),
        "Velocity_Trajectory": Register(136, 4, signed=True, writable=False),
        "Position_Trajectory": Register(140, 4, signed=True, writable=False),
        "Present_Input_Voltage": Register(144, 2, writable=False),  # 0.1 V
        "Present_Temperature": Register(146, 1, writable=False),  # deg C
        "Backup_Ready": Register(147, 1, writable=False),
    }
    if current_limit is not None:
        regs["Current_Limit"] = Register(38, 2, current_limit, 0, current_limit)  # mA
        regs["Goal_Current"] = Register(102, 2, 0, -current_limit, current_limit, signed=True)
    return regs


_X_BAUDS = (9_600, 57_600, 115_200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)
XL430_W250 = Model("xl430-w250", 1060, 46, (*_X_BAUDS, 4_500_000), frozenset({1, 3, 4, 16}),
                   12.0, 1.4, _registers(temp_limit=72, volt_max=140, volt_min=60,
                                         vel_limit=265, vel_max=1023,
                                         gains=(1000, 100, 4000, 0, 640), current_limit=None))
XL330_M288 = Model("xl330-m288", 1200, 52, _X_BAUDS, frozenset({0, 1, 3, 4, 5, 16}),
                   5.0, 1.47, _registers(temp_limit=70, volt_max=70, volt_min=35,
                                         vel_limit=445, vel_max=2047,
                                         gains=(1600, 180, 0, 0, 400), current_limit=1750))
# the Koch leader's servos: the XL330-M288's control table, a weaker gearbox (model 1190)
XL330_M077 = Model("xl330-m077", 1190, 52, _X_BAUDS, frozenset({0, 1, 3, 4, 5, 16}),
                   5.0, 0.228, _registers(temp_limit=70, volt_max=70, volt_min=35,
                                          vel_limit=445, vel_max=2047,
                                          gains=(400, 0, 0, 0, 100), current_limit=1750))
MODELS = {m.name: m for m in (XL430_W250, XL330_M288, XL330_M077)}
POSITION_MODES = (3, 4, 5)


class XServo:
    """One servo on the bus: its control table, backed by joint ``servo_id`` of ``plant``.

    ``voltage`` (V, default the model's nominal) and ``temperature`` (deg C) are its
    surroundings: set them, or :attr:`faults` (hardware error bits), to make it report errors.
    ``baud`` is the line speed it was set up for (lerobot's ``setup_motor`` writes 1 Mbps; the
    factory's is 57 600)."""

    def __init__(self, servo_id: int, model: Model | str, plant: Plant, *,
                 baud: int = 1_000_000, voltage: float | None = None,
                 temperature: float = 30.0) -> None:
        self.model = MODELS[model] if isinstance(model, str) else model
        if not 0 <= servo_id <= 252:
            raise ValueError(f"servo id must be in 0..252, got {servo_id}")
        if baud not in self.model.bauds:
            raise ValueError(f"{self.model.name} cannot run at {baud} bit/s; "
                             f"it knows {list(self.model.bauds)}")
        self.regs = self.model.registers
        self.plant, self.joint = plant, servo_id  # the joint keeps its number if the ID changes
        self.voltage = self.model.volts if voltage is None else voltage
        self.temperature = temperature
        self.faults = 0
        self.table = self._defaults()
        self.table[7] = servo_id
        self.table[8] = self.model.bauds.index(baud)
        self._flash = bytes(self.table[:EEPROM_END])  # the EEPROM kept over a reboot
        self._staged: tuple[int, bytes] | None = None  # REG_WRITE, applied by ACTION
        self.goals_outside_limits = 0  # goals written outside Min/Max_Position_Limit, torque on
        self._hw_errors = 0  # latched until reboot
        self._last_packet = time.monotonic()
        self.watchdog_fired_at: float | None = None  # monotonic time it last stopped the servo
        self.reboot()

    def _defaults(self) -> bytearray:
        table = bytearray(TABLE_SIZE)
        for reg in self.regs.values():
            self._put(table, reg, reg.default)
        self._put(table, self.regs["Model_Number"], self.model.number)
        self._put(table, self.regs["Firmware_Version"], self.model.firmware)
        return table

    @staticmethod
    def _put(table: bytearray, reg: Register, value: int) -> None:
        table[reg.address:reg.address + reg.size] = (value & ((1 << 8 * reg.size) - 1)
                                                     ).to_bytes(reg.size, "little")

    def _get(self, reg: Register) -> int:
        return int.from_bytes(self.table[reg.address:reg.address + reg.size], "little",
                              signed=reg.signed)

    # ------------------------------------------------------------------ registers
    def value(self, name: str) -> int:
        """A register's value now (signed registers decoded)."""
        self._refresh()
        return self._get(self.regs[name])

    def _set(self, name: str, value: int) -> None:
        self._put(self.table, self.regs[name], value)

    @property
    def id(self) -> int:
        return self.table[7]

    @property
    def baud(self) -> int:
        return self.model.bauds[self.table[8]] if self.table[8] < len(self.model.bauds) else 0

    @property
    def return_delay_s(self) -> float:
        return self.table[9] * 2e-6

    @property
    def status_return_level(self) -> int:
        return self.table[68]

    @property
    def torque(self) -> bool:
        return self.table[64] != 0

    @property
    def watchdog_fired(self) -> bool:
        return self.table[98] == WATCHDOG_ERROR

    # ------------------------------------------------------------------ instructions
    def ping_data(self) -> bytes:
        """PING's reply parameters: model number, firmware version."""
        return self.model.number.to_bytes(2, "little") + bytes((self.model.firmware,))

    def read(self, address: int, length: int) -> tuple[int, bytes]:
        """READ: (error number, ``length`` bytes from ``address``)."""
        if address + length > TABLE_SIZE or length == 0:
            return ACCESS, b""
        self._refresh()
        return 0, bytes(self.table[address:address + length])

    def write(self, address: int, data: bytes) -> int:
        """WRITE: the error number (0: done); on an error nothing changes."""
        self._refresh()
        error = self.check_write(address, data)
        if error:
            return error
        for reg in self._covered(address, len(data)):
            if reg.address == 98 and data[reg.address - address] == 0:
                self._last_packet = time.monotonic()  # a cleared watchdog restarts
            self.table[reg.address:reg.address + reg.size] = \
                data[reg.address - address:reg.address - address + reg.size]
        if address < EEPROM_END:
            self._flash = bytes(self.table[:EEPROM_END])
        if address <= 116 < address + len(data) and self.torque and not \
                self._get(self.regs["Min_Position_Limit"]) <= \
                self._get(self.regs["Goal_Position"]) <= \
                self._get(self.regs["Max_Position_Limit"]):
            # accepted where the mode ignores the limits (extended position), but counted: a
            # driver that enforces its calibrated limits never sends one
            self.goals_outside_limits += 1
        self._command()
        return 0

    def check_write(self, address: int, data: bytes) -> int:
        """The error number WRITE would answer (0: it would be done)."""
        end = address + len(data)
        if end > TABLE_SIZE or not data:
            return ACCESS
        covered = self._covered(address, len(data))
        if not covered:
            return ACCESS  # only undefined addresses
        for reg in covered:
            if reg.address < address or reg.address + reg.size > end:
                return DATA_LENGTH
            if not reg.writable or (reg.address < EEPROM_END and self.torque):
                return ACCESS
            raw = data[reg.address - address:reg.address - address + reg.size]
            error = self._check_value(reg, int.from_bytes(raw, "little", signed=reg.signed))
            if error:
                return error
        return 0

    def _covered(self, address: int, length: int) -> list[Register]:
        return [r for r in self.regs.values()
                if r.address < address + length and address < r.address + r.size]

    def _check_value(self, reg: Register, value: int) -> int:
        high = len(self.model.bauds) - 1 if reg.address == 8 else reg.high
        if not reg.low <= value <= high:
            return DATA_RANGE
        if reg.address == 11 and value not in self.model.modes:
            return DATA_RANGE
        if reg.address == 98 and self.watchdog_fired and value != 0:
            return DATA_RANGE
        if reg.address in GOALS:
            if self.watchdog_fired:
                return DATA_RANGE
            limit = {100: "PWM_Limit", 102: "Current_Limit", 104: "Velocity_Limit"}.get(
                reg.address)
            if limit is not None and abs(value) > self._get(self.regs[limit]):
                return DATA_LIMIT
            if reg.address == 116 and self.table[11] == 3 and not (
                    self._get(self.regs["Min_Position_Limit"]) <= value
                    <= self._get(self.regs["Max_Position_Limit"])):
                return DATA_LIMIT
        return 0

    def reg_write(self, address: int, data: bytes) -> int:
        """REG_WRITE: checked now, applied by ACTION."""
        error = self.check_write(address, data)
        if not error:
            self._staged = (address, bytes(data))
            self.table[69] = 1
        return error

    def action(self) -> int:
        if self._staged is None:
            return INSTRUCTION_ERROR
        staged, self._staged = self._staged, None
        self.table[69] = 0
        return self.write(*staged)

    def error_byte(self, error: int = 0) -> int:
        """A status packet's error field: ``error`` number, alert bit on a hardware error."""
        self._detect()
        return error | (ALERT if self._hw_errors else 0)

    def reboot(self) -> None:
        """REBOOT (and power-on): EEPROM from what was kept, RAM from its defaults, torque
        off, hardware errors cleared."""
        self.table[:EEPROM_END] = self._flash
        self.table[EEPROM_END:] = self._defaults()[EEPROM_END:]
        self._staged = None
        self._hw_errors = 0
        self._refresh()
        self._command()

    def factory_reset(self, option: int) -> int:
        """FACTORY_RESET: 0xFF everything, 0x01 all but the ID, 0x02 all but ID and baud."""
        if option not in (0x01, 0x02, 0xFF):
            return DATA_RANGE
        keep = self.table[7:9]
        self.table[:EEPROM_END] = self._defaults()[:EEPROM_END]
        if option != 0xFF:
            self.table[7] = keep[0]
        if option == 0x02:
            self.table[8] = keep[1]
        self._flash = bytes(self.table[:EEPROM_END])
        self.reboot()
        return 0

    # ------------------------------------------------------------------ the bus watchdog
    def note_packet(self, now: float) -> None:
        """An instruction packet for this servo (or broadcast) arrived at ``now``."""
        self._last_packet = now

    def watchdog_deadline(self) -> float | None:
        """When the watchdog will stop the servo if no packet comes (None: it will not)."""
        period = self.table[98]
        if not self.torque or period == 0 or period == WATCHDOG_ERROR:
            return None
        return self._last_packet + period * WATCHDOG_UNIT_S

    def check_watchdog(self, now: float) -> bool:
        """Stop the servo if its watchdog period has passed; True when it just did."""
        deadline = self.watchdog_deadline()
        if deadline is None or now < deadline:
            return False
        self._refresh()
        self.table[116:120] = self.table[132:136]  # Goal_Position := Present_Position
        self._set("Goal_Velocity", 0)
        self.table[98] = WATCHDOG_ERROR
        self.watchdog_fired_at = now
        self._command()
        return True

    # ------------------------------------------------------------------ the joint
    def goal_target(self) -> float | None:
        """The plant position (steps) the joint is driven to; None: not driven."""
        if not self.torque or self.table[11] not in POSITION_MODES:
            return None
        goal = self._get(self.regs["Goal_Position"])
        if self.table[11] == 3:
            low = self._get(self.regs["Min_Position_Limit"])
            high = self._get(self.regs["Max_Position_Limit"])
            goal = min(max(goal, low), high) if low <= high else low
        return self._to_plant(goal - self._get(self.regs["Homing_Offset"]))

    def _to_plant(self, steps: float) -> float:
        """Servo-frame steps (before the homing offset) <-> plant steps: mirrored in reverse
        mode (the same map both ways)."""
        return STEPS_PER_TURN - steps if self.table[10] & 1 else steps

    def _detect(self) -> None:
        """Latch the hardware errors present now; a shutdown error switches torque off."""
        volts = round(self.voltage * 10)
        found = self.faults & (HW_ENCODER | HW_SHOCK | HW_OVERLOAD)
        if not self._get(self.regs["Min_Voltage_Limit"]) <= volts \
                <= self._get(self.regs["Max_Voltage_Limit"]):
            found |= HW_VOLTAGE
        if self.temperature > self.table[31]:
            found |= HW_OVERHEAT
        self._hw_errors |= found
        self.table[70] = self._hw_errors
        if self._hw_errors & self.table[63] and self.torque:
            self.table[64] = 0
            self.plant.drive(self.joint, None)

    def _command(self) -> None:
        self._detect()
        self.plant.drive(self.joint, self.goal_target())

    def _refresh(self) -> None:
        """Present values from the plant and the surroundings."""
        self._detect()
        sensed = self.plant.sense(self.joint)
        present = round(self._to_plant(sensed.position)) + self._get(self.regs["Homing_Offset"])
        sign = -1 if self.table[10] & 1 else 1
        rpm_units = sign * sensed.velocity * 60 / STEPS_PER_TURN / 0.229
        load = max(-1.0, min(1.0, sign * sensed.load))
        self._set("Present_Position", present)
        self._set("Present_Velocity", round(rpm_units))
        self._set("Present_PWM", round(load * 885))
        self._set("Present_Current", round(load * (
            1000 if "Current_Limit" not in self.regs else self.model.stall_current_a * 1000)))
        self._set("Present_Input_Voltage", max(0, min(65535, round(self.voltage * 10))))
        self._set("Present_Temperature", max(0, min(255, round(self.temperature))))
        self._set("Realtime_Tick", int(time.monotonic() * 1000) % 32768)
        self._set("Moving", int(abs(rpm_units) > self._get(self.regs["Moving_Threshold"])))
        if not self.torque:  # the goal follows the joint: torque on holds it where it is
            self._set("Goal_Position", present)
        target = self.goal_target()
        self._set("Position_Trajectory", present if target is None else round(
            self._to_plant(target) + self._get(self.regs["Homing_Offset"])))
