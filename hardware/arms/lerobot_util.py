"""What the follower drivers and the leader-arm devices share around lerobot's classes: the
units table both use, lerobot's calibration directory and flow, and a one-line reason for a
lerobot error."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from hardware.arms.units import UnitsTable, arm_table

log = logging.getLogger(__name__)

GRIPPER_SPAN_RAD = math.radians(100)  # the simulated gripper's 0 .. 100 % range
# tries at lerobot's bus connect (its motor check pings each servo once, without retries):
# one lost status packet on a busy USB-serial link (lerobot#1252) is transient
CONNECT_ATTEMPTS = 3


def units_for(cfg: Any) -> UnitsTable:
    """The SO-101 / Koch units table (README "Real arms") with ``cfg.signs``/``offsets_deg``."""
    return arm_table(GRIPPER_SPAN_RAD, cfg.signs, cfg.offsets_deg)


def calibration_dir(cfg: Any) -> Path | None:
    """``cfg.calibration_dir`` as lerobot takes it (None: lerobot's default directory)."""
    return None if cfg.calibration_dir in (None, "") else Path(cfg.calibration_dir).expanduser()


def reason(exc: BaseException) -> str:
    """``Type: first line`` of a lerobot (or pyserial) error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def connect_bus(bus: Any, who: str, attempts: int = CONNECT_ATTEMPTS) -> None:
    """lerobot's ``bus.connect()`` (with its motor check), tried ``attempts`` times with the
    port closed in between; the last failure is raised as lerobot raised it."""
    for attempt in range(1, attempts + 1):
        try:
            bus.connect()
            return
        except Exception as exc:
            try:
                if bus.is_connected:
                    bus.port_handler.closePort()
            except Exception as err:
                log.debug("%s: port close: %s", who, err)
            if attempt == attempts:
                raise
            log.warning("%s: bus connect attempt %d failed (%s); retrying", who, attempt,
                        reason(exc))
            time.sleep(0.2)


def run_calibration(lr: Any, who: str) -> Path:
    """lerobot's interactive calibration of ``lr`` (a connected robot or teleoperator, asked
    for a new calibration, not "use the file"); disconnects with torque off; returns the file
    written."""
    try:
        lr.calibration = {}
        lr.calibrate()
    finally:
        try:
            lr.bus.disconnect(disable_torque=True)
        except Exception as exc:
            log.warning("%s: disconnect after calibration: %s", who, reason(exc))
    return Path(lr.calibration_fpath)
