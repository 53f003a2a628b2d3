"""What emulated servos move: goal positions in, present positions out.

A servo model (:mod:`hardware.emulators.sts3215`) keeps the control table and talks the
protocol; the :class:`Plant` behind it is the physics: each servo id is one joint, positions are
raw encoder steps of the joint's actual angle (before any homing offset; 4096 a turn).

- :class:`IdealPlant`: each joint moves at a constant speed towards its target and stays put
  with torque off, unless moved "by hand" (:meth:`IdealPlant.move_by_hand`, what a user does
  during calibration).
- ``hardware.emulators.so101_plant.SO101Plant``: the simulated SO-101 of ``sim/arm``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

STEPS_PER_TURN = 4096


@dataclass(frozen=True)
class Sensed:
    """One joint as its servo's sensors see it."""

    position: float  # actual position, encoder steps (0 .. 4096 a turn)
    velocity: float  # steps/s
    load: float  # torque as a fraction of the servo's maximum, -1 .. 1


class Plant(Protocol):
    def drive(self, servo_id: int, target: float | None) -> None:
        """Hold joint ``servo_id`` at ``target`` steps (actual position); None: torque off,
        the joint is free."""

    def sense(self, servo_id: int) -> Sensed:
        """Where joint ``servo_id`` is now."""


class IdealPlant:
    """Joints that move at ``speed`` steps/s towards their target, on the wall clock."""

    def __init__(self, ids: list[int], start: float = 2048.0, speed: float = 3000.0) -> None:
        if speed <= 0:
            raise ValueError(f"IdealPlant: speed must be > 0 steps/s, got {speed}")
        self.speed = speed
        self._pos = dict.fromkeys(ids, float(start))
        self._vel = dict.fromkeys(ids, 0.0)
        self._target: dict[int, float | None] = dict.fromkeys(ids)
        self._t = dict.fromkeys(ids, time.monotonic())
        self._lock = threading.Lock()

    def drive(self, servo_id: int, target: float | None) -> None:
        with self._lock:
            self._advance(servo_id)
            self._target[servo_id] = target

    def sense(self, servo_id: int) -> Sensed:
        with self._lock:
            self._advance(servo_id)
            return Sensed(self._pos[servo_id] % STEPS_PER_TURN, self._vel[servo_id], 0.0)

    def move_by_hand(self, servo_id: int, position: float) -> None:
        """A person turns the joint to ``position`` steps (a servo with torque on pulls it
        back to its target)."""
        with self._lock:
            self._advance(servo_id)
            self._pos[servo_id] = float(position)

    def _advance(self, i: int) -> None:
        now = time.monotonic()
        dt, self._t[i] = now - self._t[i], now
        target = self._target[i]
        if target is None:
            self._vel[i] = 0.0
            return
        error = target - self._pos[i]
        step = min(abs(error), self.speed * dt)
        self._pos[i] += step if error > 0 else -step
        self._vel[i] = 0.0 if step == abs(error) else (self.speed if error > 0 else -self.speed)
