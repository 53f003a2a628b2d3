"""Leader arms as teleop devices: the person moves a second, unpowered arm; the robot follows.

A leader arm (SO-101 / SO-100 leader, Koch leader) is read through lerobot's own teleoperator
(``SOLeader``, ``KochLeader``: their motor buses, calibration files and calibration flow;
robolearn writes no servo protocol). Its calibrated joint values become the follower's action
units through the follower's own units table (:mod:`hardware.arms.units`): radians of
``sim_arm``. So one leader drives ``so101``, ``koch`` and ``sim_arm`` alike, with absolute joint
targets (:class:`PoseMapper`), clipped to the robot's action bounds.

**Who drives.**

- No policy (``robolearn collect``): the leader drives every step, moving or not; the robot
  goes where the leader is (``Teleop.alone``).
- A policy runs (``deploy``, or any ``ControlLoop.run_episode(policy, teleop)``): the leader
  takes over when the person moves it, i.e. when any joint is more than ``move_threshold`` rad
  from where the leader rested (or when the takeover key, space, toggles a takeover). Each step
  it drives is recorded as an ``intervention``. It hands back to the policy once it has been
  still (no joint past the threshold) for ``hold_s`` seconds (``teleop_config.hold_s``, default
  1 s for a leader). At the moment of takeover the robot is where the policy left it and the
  leader wherever the person holds it: the jump between the two is limited only by the control
  loop's safety filter, ``safety.max_delta`` (the most a joint target may change per step,
  rad). Set it when a leader takes over a real arm (0.05 rad at 30 Hz: 1.5 rad/s); without it
  the follower jumps to the leader's pose at the servos' own speed.

**Events** (start, end, take over, keep, discard...): a leader arm has no buttons. They come
from the keyboard of the terminal (``keys=keyboard``: the keyboard device's own event keys,
composed here, with no driving keys: Enter starts and ends, space takes over, ``k s f d r``
decide after an episode). Without a terminal: ``teleop_config.tty=/dev/pts/N`` (another
terminal), or ``keys=none`` (no events: a policy run where the leader takes over by moving
only; ``collect`` refuses it, it could never start an episode).

**Calibration**: ``robolearn calibrate teleop=so101_leader teleop.port=PORT teleop.id=NAME``
runs lerobot's flow for the leader and writes lerobot's file
(``<calibration_dir>/<id>.json``); a leader without one is refused with that command.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hardware.arms.lerobot_util import CONNECT_ATTEMPTS, connect_bus, run_calibration, units_for
from hardware.arms.lerobot_util import reason as _reason
from hardware.arms.units import UnitsTable
from hardware.teleop.base import (
    ArmMapperConfig,
    CarMapperConfig,
    DeviceError,
    DeviceState,
    Mapper,
    TeleopDevice,
)
from hardware.teleop.keyboard import KeyboardConfig, KeyboardDevice
from robolearn_core.config import ConfigError, InvalidValue

log = logging.getLogger(__name__)

KEY_SOURCES = ("keyboard", "none")


@dataclass
class LeaderConfig:
    """``teleop_config.*`` of a leader arm (``teleop=so101_leader|so100_leader|koch_leader``)."""

    port: str = ""  # serial port of the leader's bus adapter (/dev/ttyACM1), or an emulator's pty
    id: str = "robolearn_leader"  # leader name: selects its calibration file <id>.json
    calibration_dir: str | None = None  # where lerobot keeps the leader's calibration (None: its
    #   default, <HF_LEROBOT_CALIBRATION>/teleoperators/<so_leader|koch_leader>)
    signs: list[int] = field(default_factory=lambda: [1] * 6)  # units table (per joint: +1 or
    #   -1; default: the follower's table, as lerobot maps leader to follower one to one)
    offsets_deg: list[float] = field(default_factory=lambda: [0.0] * 6)  # units table (per
    #   joint: the simulated angle (deg) at the leader's calibrated middle)
    move_threshold: float = 0.05  # rad a joint must move from where the leader rested (to take
    #   over from a policy; with no policy the leader always drives)
    keys: str = "keyboard"  # events (start, end, keep...): "keyboard" (a terminal) or "none"
    tty: str | None = None  # terminal the event keys are read from; None: stdin
    read_retries: int = 2  # extra tries of a failed bus read before the link counts as lost

    def __post_init__(self) -> None:
        if self.keys not in KEY_SOURCES:
            raise InvalidValue("keys", f"must be one of {', '.join(KEY_SOURCES)}, got "
                                       f"{self.keys!r}")
        if not self.move_threshold > 0:
            raise InvalidValue("move_threshold", f"must be > 0 rad, got {self.move_threshold}")
        if self.read_retries < 0:
            raise InvalidValue("read_retries", f"must be >= 0, got {self.read_retries}")
        for key in ("signs", "offsets_deg"):
            if len(getattr(self, key)) != 6:
                raise InvalidValue(key, f"needs 6 values (one per joint), got "
                                        f"{list(getattr(self, key))}")
        if any(s not in (1, -1) for s in self.signs):
            raise InvalidValue("signs", f"each must be +1 or -1, got {list(self.signs)}")


class NoAnswer(DeviceError):
    """lerobot's bus connect found no servos (its motor check): transient on a busy link (a
    lost status packet), so :meth:`LeaderArmDevice.connect` tries again; final after its attempts.
    (It was raised as a plain DeviceError, which the retry took for final: a full test run
    lost a leader to one lost packet.)"""


class PoseMapper(Mapper):
    """A device's joint ``pose`` -> absolute joint targets, in the robot's joint order,
    clipped to its action bounds.

    Active (the human gives input) when any joint is more than ``threshold`` rad from the rest
    pose: the pose at the first call, and again after each such move (so a slow, steady motion
    keeps it active every few steps while a still hand never does). The rest pose outlives a
    hand-back (:meth:`release`); a new episode (:meth:`reset`) rests where the device is at its
    first step, so moving the leader between episodes is no takeover."""

    absolute = True

    def __init__(self, joints: Sequence[str], low: np.ndarray, high: np.ndarray,
                 threshold: float) -> None:
        self.joints = tuple(joints)
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.threshold = float(threshold)
        self.rest: np.ndarray | None = None  # where the device last rested, (J,) rad

    def __call__(self, state: DeviceState, obs: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, bool]:
        try:
            pose = np.array([state.pose[j] for j in self.joints], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"PoseMapper: the device reported no position of joint {exc} "
                             "(is it in drive mode?)") from None
        moved = self.rest is not None and bool(np.max(np.abs(pose - self.rest)) > self.threshold)
        if self.rest is None or moved:
            self.rest = pose
        return np.clip(pose, self.low, self.high), moved

    def reset(self) -> None:
        self.rest = None


class LeaderArmDevice(TeleopDevice):
    """A leader arm read through a lerobot teleoperator; a subclass names the teleoperator and
    the follower whose units table (and emulator) it shares."""

    kinds = ("arm",)
    default_hold_s = 1.0  # s still before a policy gets the arm back
    config_class: ClassVar[type[LeaderConfig]] = LeaderConfig
    follower: ClassVar[str] = ""  # registry name of the follower robot of the same kit
    # a device emulator of the leader's bus: ``python -m <emulator> <emulator_args> --hand``
    emulator: ClassVar[str] = ""
    emulator_args: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def config_for(cls, kind: str, **cfg: Any) -> LeaderConfig:
        return cls.config_class(**cfg)

    def __init__(self, cfg: LeaderConfig | None = None) -> None:
        self.cfg = cfg or self.config_class()
        self.units = self.units_table(self.cfg)
        self.joints = self.units.names
        self.keyboard = (KeyboardDevice(KeyboardConfig(layout="car", axis_keys={},
                                                       tty=self.cfg.tty))
                         if self.cfg.keys == "keyboard" else None)  # events only: no axes
        self._lr: Any = None  # the lerobot teleoperator, while connected

    # ------------------------------------------------------------------ per arm
    def units_table(self, cfg: LeaderConfig) -> UnitsTable:
        """The follower's :class:`UnitsTable` with this config's signs and offsets."""
        return units_for(cfg)

    @abstractmethod
    def make_lerobot(self, cfg: LeaderConfig) -> Any:
        """The lerobot teleoperator (not connected), its joints reported in degrees from the
        middle of their calibrated range and the gripper in 0 .. 100 %."""

    def calibrate_command(self) -> str:
        return (f"robolearn calibrate teleop={self.name} teleop.port={self.cfg.port} "
                f"teleop.id={self.cfg.id}")

    # ------------------------------------------------------------------ lifecycle
    def build(self) -> Any:
        """The lerobot teleoperator for this config (its calibration file loaded if any)."""
        if not self.cfg.port:
            raise DeviceError(f"teleop={self.name}: teleop_config.port is not set (the leader "
                              "arm's serial port, e.g. /dev/ttyACM1, or an emulator's pty)")
        if not Path(self.cfg.port).exists():
            raise DeviceError(f"teleop={self.name}: port {self.cfg.port}: no such device (is "
                              "the leader arm plugged in, or the emulator running?)")
        return self.make_lerobot(self.cfg)

    def _open_bus(self, attempts: int = 1) -> Any:
        lr = self.build()
        try:
            connect_bus(lr.bus, self.name, attempts)
        except Exception as exc:
            raise NoAnswer(f"teleop={self.name} on {self.cfg.port}: the leader's servos did "
                              f"not answer ({_reason(exc)})") from exc
        return lr

    def connect(self) -> None:
        if self._lr is not None:
            return
        if self.keyboard is not None:  # first: a missing terminal costs no bus traffic
            self._connect_keys(self.keyboard)
        try:
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    self._connect_bus()
                    break
                except (NoAnswer, ConnectionError, RuntimeError) as exc:
                    # a lost status packet during lerobot's connect (its motor check, its
                    # configure writes: "There is no status packet", lerobot#1252) is transient
                    # on a busy USB-serial link: close, and try again a few times
                    self._close()
                    if attempt + 1 == CONNECT_ATTEMPTS:
                        raise
                    log.warning("%s: connect attempt %d failed (%s); retrying", self.name,
                                attempt + 1, _reason(exc))
                    time.sleep(0.2)
                except DeviceError:
                    raise  # ours, and final (no calibration file)
        except BaseException as exc:
            self.disconnect()
            if isinstance(exc, Exception) and not isinstance(exc, DeviceError):
                raise DeviceError(f"teleop={self.name} on {self.cfg.port}: connect failed "
                                  f"({_reason(exc)})") from exc
            raise

    def _connect_bus(self) -> None:
        self._lr = lr = self._open_bus()
        if not lr.calibration:
            raise DeviceError(f"teleop={self.name} '{self.cfg.id}' has no calibration file "
                              f"({lr.calibration_fpath}); run: {self.calibrate_command()}")
        if not lr.bus.is_calibrated:  # the file is this leader's (by id): write it back
            lr.bus.disable_torque()
            lr.bus.write_calibration(lr.calibration)
        lr.configure()  # lerobot's: the leader's torque off (Koch: gripper as a trigger)
        self.settle()

    def _connect_keys(self, keyboard: KeyboardDevice) -> None:
        try:
            keyboard.connect()
        except DeviceError:
            where = self.cfg.tty or "stdin"
            raise DeviceError(
                f"teleop={self.name}: a leader arm has no buttons, its keys (start, end, keep) "
                f"are read from a terminal and {where} is not one: run in a terminal (ssh -t), "
                "set teleop_config.tty=/dev/pts/N, or teleop_config.keys=none (a policy run: "
                "the leader takes over by moving; collect needs keys)") from None

    def disconnect(self) -> None:
        if self.keyboard is not None:
            self.keyboard.disconnect()
        self._close()

    def _close(self) -> None:
        lr, self._lr = self._lr, None
        if lr is None:
            return
        try:
            lr.bus.disconnect(disable_torque=True)
        except Exception as exc:  # the link may be gone: nothing more to do
            log.warning("%s: disconnect: %s", self.name, _reason(exc))
            try:
                lr.bus.port_handler.closePort()
            except Exception as err:
                log.debug("port close: %s", err)

    # ------------------------------------------------------------------ reading
    def settle(self, timeout_s: float = 2.0) -> None:
        """Return once the leader stands still (< 0.005 rad in 0.1 s), at most ``timeout_s``:
        a servo-held trigger (the Koch's gripper) is still springing to its rest when lerobot's
        configure returns, and its motion would read as the person taking over."""
        deadline = time.monotonic() + timeout_s
        last = self.positions()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.positions()
            if np.all(np.abs(now - last) < 0.005):
                return
            last = now

    def positions(self) -> np.ndarray:
        """The leader's joints now, in the follower's units (rad of sim_arm), ``(6,)``."""
        if self._lr is None:
            raise DeviceError(f"teleop={self.name}: not connected (use `with device:`)")
        try:
            raw = self._lr.bus.sync_read("Present_Position", num_retry=self.cfg.read_retries)
        except Exception as exc:
            raise DeviceError(f"teleop={self.name} on {self.cfg.port}: link lost while reading "
                              f"the leader ({_reason(exc)})") from exc
        q = self.units.to_sim(raw)
        if not np.all(np.isfinite(q)):
            raise DeviceError(f"teleop={self.name}: non-finite joint reading {raw}")
        return q

    def read(self) -> DeviceState:
        """Events from the keyboard; the leader's pose while driving (in the other modes only
        keys matter, and the bus is left alone)."""
        events = self.keyboard.read().events if self.keyboard is not None else ()
        if self.mode != "drive":
            return DeviceState(events=events)
        q = self.positions()
        return DeviceState(events=events, pose=dict(zip(self.joints, q.tolist(), strict=True)))

    def set_mode(self, mode: str) -> None:
        if self.keyboard is not None:
            self.keyboard.set_mode(mode)
        super().set_mode(mode)

    def event_map(self, mode: str) -> Mapping[str, str]:
        return self.keyboard.event_map(mode) if self.keyboard is not None else {}

    # ------------------------------------------------------------------ mapping
    def own_mapper(self, joints: Sequence[str], low: np.ndarray, high: np.ndarray
                   ) -> Mapper | None:
        missing = [j for j in joints if j not in self.joints]
        if missing:
            raise ConfigError(f"teleop={self.name}: the robot's joint(s) {', '.join(missing)} "
                              f"are not the leader's ({', '.join(self.joints)})")
        return PoseMapper(joints, low, high, self.cfg.move_threshold)

    def motion(self, kind: str, joints: Sequence[str]) -> dict[str, str]:
        return {"leader arm": "every joint: the arm goes where the leader is"}

    def car_mapping(self) -> CarMapperConfig:
        raise ConfigError(f"teleop={self.name} drives arms, not a car")

    def arm_mapping(self, joints: Sequence[str]) -> ArmMapperConfig:
        return ArmMapperConfig(axes={}, gripper_joint=None)  # unused: own_mapper maps the pose

    # ------------------------------------------------------------------ calibration
    def calibrate(self) -> Path:
        """lerobot's interactive calibration of the leader (prompts on the terminal); returns
        the calibration file written."""
        return run_calibration(self._open_bus(CONNECT_ATTEMPTS), self.name)
