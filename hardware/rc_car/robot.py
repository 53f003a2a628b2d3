"""``rc_car``: a 1/10 RC car (steering servo, ESC, wheel encoder) driven through robolearn's own
firmware (``hardware/rc_car/firmware``) over USB serial, with the same observation and action
features as ``sim_car``, so a policy trained in simulation drives it unchanged.

What each observation element comes from on the real car (it never reads a simulator):

=================  ===========================================================================
 x, y, sin/cos yaw  the localisation source: ``robot.localisation=zmq://HOST:PORT`` (an external
                    pose stream, JSON ``{"t", "x", "y", "yaw"}``: motion capture, RTK GPS, or the
                    emulator's) or ``dead_reckoning`` (encoder distance + commanded steering
                    through the bicycle model, from the start pose given to ``reset``; drifts)
 vx                 the wheel encoder: whole ticks between edge timestamps, signed by the
                    commanded throttle (a one-channel encoder has no direction)
 vy                 0: the car has no lateral velocity sensor (sim_car's slip is small)
 yaw_rate           bicycle model, ``vx * tan(steering angle) / wheelbase``
 steering, throttle the commands last sent (the servo's actual angle is not measured)
 cp*_dx, cp*_dy     the track's checkpoints (``robot.track``: a surveyed track JSON) in the car
                    frame, from the pose above
=================  ===========================================================================

Actions: steering and throttle in [-1, 1], rate-limited by ``max_action_delta`` per step as in
simulation, mapped to pulse widths (``steer_center_us + steering * steer_span_us``; throttle to
``esc_neutral_us`` plus the forward or reverse span, capped by ``max_throttle``). The firmware
refuses any pulse outside 1000-2000 us and stops the car (neutral ESC, centred steering) within
100 ms of the last valid command: if this process dies, hangs or the cable is pulled, the car
stops without it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from data.schema import Feature
from hardware.rc_car import protocol as P
from hardware.rc_car.sensing import Odometry, PoseStream
from robolearn.robot import Robot, RobotError
from sim.car.robot import state_names
from sim.car.tracks import Track, car_frame, load_course

WHEEL_RADIUS = 0.05  # m, the emulated car's (sim_car's) wheel
TICKS_PER_REV = 64  # encoder edges a wheel turn, the emulator's default


@dataclass
class RCCarConfig:
    """``robot=rc_car`` settings."""

    port: str = ""  # serial port of the car's board: /dev/ttyUSB0, or the emulator's pty
    baud: int = 115200  # serial rate the firmware uses (PROTOCOL.md)
    track: str = "oval"  # the surveyed track (name or JSON path): checkpoints in the observation
    # checkpoints recorded by driving a demo lap (``robolearn course``) instead of the track's
    course: str | None = None
    fps: float = 20.0  # control rate, Hz
    localisation: str = "dead_reckoning"  # or zmq://HOST:PORT, an external pose stream
    localisation_timeout_s: float = 0.3  # an older pose is a lost localisation (RobotError)
    failsafe_ms: int = 80  # the firmware stops the car this long after the last valid command
    steer_center_us: int = 1500  # pulse width that centres the steering (trim)
    steer_span_us: int = 500  # us from centre at full left; negative for a reversed servo
    esc_neutral_us: int = 1500  # pulse width at which the ESC neither drives nor brakes
    esc_forward_us: int = 500  # us above neutral at full forward throttle
    esc_reverse_us: int = 500  # us below neutral at full reverse
    max_throttle: float = 1.0  # cap on |throttle| (a first drive: 0.3)
    max_action_delta: float = 0.2  # largest change of each action per step (as sim_car)
    ticks_per_metre: float = TICKS_PER_REV / (2 * math.pi * WHEEL_RADIUS)  # encoder edges a metre
    wheelbase: float = 0.32  # m
    max_steer: float = 0.5  # rad, mean front-wheel angle at steering +-1
    n_checkpoints_obs: int = 3  # next checkpoints in observation.state (as sim_car's)
    stuck_steps: int = 30  # stuck: the last this-many poses lie within stuck_radius
    stuck_radius: float = 0.3  # m
    recovery_time: float = 1.0  # s of reversing in the recovery manoeuvre
    recovery_throttle: float = -0.3  # throttle while reversing in the recovery manoeuvre
    boot_timeout_s: float = 4.0  # opening the port resets an Arduino: wait this long for it
    telemetry_timeout_s: float = 0.3  # no telemetry this long while driving: link lost

    def __post_init__(self) -> None:
        for key in ("baud", "fps", "localisation_timeout_s", "ticks_per_metre", "wheelbase",
                    "max_steer", "boot_timeout_s", "telemetry_timeout_s", "recovery_time"):
            if not getattr(self, key) > 0:
                raise ValueError(f"robot.{key} must be > 0, got {getattr(self, key)!r}")
        if not P.TIMEOUT_MIN_MS <= self.failsafe_ms <= P.TIMEOUT_MAX_MS:
            raise ValueError(f"robot.failsafe_ms must be in [{P.TIMEOUT_MIN_MS}, "
                             f"{P.TIMEOUT_MAX_MS}] (the firmware's range), got {self.failsafe_ms}")
        if self.failsafe_ms < 1000 / self.fps * 1.2:
            raise ValueError(f"robot.failsafe_ms = {self.failsafe_ms} is shorter than 1.2 "
                             f"control periods at robot.fps = {self.fps}: the car would stop "
                             "between two commands")
        for key in ("steer_center_us", "esc_neutral_us"):
            if not P.PULSE_MIN_US <= getattr(self, key) <= P.PULSE_MAX_US:
                raise ValueError(f"robot.{key} must be in [1000, 2000] us")
        ends = (self.steer_center_us + abs(self.steer_span_us),
                self.steer_center_us - abs(self.steer_span_us),
                self.esc_neutral_us + self.esc_forward_us,
                self.esc_neutral_us - self.esc_reverse_us)
        if min(ends) < P.PULSE_MIN_US or max(ends) > P.PULSE_MAX_US or min(
                self.esc_forward_us, self.esc_reverse_us) < 0:
            raise ValueError("robot: steer_center_us +- steer_span_us and esc_neutral_us + "
                             "esc_forward_us / - esc_reverse_us must stay within 1000-2000 us")
        if not 0 < self.max_throttle <= 1 or not 0 <= self.max_action_delta <= 2:
            raise ValueError("robot.max_throttle must be in (0, 1], max_action_delta in [0, 2]")
        if self.localisation != "dead_reckoning" and not self.localisation.startswith("zmq://"):
            raise ValueError(f"robot.localisation must be dead_reckoning or zmq://HOST:PORT, "
                             f"got {self.localisation!r}")
        if not -1 <= self.recovery_throttle < 0:
            raise ValueError("robot.recovery_throttle must be in [-1, 0)")


class RCCar(Robot):
    """The RC car through its firmware; see the module docstring for what each value means."""

    name = "rc_car"
    config_class = RCCarConfig
    emulator = "hardware.emulators.rc_car"  # device emulator (`python -m`)
    emulator_args: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.config = cfg = RCCarConfig(**kwargs)
        self.fps = cfg.fps
        try:
            self.track = Track.load(cfg.track)
            if cfg.course:
                self.track = self.track.with_checkpoints(*load_course(cfg.course))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"robot.track = {cfg.track!r}, robot.course = {cfg.course!r}: "
                             f"{exc}") from None
        if cfg.n_checkpoints_obs > len(self.track.checkpoints):
            raise ValueError(f"robot.n_checkpoints_obs = {cfg.n_checkpoints_obs} exceeds the "
                             f"{len(self.track.checkpoints)} checkpoints of {self.track.name!r}")
        names = state_names(cfg.n_checkpoints_obs)
        self._features = {"observation.state": Feature("float32", (len(names),), names=names)}
        self._serial: Any = None
        self._reader: threading.Thread | None = None
        self._frames = P.FrameReader()
        self._lock = threading.Lock()
        self._telemetry: P.Telemetry | None = None
        self._telemetry_at = 0.0  # time.monotonic() it arrived
        self._hello: P.HelloReply | None = None
        self._link_error: str | None = None
        self._seq = 0
        self._steer, self._throttle = 0.0, 0.0
        self._armed = False
        self._standing = False  # reset() done, no command sent yet (see _arm_standing)
        self._failsafes_at_reset = 0  # the firmware's failsafe count when reset() ended
        self._sent_at = 0.0  # time.monotonic() the last DRIVE was written
        self._gap_ms = 0.0  # the longest time between two DRIVEs of this episode
        self._odo = Odometry(cfg.ticks_per_metre, cfg.wheelbase, cfg.max_steer)
        self._poses: PoseStream | None = None  # robot.localisation=zmq://...
        self._window: list[tuple[float, float]] = []
        self._idx = 0
        self._rng = np.random.default_rng()
        self.stats = {"telemetry": 0, "bad_frames": 0, "oversize_frames": 0,
                      "nonfinite_actions": 0, "commands": 0, "standing_rearms": 0}
        self.last_bad_frame = ""  # what was wrong with the last dropped telemetry frame

    # ------------------------------------------------------------------ features
    @property
    def observation_features(self) -> dict[str, Feature]:
        return dict(self._features)

    @property
    def action_feature(self) -> Feature:
        return Feature("float32", (2,), names=("steering", "throttle"))

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return -np.ones(2), np.ones(2)

    # ------------------------------------------------------------------ link
    def connect(self) -> None:
        import serial

        cfg = self.config
        if not cfg.port:
            raise RobotError("rc_car: robot.port is not set (the car's serial port, or the "
                             "path `robolearn emulate rc_car` printed)")
        try:
            self._serial = serial.Serial(cfg.port, cfg.baud, timeout=0.01, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            raise RobotError(f"rc_car: cannot open robot.port = {cfg.port}: {exc}") from None
        self._serial.reset_input_buffer()
        self._link_error = None
        self._reader = threading.Thread(target=self._read_loop, name="rc-car-telemetry",
                                        daemon=True)
        self._reader.start()
        super().connect()
        try:
            self._handshake()
            if cfg.localisation.startswith("zmq://"):
                self._poses = PoseStream(cfg.localisation, cfg.localisation_timeout_s)
        except BaseException:
            self.disconnect()
            raise

    def _handshake(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.boot_timeout_s
        while self._hello is None:
            if time.monotonic() > deadline:
                raise RobotError(f"rc_car: no answer to HELLO on {cfg.port} within "
                                 f"{cfg.boot_timeout_s} s: is robolearn's firmware flashed "
                                 "(`make -C hardware/rc_car/firmware flash`) and the baud rate "
                                 f"{cfg.baud}?")
            self._write(P.hello())
            self._wait(lambda: self._hello is not None, 0.15)
        if self._hello.version != P.PROTOCOL_VERSION:
            raise RobotError(f"rc_car: the firmware speaks protocol {self._hello.version} "
                             f"(firmware {self._hello.firmware}), this driver "
                             f"{P.PROTOCOL_VERSION}: flash the firmware of this robolearn")
        self._arm()

    def _arm(self, keep_steer: bool = False) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.boot_timeout_s
        while True:
            t = self._status()
            if t.ready:
                break
            if time.monotonic() > deadline:
                raise RobotError("rc_car: the firmware never became ready to arm")
            time.sleep(0.05)
        end = time.monotonic() + cfg.telemetry_timeout_s
        while True:  # a lost or damaged reply: ask again (ARM is idempotent)
            self._seq += 1
            self._write(P.arm(self._seq, cfg.failsafe_ms))
            if self._wait(lambda: self._telemetry is not None and self._telemetry.armed
                          and self._telemetry.last_seq == self._seq & 0xFFFF, 0.05):
                break
            if time.monotonic() > end:
                raise RobotError(f"rc_car: the firmware refused ARM (flags "
                                 f"{self._telemetry.flags if self._telemetry else '?'})")
        self._armed = True
        self._steer, self._throttle = (self._steer if keep_steer else 0.0), 0.0

    def _status(self) -> P.Telemetry:
        """Fresh telemetry (asks for it); raises RobotError if none comes."""
        before = self.stats["telemetry"]
        end = time.monotonic() + self.config.telemetry_timeout_s
        while True:  # a lost or damaged reply: ask again
            self._write(P.status())
            if self._wait(lambda: self.stats["telemetry"] > before, 0.05):
                break
            if time.monotonic() > end:
                raise RobotError(self._link_error or (
                    f"rc_car: no telemetry from the firmware on {self.config.port} for "
                    f"{self.config.telemetry_timeout_s} s (link lost?)"))
        assert self._telemetry is not None
        return self._telemetry

    def _wait(self, cond: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not cond():
            if self._link_error or time.monotonic() > end:
                return bool(cond())
            time.sleep(0.001)
        return True

    def _write(self, frame: bytes) -> None:
        if self._link_error:
            raise RobotError(self._link_error)
        try:
            self._serial.write(frame)
        except Exception as exc:  # noqa: BLE001  (SerialException, OSError: the link is gone)
            self._link_error = f"rc_car: serial link lost on {self.config.port}: {exc}"
            raise RobotError(self._link_error) from None

    def _read_loop(self) -> None:
        ser = self._serial
        while self._connected or self._hello is None:
            try:
                data = ser.read(max(ser.in_waiting, 1))
            except Exception as exc:  # noqa: BLE001
                if self._serial is None:
                    return
                self._link_error = f"rc_car: serial link lost on {self.config.port}: {exc}"
                return
            if not data:
                if self._serial is None:
                    return
                continue
            for frame in self._frames.feed(data):
                try:
                    msg = P.parse(P.decode(frame))
                except (P.FrameError, IndexError) as exc:
                    self.stats["bad_frames"] += 1
                    self.last_bad_frame = f"{exc}" if str(exc) else "empty frame"
                    continue
                if isinstance(msg, P.HelloReply):
                    self._hello = msg
                    continue
                with self._lock:
                    self._odo.update(msg, self._steer, -1.0 if self._throttle < 0 else 1.0)
                    self._telemetry, self._telemetry_at = msg, time.monotonic()
                self.stats["telemetry"] += 1
            self.stats["oversize_frames"] = self._frames.oversize

    def disconnect(self) -> None:
        super().disconnect()  # also ends the telemetry reader's loop
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                if self._armed:
                    self._seq += 1
                    ser.write(P.disarm(self._seq))
                    ser.flush()
            except Exception:  # noqa: BLE001  (the link may already be gone: firmware failsafe)
                pass
            self._armed = False
            if self._reader is not None:
                self._reader.join(timeout=1)
            ser.close()
        if self._poses is not None:
            self._poses.close()
            self._poses = None

    # ------------------------------------------------------------------ localisation
    def _pose_now(self) -> tuple[float, float, float]:
        if self._poses is not None:
            return self._poses.read()
        with self._lock:
            return self._odo.x, self._odo.y, self._odo.yaw

    # ------------------------------------------------------------------ control
    def _check_link(self) -> P.Telemetry:
        self._require_connected()
        if self._link_error:
            raise RobotError(self._link_error)
        with self._lock:
            t, at = self._telemetry, self._telemetry_at
        if t is None or time.monotonic() - at > self.config.telemetry_timeout_s:
            t = self._status()
        if t.failsafe and self._armed and not self._standing:
            self._armed = False
            gap = max(self._gap_ms, 1000 * (time.monotonic() - self._sent_at))
            why = ("this host stalled" if gap > self.config.failsafe_ms else
                   "the link lost or damaged the commands")
            raise RobotError(f"rc_car: the firmware's failsafe stopped the car: no valid command "
                             f"reached it for {self.config.failsafe_ms} ms (the longest gap "
                             f"between two commands was {gap:.0f} ms: {why}); reset() re-arms")
        return t  # standing: a failsafe while nothing moved is cleared by _arm_standing

    def _arm_standing(self) -> None:
        """ARM right before the episode's first command: while the car stood, the host's
        one-off work may have outlasted the failsafe, whose report may still be on its way (a
        DRIVE then is refused). ARM is idempotent; a failsafe it clears is counted. The rate
        limit goes on from the steering the reset reported (ARM centres it until the DRIVE)."""
        self._arm(keep_steer=True)
        assert self._telemetry is not None
        if self._telemetry.failsafes > self._failsafes_at_reset:
            self.stats["standing_rearms"] += 1

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Re-arm if needed and start an episode where the car stands. With dead reckoning the
        pose restarts at checkpoint ``options["checkpoint"]`` (default 0) on the centreline,
        heading along the track: put the car there."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._require_connected()
        t = self._status()
        if not t.armed or t.failsafe:
            self._arm()
        else:
            self.stop()
        if self._poses is None:
            k = int((options or {}).get("checkpoint", 0)) % len(self.track.checkpoints)
            i = int(self.track.checkpoint_index[k])
            x0, y0 = (float(v) for v in self.track.centreline[i])
            with self._lock:
                self._odo.place(x0, y0, float(self.track.heading[i]))
        self._window.clear()
        self._failsafes_at_reset = (self._telemetry or t).failsafes
        self._standing = True  # until act() sends the episode's first command
        x, y, _ = self._pose_now()
        self._idx = self.track.project(np.array((x, y)))
        return self.observe()

    def act(self, action: np.ndarray) -> np.ndarray:
        self._check_link()
        if self._standing:
            self._arm_standing()  # before the rate limit, which goes on from its steering
        cfg = self.config
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,):
            raise ValueError(f"rc_car: action must have shape (2,), got {a.shape}")
        steer, throttle = float(a[0]), float(a[1])
        delta = cfg.max_action_delta or 2.0
        if not (math.isfinite(steer) and math.isfinite(throttle)):
            self.stats["nonfinite_actions"] += 1  # counted, and the car stops
            steer, throttle = self._steer, 0.0
        else:
            steer = min(max(steer, -1.0, self._steer - delta), 1.0, self._steer + delta)
            throttle = min(max(throttle, -cfg.max_throttle, self._throttle - delta),
                           cfg.max_throttle, self._throttle + delta)
        self._send(steer, throttle)
        self._standing = False
        return np.array((steer, throttle))

    def _send(self, steer: float, throttle: float) -> None:
        cfg = self.config
        steer_us = int(round(cfg.steer_center_us + steer * cfg.steer_span_us))
        span = cfg.esc_forward_us if throttle >= 0 else cfg.esc_reverse_us
        esc_us = int(round(cfg.esc_neutral_us + throttle * span))
        with self._lock:
            self._steer, self._throttle = steer, throttle
        self._seq += 1
        self._write(P.drive(self._seq, steer_us, esc_us))
        now = time.monotonic()
        self._gap_ms = 0.0 if self._standing else max(self._gap_ms, 1000 * (now - self._sent_at))
        self._sent_at = now
        self.stats["commands"] += 1

    def stop(self) -> None:
        """Neutral throttle now, steering held (the car stays armed)."""
        if self._serial is not None and self._armed and not self._link_error:
            try:
                self._send(self._steer, 0.0)
            except RobotError:
                pass  # the link is gone: the firmware's failsafe stops the car

    def hold_action(self) -> np.ndarray:
        return np.array((self._steer, 0.0))

    def observe(self) -> dict[str, np.ndarray]:
        self._check_link()
        cfg = self.config
        x, y, yaw = self._pose_now()
        s, c = math.sin(yaw), math.cos(yaw)
        v, yaw_rate, steer, throttle = self._motion()
        self._idx = self.track.project(np.array((x, y)), self._idx)
        self._window = (self._window + [(x, y)])[-cfg.stuck_steps:]
        nxt = self.track.next_checkpoint(float(self.track.s[self._idx]))
        k = cfg.n_checkpoints_obs
        cps = self.track.checkpoints_ext[nxt:nxt + k].tolist()
        out = [x, y, s, c, v, 0.0, yaw_rate, steer, throttle, *car_frame(cps, x, y, s, c)]
        return {"observation.state": np.asarray(out, dtype=np.float32)}

    def state(self) -> dict[str, Any]:
        """Estimates, not ground truth: the pose from the localisation source, the speed from
        the encoder. ``collision`` is always False (the car has no contact sensor); ``time`` is
        the firmware's clock (s)."""
        x, y, yaw = self._pose_now()
        v, yaw_rate, _, _ = self._motion()
        t = self._telemetry
        i = self.track.project(np.array((x, y)), self._idx)
        cx, cy = self.track.centreline[i]
        nx, ny = self.track.normal[i]
        return {"pos": np.array((x, y, 0.0)), "yaw": yaw,
                "vel": (v * math.cos(yaw), v * math.sin(yaw)), "speed": abs(v),
                "v_body": (v, 0.0), "yaw_rate": yaw_rate, "progress": float(self.track.s[i]),
                "lateral": (x - cx) * nx + (y - cy) * ny, "collision": False, "flipped": False,
                "stuck": self._stuck(), "time": (t.time_us / 1e6) if t else 0.0,
                "checkpoints": self.track.checkpoints,
                "checkpoint_radius": self.track.checkpoint_radius,
                "track_length": self.track.length, "firmware": self.firmware_counters()}

    def _motion(self) -> tuple[float, float, float, float]:
        """(forward speed, yaw rate from the bicycle model, steering, throttle): the encoder's
        speed signed by the commanded throttle, with the commands last sent."""
        with self._lock:
            steer, throttle = self._steer, self._throttle
            v = self._odo.speed * (-1.0 if throttle < 0 else 1.0)
        cfg = self.config
        return v, v * math.tan(steer * cfg.max_steer) / cfg.wheelbase, steer, throttle

    def firmware_counters(self) -> dict[str, int]:
        """The firmware's own counters from the latest telemetry (frames it dropped, commands
        it refused, failsafes, bytes lost) plus this driver's."""
        t = self._telemetry
        fw = {} if t is None else {"fw_bad_frames": t.bad_frames, "fw_invalid_cmds":
                                   t.invalid_cmds, "fw_failsafes": t.failsafes,
                                   "fw_rx_overflows": t.rx_overflows}
        return {**fw, **self.stats}

    def _stuck(self) -> bool:
        w, cfg = self._window, self.config
        if len(w) < cfg.stuck_steps:
            return False
        x0, y0 = w[0]
        return all((x - x0) ** 2 + (y - y0) ** 2 <= cfg.stuck_radius ** 2 for x, y in w)

    def needs_recovery(self) -> bool:
        return self._stuck()

    def recover(self) -> dict[str, np.ndarray]:
        """Reverse for ``recovery_time`` with a random steering (FastRLAP), at the control rate."""
        steer = float(self._rng.uniform(-1.0, 1.0))
        for _ in range(max(int(round(self.config.recovery_time * self.fps)), 1)):
            self.act(np.array((steer, self.config.recovery_throttle)))
            time.sleep(1.0 / self.fps)
        self.stop()
        self._window.clear()
        return self.observe()

    recovery = recover
