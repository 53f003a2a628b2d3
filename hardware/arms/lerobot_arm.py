"""A follower arm driven through lerobot's robot and motor-bus classes, as a robolearn ``Robot``.

robolearn writes no servo protocol: lerobot's ``SOFollower`` / ``KochFollower`` and their
``FeetechMotorsBus`` / ``DynamixelMotorsBus`` do the framing, calibration and normalisation;
this class adds what a robot-learning loop needs on top:

- **The simulated arm's units** (:mod:`hardware.arms.units`): observations and actions in
  radians, ``observation.state`` = 6 joint positions + 6 joint velocities, as ``sim_arm``.
- **Calibrated limits, enforced here.** The action bounds are the simulated joint ranges
  intersected with the arm's calibrated ranges (lerobot's calibration file), shrunk by one
  encoder step so rounding cannot land a goal outside them; every goal is clamped to them
  before it reaches the bus, whatever the caller did.
- **Safe connect.** Before torque comes on, each servo's goal is set to where it is, so
  connecting never makes the arm jump; an uncalibrated arm is refused with the command that
  calibrates it (lerobot would start its interactive calibration in the middle of a loop).
- **A configured stop** (``on_stop``: ``hold`` the present position, or ``torque_off``) and
  disconnect (``on_disconnect``).
- **A lost link is named.** Any failure of the bus (the adapter unplugged, the emulator killed,
  replies that fail their checksum on every retry) becomes a :class:`RobotError` naming the
  port and lerobot's reason; a garbled reply is never taken as a reading (lerobot checks every
  status packet) and the control loop stops and commits on it.
- **Reset** moves the arm to its home pose along a straight joint-space line over ``home_s``
  seconds (a real arm cannot teleport); it places nothing (a person sets the scene up).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.schema import Feature
from hardware.arms.lerobot_util import connect_bus, run_calibration, units_for
from hardware.arms.lerobot_util import reason as _reason
from hardware.arms.units import UnitsTable
from robolearn.robot import Robot, RobotError

log = logging.getLogger(__name__)

STOP_MODES = ("hold", "torque_off")


@dataclass
class ArmConfig:
    """Settings shared by the lerobot follower arms (``robot.*`` keys)."""

    port: str = ""  # serial port of the arm's bus adapter (/dev/ttyACM0), or an emulator's pty
    id: str = "robolearn"  # arm name: selects its calibration file <calibration_dir>/<id>.json
    calibration_dir: str | None = None  # where lerobot keeps calibration files; None: its default
    fps: float = 30.0  # control rate, Hz
    cameras: dict[str, str] = field(default_factory=dict)  # name -> index, /dev/videoN, zmq://..
    camera_fps: int = 30  # frame rate asked of each camera
    capture_width: int = 640  # width the camera captures at, px
    capture_height: int = 480  # height the camera captures at, px
    camera_width: int = 64  # observed image width (frames are resized to it), px
    camera_height: int = 64  # observed image height, px
    home: tuple[float, ...] = (0.0, 0.14, -0.03, 1.46, 0.0, 0.5)  # reset pose, rad (sim_arm's)
    home_s: float = 2.0  # time reset takes to move to the home pose, s
    on_stop: str = "hold"  # stop(): "hold" where it is, or "torque_off" (goes limp)
    on_disconnect: str = "torque_off"  # at disconnect: "torque_off" (lerobot's default) or "hold"

    # units table (README "Real arms: units"): per joint, lerobot's direction vs the sim joint's
    signs: list[int] = field(default_factory=lambda: [1] * 6)  # per joint: +1 or -1
    offsets_deg: list[float] = field(default_factory=lambda: [0.0] * 6)  # sim deg at lerobot 0
    read_retries: int = 2  # extra tries of a failed bus read before the link counts as lost
    verify_reads: bool | None = None  # read twice, accept only agreeing readings (None: the arm's
    #   default, on where the bus checksum is 8 bits: a garbled reply passes it 1 time in 256)

    # the cube from this camera's frames (sim.arm.cube_finder): observation.environment_state
    # (7,), the same feature as sim_arm's with robot.cube_camera; None: no cube state
    cube_camera: str | None = None
    # that camera's pose in the arm's base frame: x y z, its x and y axes, fovy (deg), as
    # measured on your set-up; None: where the simulated scene's front camera is
    cube_camera_pose: list[float] | None = None

    def __post_init__(self) -> None:
        for name in ("on_stop", "on_disconnect"):
            if getattr(self, name) not in STOP_MODES:
                raise ValueError(f"{name} must be one of {STOP_MODES}, got {getattr(self, name)!r}")
        if self.fps <= 0 or self.home_s < 0 or self.read_retries < 0:
            raise ValueError(f"need fps > 0, home_s >= 0, read_retries >= 0; got fps={self.fps}, "
                             f"home_s={self.home_s}, read_retries={self.read_retries}")
        for name in ("capture_width", "capture_height", "camera_width", "camera_height",
                     "camera_fps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.home = tuple(float(v) for v in self.home)
        self.cameras = {str(k): str(v) for k, v in dict(self.cameras).items()}
        if self.cube_camera is not None or self.cube_camera_pose is not None:
            from sim.arm.robot import check_cube_camera

            check_cube_camera(self.cube_camera, self.cube_camera_pose, self.cameras)


class LerobotArm(Robot):
    """Base of the follower arms; a subclass names its lerobot robot and units."""

    simulated = False
    config_class: type = ArmConfig
    # radians per second of one raw Present_Velocity unit at the servo (its datasheet unit)
    velocity_rad_s: float = 2 * np.pi / 4096
    # encoder steps a turn, for the one-step margin inside the calibrated limits
    steps_per_turn: int = 4096
    verify_default = False  # read twice and compare (``verify_reads``) unless the config says
    position_tolerance = 0.012  # rad two verified position reads may differ by (~8 steps) ...
    max_speed_rad_s = 6.0  # ... plus what a joint moving this fast covers between them

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = cfg = self.config_class(**kwargs)
        self.fps = cfg.fps
        self.units = self.units_table(cfg)
        from sim.arm.model import JOINT_LIMITS, JOINTS

        self.joints = JOINTS
        self._sim_low = np.array([JOINT_LIMITS[j][0] for j in JOINTS])
        self._sim_high = np.array([JOINT_LIMITS[j][1] for j in JOINTS])
        self._low, self._high = self._sim_low.copy(), self._sim_high.copy()
        self._lr: Any = None  # the lerobot robot, made at connect
        self.garbled_reads = 0  # verified reads that disagreed (and were read again)
        self._bus_lock = threading.RLock()  # one bus transaction at a time, from any thread
        self._last_q: np.ndarray | None = None
        self._finder: Any = None
        if cfg.cube_camera is not None:
            from sim.arm.cube_finder import CubeFinder

            self._finder = CubeFinder(cfg.cube_camera_pose)
        self._features = self._make_features()

    # ------------------------------------------------------------------ per arm
    def units_table(self, cfg: Any) -> UnitsTable:
        """The arm's :class:`UnitsTable` for its config (both arms: :func:`units_for`)."""
        return units_for(cfg)

    @abstractmethod
    def make_lerobot(self, cfg: Any, cameras: dict[str, Any]) -> Any:
        """The lerobot robot object (not connected) for ``cfg`` and lerobot camera configs."""

    def prepare_bus(self) -> None:
        """Called once the servos answer at connect, before torque comes on."""

    def after_configure(self) -> None:
        """Called once torque is on at connect (the Koch turns its bus watchdog on here)."""

    @classmethod
    def calibrate_command(cls, cfg: Any) -> str:
        return f"robolearn calibrate robot={cls.name} robot.port={cfg.port} robot.id={cfg.id}"

    # ------------------------------------------------------------------ features
    def _make_features(self) -> dict[str, Feature]:
        """The simulated arm's own features (the same names, units and shapes)."""
        from sim.arm.robot import camera_feature, joint_state_feature

        feats = {"observation.state": joint_state_feature()}
        if self._finder is not None:
            from sim.arm.cube_finder import feature

            feats["observation.environment_state"] = feature()
        for cam in self.cfg.cameras:
            feats[f"observation.images.{cam}"] = camera_feature(self.cfg.camera_height,
                                                                self.cfg.camera_width)
        return feats

    @property
    def observation_features(self) -> dict[str, Feature]:
        return self._features

    @property
    def action_feature(self) -> Feature:
        return Feature("float32", (len(self.joints),), names=self.joints)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._low.copy(), self._high.copy()

    # ------------------------------------------------------------------ lifecycle
    def lerobot_cameras(self) -> dict[str, Any]:
        """lerobot camera configs: ``zmq://HOST:PORT/NAME`` -> its network camera (``ZMQCamera``,
        what the emulated arms serve); an index, a device path or a file -> ``OpenCVCamera``."""
        from lerobot.cameras.opencv import OpenCVCameraConfig

        cfg = self.cfg
        out: dict[str, Any] = {}
        for name, src in cfg.cameras.items():
            if src.startswith("zmq://"):
                from urllib.parse import urlsplit

                from lerobot.cameras.zmq import ZMQCameraConfig

                url = urlsplit(src)
                if not url.hostname or not url.port:
                    raise RobotError(f"{self.name}: robot.cameras.{name}={src}: expected "
                                     f"zmq://HOST:PORT/NAME")
                out[name] = ZMQCameraConfig(server_address=url.hostname, port=url.port,
                                            camera_name=url.path.strip("/") or name,
                                            fps=cfg.camera_fps, width=cfg.capture_width,
                                            height=cfg.capture_height)
            else:
                out[name] = OpenCVCameraConfig(index_or_path=_camera_source(src),
                                               fps=cfg.camera_fps, width=cfg.capture_width,
                                               height=cfg.capture_height)
        return out

    def build(self) -> Any:
        """The lerobot robot for this config (its calibration file loaded when there is one)."""
        if not self.cfg.port:
            raise RobotError(f"{self.name}: robot.port is not set (the arm's serial port, e.g. "
                             f"/dev/ttyACM0, or the path `robolearn emulate {self.name}` prints)")
        if not Path(self.cfg.port).exists():
            raise RobotError(f"{self.name}: robot.port={self.cfg.port}: no such device (is the "
                             f"arm plugged in and powered, or the emulator running?)")
        return self.make_lerobot(self.cfg, self.lerobot_cameras())

    def connect(self) -> None:
        lr = self._open_bus()
        self._lr = lr
        try:
            self._check_calibration(lr)
            lr.bus.disable_torque()
            self.prepare_bus()
            # torque comes on holding where the arm is, not at a stale goal
            present = lr.bus.sync_read("Present_Position", normalize=False)
            lr.bus.sync_write("Goal_Position", present, normalize=False)
            lr.configure()  # lerobot's: modes, PID; torque on when it returns
            self.after_configure()
            for cam in lr.cameras.values():
                cam.connect()
        except BaseException as exc:
            self._close_quietly()
            if isinstance(exc, RobotError):
                raise
            if isinstance(exc, Exception):
                raise RobotError(f"{self.name} on {self.cfg.port}: connect failed "
                                 f"({_reason(exc)})") from exc
            raise
        self._set_bounds(lr.calibration)
        super().connect()

    def _check_calibration(self, lr: Any) -> None:
        if not lr.calibration:
            raise RobotError(f"{self.name} '{self.cfg.id}' has no calibration file "
                             f"({lr.calibration_fpath}); run: {self.calibrate_command(self.cfg)}")
        if not lr.bus.is_calibrated:
            # the file is this arm's calibration (by id); the servos lost or never had it
            log.info("%s: writing calibration %s to the servos", self.name, lr.calibration_fpath)
            lr.bus.disable_torque()
            lr.bus.write_calibration(lr.calibration)

    def _set_bounds(self, calibration: dict[str, Any]) -> None:
        """Action bounds = simulated joint ranges within the calibrated ranges, one encoder step
        inside them (lerobot truncates when it converts degrees to steps)."""
        lo_lr, hi_lr = {}, {}
        for j in self.joints:
            c = calibration[j]
            if j == "gripper":
                span = 100.0 / max(1, c.range_max - c.range_min)
                lo_lr[j], hi_lr[j] = span, 100.0 - span
            else:
                mid, step = (c.range_min + c.range_max) / 2, 360.0 / (self.steps_per_turn - 1)
                lo_lr[j] = (c.range_min - mid + 1) * step
                hi_lr[j] = (c.range_max - mid - 1) * step
        cal_low, cal_high = self.units.span_to_sim(lo_lr, hi_lr)
        low, high = np.maximum(self._sim_low, cal_low), np.minimum(self._sim_high, cal_high)
        empty = [j for j, a, b in zip(self.joints, low, high, strict=True) if a >= b]
        if empty:
            raise RobotError(f"{self.name}: the calibrated range of {', '.join(empty)} does not "
                             f"overlap the simulated arm's (check robot.signs / "
                             f"robot.offsets_deg, or recalibrate)")
        self._low, self._high = low, high

    def disconnect(self) -> None:
        if self._lr is None:
            return
        self._bus_lock.acquire()
        try:
            if self.cfg.on_disconnect == "hold":
                self._hold()
            self._lr.bus.disconnect(disable_torque=self.cfg.on_disconnect == "torque_off")
        except Exception as exc:  # the link may be gone: nothing more can be done
            log.warning("%s: disconnect: %s", self.name, _reason(exc))
        finally:
            self._close_quietly()
            self._bus_lock.release()
            super().disconnect()

    def _close_quietly(self) -> None:
        lr, self._lr = self._lr, None
        if lr is None:
            return
        for cam in lr.cameras.values():
            try:
                if cam.is_connected:
                    cam.disconnect()
            except Exception as exc:
                log.debug("camera disconnect: %s", exc)
        try:
            if lr.bus.is_connected:
                lr.bus.port_handler.closePort()
        except Exception as exc:
            log.debug("port close: %s", exc)

    # ------------------------------------------------------------------ control
    def _bus(self) -> Any:
        self._require_connected()
        return self._lr.bus

    def _io(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args)`` on the bus, one transaction at a time (the control loop's watchdog
        stops the robot from its own thread, and lerobot's port handler refuses a second user:
        "Port is in use!"); any failure is the link's, named with the port."""
        try:
            with self._bus_lock:
                result = fn(*args, **kwargs)
        except RobotError:
            raise
        except Exception as exc:
            raise RobotError(f"{self.name} on {self.cfg.port}: link lost while {what} "
                             f"({_reason(exc)})") from exc
        return result

    def _read_positions(self) -> np.ndarray:
        """Present_Position of every joint, rad, in joint order. With ``verify_reads``, two
        reads in a row must agree within :attr:`position_tolerance` plus what a joint moving at
        :attr:`max_speed_rad_s` covers between them: a reply garbled so that it still passes an
        8-bit checksum is not taken as a reading; disagreement on every retry is a
        :class:`RobotError`."""
        bus = self._bus()
        verify = self.verify_default if self.cfg.verify_reads is None else self.cfg.verify_reads

        def once() -> np.ndarray:
            return self.units.to_sim(self._io("reading Present_Position", bus.sync_read,
                                              "Present_Position",
                                              num_retry=self.cfg.read_retries))

        t_last = time.perf_counter()
        last = once()
        if not verify:
            return last
        for _ in range(self.cfg.read_retries + 1):
            t_new = time.perf_counter()
            new = once()
            allowed = self.position_tolerance + self.max_speed_rad_s * (t_new - t_last)
            if np.all(np.abs(new - last) <= allowed):
                return new
            t_last = t_new
            self.garbled_reads += 1
            last = new
        raise RobotError(f"{self.name} on {self.cfg.port}: Present_Position readings keep "
                         f"disagreeing ({self.cfg.read_retries + 2} reads, the last "
                         f"{new.round(4).tolist()}): a noisy bus or a loose cable")

    def _velocities(self) -> np.ndarray:
        """Joint speeds, rad/s in the servos' own directions. Not read twice: a velocity
        changes between two reads a few ms apart while the arm accelerates (comparing them
        refused honest readings); a reading beyond what the servo can do (a garbled reply past
        an 8-bit checksum) is read again, and keeps failing as a :class:`RobotError`."""
        bus = self._bus()
        for _ in range(self.cfg.read_retries + 1):
            raw = self._io("reading Present_Velocity", bus.sync_read, "Present_Velocity",
                           normalize=False, num_retry=self.cfg.read_retries)
            rates = np.array([raw[j] for j in self.joints], dtype=np.float64) * self.velocity_rad_s
            if np.all(np.abs(rates) <= 1.5 * self.max_speed_rad_s):
                return rates
            self.garbled_reads += 1
        raise RobotError(f"{self.name} on {self.cfg.port}: Present_Velocity readings beyond the "
                         f"servos' speed ({rates.round(2).tolist()} rad/s): a noisy bus or a "
                         f"loose cable")

    def positions(self) -> np.ndarray:
        """Joint angles now, rad ``(6,)``."""
        q = self._read_positions()
        if not np.all(np.isfinite(q)):
            raise RobotError(f"{self.name}: non-finite joint reading {q.tolist()}")
        self._last_q = q
        return q

    def observe(self) -> dict[str, np.ndarray]:
        q = self.positions()
        rates = self._velocities()
        # velocities are measured at the servo in its own direction: only the sign applies
        qd = np.sign(self.units.rates_to_sim(np.ones(len(self.joints)))) * rates
        obs = {"observation.state": np.concatenate([q, qd]).astype(np.float32)}
        for name, cam in self._lr.cameras.items():
            frame = self._io(f"reading camera {name}", cam.read_latest)
            obs[f"observation.images.{name}"] = self._resize(np.asarray(frame))
        if self._finder is not None:
            obs["observation.environment_state"] = self._finder.observe(
                obs[f"observation.images.{self.cfg.cube_camera}"], q)
        return obs

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        h, w = self.cfg.camera_height, self.cfg.camera_width
        if frame.shape[:2] == (h, w):
            return frame.astype(np.uint8, copy=False)
        import cv2

        return np.asarray(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA), np.uint8)

    def goal_of(self, action: np.ndarray) -> dict[str, float]:
        """The lerobot goal for ``action`` (rad), clamped to the calibrated limits first;
        non-finite targets are refused (the safety filter replaces them before this)."""
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (len(self.joints),):
            raise ValueError(f"{self.name}.act: expected shape ({len(self.joints)},), got "
                             f"{a.shape}")
        if not np.all(np.isfinite(a)):
            raise RobotError(f"{self.name}: refused a non-finite goal {a.tolist()}")
        return self.units.to_lerobot(np.clip(a, self._low, self._high))

    def act(self, action: np.ndarray) -> np.ndarray:
        goal = self.goal_of(action)
        bus = self._bus()
        self._io("writing goals", bus.sync_write, "Goal_Position", goal)
        return self.units.to_sim(goal).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Move to ``home`` along a straight joint-space line over ``home_s`` seconds at the
        control rate. A real arm places no objects: ``options`` (a simulated task's layout)
        are ignored."""
        if self._finder is not None:
            self._finder.reset()  # a new scene: nothing seen of it yet
        start = self.positions()
        home = np.clip(np.asarray(self.cfg.home, dtype=np.float64), self._low, self._high)
        steps = max(1, round(self.cfg.home_s * self.fps))
        t0 = time.perf_counter()
        for k in range(1, steps + 1):
            self.act(start + (home - start) * k / steps)
            delay = t0 + k / self.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        return self.observe()

    def _hold(self) -> None:
        bus = self._lr.bus
        present = bus.sync_read("Present_Position", normalize=False,
                                num_retry=self.cfg.read_retries)
        bus.sync_write("Goal_Position", present, normalize=False)

    def stop(self) -> None:
        """``on_stop``: hold the present position (goal := present, one read and one write),
        or switch torque off."""
        if self._lr is None:
            return
        if self.cfg.on_stop == "torque_off":
            self._io("switching torque off", self._lr.bus.disable_torque)
        else:
            self._io("holding position", self._hold)

    def hold_action(self) -> np.ndarray:
        if self._last_q is None or self._lr is None:
            return np.clip(np.asarray(self.cfg.home, np.float64), self._low, self._high)
        return np.clip(self.positions(), self._low, self._high)

    def state(self) -> dict[str, Any]:
        """A real arm knows its joints, not where the objects are."""
        return {"qpos": None if self._last_q is None else self._last_q.copy()}

    # ------------------------------------------------------------------ calibration
    def calibrate(self) -> Path:
        """lerobot's interactive calibration of this arm (prompts on the terminal); returns
        the calibration file written."""
        return run_calibration(self._open_bus(), self.name)

    def _open_bus(self) -> Any:
        """The lerobot robot with its bus connected (lerobot's motor check passed)."""
        lr = self.build()
        try:
            connect_bus(lr.bus, self.name)
        except Exception as exc:
            raise RobotError(f"{self.name} on {self.cfg.port}: the servos did not answer "
                             f"({_reason(exc)})") from exc
        return lr


def _camera_source(src: str) -> int | Path:
    """A camera index (``"0"``) or a device path, as lerobot's OpenCV camera takes it."""
    return int(src) if src.isdigit() else Path(src)
