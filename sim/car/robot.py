"""``SimCar``: a 1/10-scale Ackermann car on a race track in MuJoCo (FastRLAP's setting).

Actions ``(2,)`` in [-1, 1]: steering (left positive, scaled to ``max_steer`` with Ackermann
geometry per front wheel) and throttle (rear-wheel speed as a fraction of ``max_speed``,
negative = reverse; 0 brakes). Each step an action changes by at most ``max_action_delta``
(FastRLAP's rate limit); a NaN action sends the stop action (throttle 0 at once, steering held).
``observation.state`` ``(9 + 2K,)``: see :data:`STATE_NAMES`; ``observation.images.front``
``(H, W, 3)`` uint8 when ``camera``. :meth:`recover` runs FastRLAP's recovery manoeuvre.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from data.schema import Feature
from robolearn.robot import Robot
from sim import require_rendering
from sim.car.model import ACTUATORS, build_mjcf
from sim.car.tracks import Track, car_frame, load_course


def state_names(k: int) -> tuple[str, ...]:
    """Element names of ``observation.state`` with ``k`` next checkpoints."""
    cps = [f"cp{i}_{ax}" for i in range(k) for ax in ("dx", "dy")]
    return ("x", "y", "sin_yaw", "cos_yaw", "vx", "vy", "yaw_rate", "steering", "throttle",
            *cps)


STATE_NAMES = state_names(3)  # with the default 3 checkpoints


@dataclass
class SimCarConfig:
    track: str = "oval"  # track name (sim/car/tracks/<name>.json) or path to a track JSON file
    # checkpoints recorded by driving (``robolearn course``: FastRLAP's goals from a demo lap)
    # instead of the track's own; they are what the observation and the lap task use
    course: str | None = None
    fps: float = 20.0  # control rate, Hz; act() advances the physics by 1 / fps
    timestep: float = 0.005  # s, MuJoCo physics step; 1 / (fps * timestep) must be an integer
    max_speed: float = 5.0  # m/s, rear-wheel surface speed at throttle 1
    max_steer: float = 0.5  # rad, mean front-wheel angle at steering +-1
    max_action_delta: float = 0.2  # largest change of each action per step (FastRLAP); 0 = off
    camera: bool = False  # add the first-person camera observation.images.front
    camera_size: tuple[int, int] = (64, 64)  # (H, W) pixels of the first-person camera
    render_size: tuple[int, int] = (240, 320)  # (H, W) pixels of render() frames
    n_checkpoints_obs: int = 3  # next checkpoints given in observation.state, (dx, dy) each
    reset_lateral_noise: float = 0.1  # m, largest random sideways offset at reset
    reset_yaw_noise: float = 0.1  # rad, largest random heading offset at reset
    stuck_steps: int = 30  # stuck if the last this-many positions lie within stuck_radius
    stuck_radius: float = 0.3  # m, of the first of those positions (FastRLAP: 30, 0.3 m)
    flip_up_z: float = 0.3  # flipped when the chassis up-vector's z falls below this
    recovery_time: float = 1.0  # s of reversing in the recovery manoeuvre
    recovery_throttle: float = -0.3  # throttle while reversing in the recovery manoeuvre
    wheelbase: float = 0.32  # m, front to rear axle
    track_width: float = 0.26  # m, left to right wheel centres
    wheel_radius: float = 0.05  # m
    chassis_mass: float = 2.0  # kg (car total = chassis + 4 wheels)
    wheel_mass: float = 0.1  # kg each
    tyre_friction: float = 0.8  # sliding friction coefficient tyre-floor
    max_wheel_torque: float = 0.3  # N m per driven wheel (12 N in all; rear grip is ~9 N)
    drive_kv: float = 0.05  # N m s / rad, gain of the rear-wheel velocity actuators
    steer_kp: float = 3.0  # N m / rad, gain of the steering position actuators

    def __post_init__(self) -> None:
        for key in ("fps", "timestep", "max_speed", "max_steer", "stuck_radius",
                    "recovery_time", "wheelbase", "track_width", "wheel_radius", "chassis_mass",
                    "wheel_mass", "tyre_friction", "max_wheel_torque", "drive_kv", "steer_kp"):
            if not getattr(self, key) > 0:
                raise ValueError(f"SimCarConfig.{key} must be > 0, got {getattr(self, key)!r}")
        ratio = 1.0 / (self.fps * self.timestep)
        if abs(ratio - round(ratio)) > 1e-6:
            raise ValueError(f"SimCarConfig: 1 / (fps * timestep) = {ratio:.4f} must be an "
                             "integer number of physics steps per control step")
        if not self.max_steer < 1.2:
            raise ValueError(f"SimCarConfig.max_steer must be < 1.2 rad, got {self.max_steer}")
        if not 0 <= self.max_action_delta <= 2:
            raise ValueError("SimCarConfig.max_action_delta must be in [0, 2]")
        self.camera_size = tuple(int(v) for v in self.camera_size)  # type: ignore[assignment]
        self.render_size = tuple(int(v) for v in self.render_size)  # type: ignore[assignment]
        for key in ("camera_size", "render_size"):
            size = getattr(self, key)
            if len(size) != 2 or min(size) < 8:
                raise ValueError(f"SimCarConfig.{key} must be (H, W) >= 8, got {size}")
        if self.n_checkpoints_obs < 1 or self.stuck_steps < 2:
            raise ValueError("SimCarConfig: n_checkpoints_obs >= 1 and stuck_steps >= 2")
        if not -1 <= self.recovery_throttle < 0:
            raise ValueError("SimCarConfig.recovery_throttle must be in [-1, 0)")

    @property
    def n_substeps(self) -> int:
        return int(round(1.0 / (self.fps * self.timestep)))


def _headless_gl() -> None:
    """Without a display, render through ``MUJOCO_GL`` (set by ``sim/__init__.py``) even when
    ``mujoco`` was imported first and picked GLFW, which cannot render headless."""
    from mujoco import gl_context

    ctx, backend = getattr(gl_context, "GLContext", None), os.environ.get("MUJOCO_GL", "")
    if os.environ.get("DISPLAY") or ctx is None or not ctx.__module__.startswith("mujoco.glfw"):
        return
    if backend == "egl":
        from mujoco.egl import GLContext
    elif backend == "osmesa":
        from mujoco.osmesa import GLContext  # type: ignore[no-redef]
    else:
        return
    gl_context.GLContext = GLContext  # type: ignore[misc]


class SimCar(Robot):
    """The simulated car; ``model``/``data`` are the MuJoCo model and data."""

    simulated = True

    name = "sim_car"
    config_class = SimCarConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.config = cfg = SimCarConfig(**kwargs)
        self.fps = cfg.fps
        self.track = tr = Track.load(cfg.track)
        if cfg.course:
            self.track = tr = tr.with_checkpoints(*load_course(cfg.course))
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.track, cfg))
        self.data = mujoco.MjData(self.model)
        self.n_substeps = cfg.n_substeps
        m = self.model
        self._chassis = m.body("chassis").id
        self._steer_qpos = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("steer_fl", "steer_fr")]
        assert [m.actuator(i).name for i in range(m.nu)] == list(ACTUATORS)
        walls = [i for i in range(m.ngeom) if (m.geom(i).name or "").startswith("wall_")]
        assert walls == list(range(walls[0], walls[-1] + 1)), "wall geoms must be contiguous"
        self._wall_lo, self._wall_hi = walls[0], walls[-1] + 1
        self._wheel_speed = cfg.max_speed / cfg.wheel_radius
        self._rng = np.random.default_rng()
        self._steer, self._throttle = 0.0, 0.0  # the action last sent
        self._anchor = (0.0, 0.0)  # (x, y) where the car last moved out of stuck_radius
        self._still = 0  # steps since, all within stuck_radius of the anchor
        self._idx = 0  # closest centreline index (search hint)
        self._state: dict[str, Any] | None = None  # cache of state(), cleared by each step
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._low, self._high = -np.ones(2), np.ones(2)
        if cfg.n_checkpoints_obs > len(tr.checkpoints):
            raise ValueError(f"SimCarConfig.n_checkpoints_obs = {cfg.n_checkpoints_obs} exceeds "
                             f"the {len(tr.checkpoints)} checkpoints of track {tr.name!r}")
        # Per-step lookups as Python lists (indexing numpy per element costs more)
        self._track_rows = np.column_stack([tr.centreline, tr.normal, tr.s]).tolist()
        self._next_cp = [tr.next_checkpoint(float(v)) for v in tr.s]  # centreline idx -> cp
        self._cps_ext = tr.checkpoints_ext.tolist()
        self._obs_buf = np.empty(9 + 2 * cfg.n_checkpoints_obs, dtype=np.float32)
        self._features = {"observation.state": Feature(
            "float32", (len(state_names(cfg.n_checkpoints_obs)),),
            names=state_names(cfg.n_checkpoints_obs))}
        if cfg.camera:
            self._features["observation.images.front"] = Feature(
                "uint8", (*cfg.camera_size, 3), image=True)

    # ------------------------------------------------------------------ features
    @property
    def observation_features(self) -> dict[str, Feature]:
        return dict(self._features)

    @property
    def action_feature(self) -> Feature:
        return Feature("float32", (2,), names=("steering", "throttle"))

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._low.copy(), self._high.copy()

    def disconnect(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        super().disconnect()

    # ------------------------------------------------------------------ control
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Start on the centreline at checkpoint ``options["checkpoint"]`` (seeded random if
        absent), heading along the track; ``options["lateral"]`` (m, left positive) and
        ``options["yaw"]`` (rad, offset from the track heading) override the random noise."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        cfg, opts, rng = self.config, options or {}, self._rng
        draws = (int(rng.integers(len(self.track.checkpoints))),
                 rng.uniform(-1, 1) * cfg.reset_lateral_noise,
                 rng.uniform(-1, 1) * cfg.reset_yaw_noise)
        k = int(opts.get("checkpoint", draws[0])) % len(self.track.checkpoints)
        i = int(self.track.checkpoint_index[k])
        xy = self.track.centreline[i] + float(opts.get("lateral", draws[1])) * self.track.normal[i]
        self._place(xy, self.track.heading[i] + float(opts.get("yaw", draws[2])))
        return self.observe()

    def _place(self, xy: np.ndarray, yaw: float) -> None:
        """Put the car at rest, upright, at ``xy`` heading ``yaw``; clear per-episode state."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[0:3] = xy[0], xy[1], self.config.wheel_radius + 0.005
        d.qpos[3:7] = math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)
        mujoco.mj_forward(m, d)
        self._steer, self._throttle = 0.0, 0.0
        self._still = 0
        self._idx = self.track.project(np.asarray(xy))
        self._state = None

    def act(self, action: np.ndarray) -> np.ndarray:
        """Clip to [-1, 1], limit the change per step, drive for 1 / fps; return what was sent."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (2,):
            raise ValueError(f"sim_car: action must have shape (2,), got {a.shape}")
        steer, throttle = float(a[0]), float(a[1])
        delta = self.config.max_action_delta or 2.0
        if steer != steer or throttle != throttle:  # NaN: stop now, hold the steering
            steer, throttle = self._steer, 0.0
        else:
            steer = min(max(steer, -1.0, self._steer - delta), 1.0, self._steer + delta)
            throttle = min(max(throttle, -1.0, self._throttle - delta), 1.0,
                           self._throttle + delta)
        self._steer, self._throttle = steer, throttle
        self._apply(steer, throttle)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self._after_step()
        return np.array((steer, throttle))

    def _apply(self, steer: float, throttle: float) -> None:
        cfg, ctrl = self.config, self.data.ctrl
        delta = steer * cfg.max_steer
        if abs(delta) > 1e-6:  # Ackermann: the inner wheel turns more
            radius = cfg.wheelbase / math.tan(delta)
            ctrl[0] = math.atan(cfg.wheelbase / (radius - cfg.track_width / 2))
            ctrl[1] = math.atan(cfg.wheelbase / (radius + cfg.track_width / 2))
        else:
            ctrl[0] = ctrl[1] = 0.0
        ctrl[2] = ctrl[3] = throttle * self._wheel_speed

    def _after_step(self) -> None:
        x, y = self.data.qpos[0:2].tolist()
        ax, ay = self._anchor
        if self._still == 0 or (x - ax) ** 2 + (y - ay) ** 2 > self.config.stuck_radius ** 2:
            self._anchor, self._still = (x, y), 1  # moved out: a new stuck window starts here
        else:
            self._still += 1
        self._idx = self.track.project((x, y), self._idx)
        self._state = None

    def refresh(self) -> None:
        """Recompute everything derived from ``data`` after editing ``data.qpos`` by hand."""
        mujoco.mj_forward(self.model, self.data)
        self._idx = self.track.project(self.data.qpos[0:2].copy())
        self._state = None

    def stop(self) -> None:
        self._throttle = 0.0
        self._apply(self._steer, 0.0)

    def hold_action(self) -> np.ndarray:
        """What :meth:`stop` leaves applied: no throttle, the steering where it is."""
        return np.array((self._steer, 0.0))

    def snapshot(self) -> tuple[Any, ...]:
        """Everything :meth:`restore` needs to put the car back exactly here: MuJoCo's
        integration state (time, positions, velocities, controls, solver warm start) and the
        step bookkeeping (last action sent, stuck window, track position). For lookahead in
        simulation (the teacher's value rule plays actions forward, then restores)."""
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(self.model, spec))
        mujoco.mj_getState(self.model, self.data, buf, spec)
        return buf, self._steer, self._throttle, self._anchor, self._still, self._idx

    def restore(self, snap: tuple[Any, ...]) -> None:
        """Back to a :meth:`snapshot`: the next steps are those the car would have taken."""
        buf, self._steer, self._throttle, self._anchor, self._still, self._idx = snap
        mujoco.mj_setState(self.model, self.data, buf, mujoco.mjtState.mjSTATE_INTEGRATION)
        mujoco.mj_forward(self.model, self.data)  # contacts and poses that state() reads
        self._state = None

    def needs_recovery(self) -> bool:
        return bool(self.state()["stuck"])

    def recover(self) -> dict[str, np.ndarray]:
        """FastRLAP's recovery: if flipped, right the car on the centreline (closest point,
        heading along the track); else reverse for ``recovery_time`` with a random steering."""
        if self.state()["flipped"]:
            now = self.data.time  # the clock runs on (lap times stay meaningful)
            self._place(self.track.centreline[self._idx], float(self.track.heading[self._idx]))
            self.data.time = now + self.config.recovery_time
        else:
            steer = float(self._rng.uniform(-1.0, 1.0))
            for _ in range(max(int(round(self.config.recovery_time * self.fps)), 1)):
                self.act(np.array((steer, self.config.recovery_throttle)))
            self._still = 0  # practice resumes: a fresh stuck window
            self._state = None
        return self.observe()

    recovery = recover

    # ------------------------------------------------------------------ sensing
    def _pose(self) -> tuple[float, float, float, float]:
        """(x, y, sin yaw, cos yaw) of the chassis."""
        x, y, _, w, qx, qy, qz = self.data.qpos[0:7].tolist()
        s, c = 2 * (w * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz)
        n = math.hypot(s, c) or 1.0
        return x, y, s / n, c / n

    def observe(self) -> dict[str, np.ndarray]:
        cfg, d = self.config, self.data
        x, y, s, c = self._pose()
        vx, vy, _, _, _, wz = d.qvel[0:6].tolist()
        k = cfg.n_checkpoints_obs
        out = self._obs_buf
        qpos = d.qpos
        out[:9] = (x, y, s, c, c * vx + s * vy, -s * vx + c * vy, wz,
                   (qpos[self._steer_qpos[0]] + qpos[self._steer_qpos[1]]) / (2 * cfg.max_steer),
                   self._throttle)
        nxt = self._next_cp[self._idx]
        rel = self._cps_ext[nxt:nxt + k]
        out[9:] = car_frame(rel, x, y, s, c)
        out = out.copy()
        obs = {"observation.state": out}
        if cfg.camera:
            obs["observation.images.front"] = self._render("front", cfg.camera_size)
        return obs

    def state(self) -> dict[str, Any]:
        """Ground truth: ``pos (3,)``, ``yaw``, ``vel`` (vx, vy) world m/s, ``speed``,
        ``v_body`` (forward, left) m/s, ``yaw_rate``, ``progress`` (m along the centreline),
        ``lateral`` (m, left +), ``collision`` (a wall touches the car), ``flipped``, ``stuck``,
        ``time`` (s), the track's ``checkpoints (C, 2)``, ``checkpoint_radius``, ``track_length``.
        Cached until the next step."""
        if self._state is not None:
            return self._state
        d, cfg, track, i = self.data, self.config, self.track, self._idx
        x, y, s, c = self._pose()
        vx, vy, _, _, _, wz = d.qvel[0:6].tolist()
        collision = False
        if d.ncon:
            con, lo, hi = d.contact, self._wall_lo, self._wall_hi
            g1, g2 = con.geom1, con.geom2
            collision = bool(((g1 >= lo) & (g1 < hi)).any() or ((g2 >= lo) & (g2 < hi)).any())
        stuck = self._still >= cfg.stuck_steps
        cx, cy, nx, ny, progress = self._track_rows[i]
        self._state = {
            "pos": d.qpos[0:3].copy(), "yaw": math.atan2(s, c), "vel": (vx, vy),
            "speed": math.hypot(vx, vy), "v_body": (c * vx + s * vy, -s * vx + c * vy),
            "yaw_rate": wz, "progress": progress,
            "lateral": (x - cx) * nx + (y - cy) * ny,
            "collision": collision, "flipped": bool(d.xmat[self._chassis, 8] < cfg.flip_up_z),
            "stuck": bool(stuck), "time": float(d.time), "checkpoints": track.checkpoints,
            "checkpoint_radius": track.checkpoint_radius, "track_length": track.length,
        }
        return self._state

    def _render(self, camera: str, size: tuple[int, int]) -> np.ndarray:
        r = self._renderers.get(size)
        if r is None:
            require_rendering("sim_car")
            _headless_gl()
            vis = self.model.vis.global_
            full = vis.offwidth, vis.offheight
            vis.offwidth, vis.offheight = size[1], size[0]  # a buffer just this big: faster
            try:
                r = self._renderers[size] = mujoco.Renderer(self.model, size[0], size[1])
            finally:
                vis.offwidth, vis.offheight = full
        r.update_scene(self.data, camera=camera)
        return r.render()

    def render(self, camera: str | None = None) -> np.ndarray:
        """An RGB frame ``(H, W, 3)`` from ``camera``: "chase" (default), "front", "overview"."""
        return self._render(camera or "chase", self.config.render_size)
