"""Fuzz both servo bus emulators in process: 1e4 random, corrupted and random-but-valid frames
each (hardware.emulators.fuzz; the 1e5 run is ``python -m bench.fuzz_emulators``)."""

from __future__ import annotations

import pytest

from hardware.emulators.fuzz import corrupt, fuzz


@pytest.mark.parametrize("name", ["feetech", "dynamixel"])
def test_random_frames_neither_crash_nor_corrupt_the_emulator(name: str) -> None:
    report = fuzz(name, 10_000, seed=1)
    assert report.crashes == 0, report.first_crash
    assert report.n_violations == 0, report.violations
    # the fuzz reached the emulator: frames were served and answered, every kind of drop seen
    assert report.stats["frames"] > 4000 and report.replies > 500
    bad_sum = "bad_checksum" if name == "feetech" else "bad_crc"
    for reason in (bad_sum, "bad_header", "malformed", "unknown_instruction"):
        assert report.stats.get(reason, 0) > 50, (reason, report.stats)


def test_the_fuzz_finds_a_servo_that_lets_a_goal_past_its_limits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The invariants can fail: a Dynamixel servo that neither refuses nor clamps goals outside
    its position limits is caught."""
    from hardware.emulators import xl_servos

    check = xl_servos.XServo._check_value

    def no_limit(self: xl_servos.XServo, reg: xl_servos.Register, value: int) -> int:
        if reg.address == 116:  # Goal_Position: its range, but not the position limits
            return 0 if reg.low <= value <= reg.high else xl_servos.DATA_RANGE
        return check(self, reg, value)

    def unclamped(self: xl_servos.XServo) -> float | None:
        if not self.torque or self.table[11] not in xl_servos.POSITION_MODES:
            return None
        return self._to_plant(self._get(self.regs["Goal_Position"])
                              - self._get(self.regs["Homing_Offset"]))

    monkeypatch.setattr(xl_servos.XServo, "_check_value", no_limit)
    monkeypatch.setattr(xl_servos.XServo, "goal_target", unclamped)
    report = fuzz("dynamixel", 10_000, seed=1)
    assert report.n_violations > 0
    assert all("goal" in v and "outside limits" in v for v in report.violations)


def test_corruptions_change_the_frame() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    frame = bytes.fromhex("fffffd0001030001194e")
    kinds = set()
    for _ in range(200):
        kind, data = corrupt(frame, rng)
        kinds.add(kind)
        assert data != frame, kind
    assert kinds == {"bit_flip", "truncated", "inserted", "deleted", "wrong_length"}
