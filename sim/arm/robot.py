"""``SimArm``: the SO-101-like arm of :mod:`sim.arm.model` behind the :class:`Robot` interface.

Action (6,) float32: absolute joint position targets, radians, in the order of
:data:`sim.arm.model.JOINTS` (the gripper's target is its jaw angle, 0 closed .. 1.75 open).
Observations::

    observation.state              float32 (12,)  joint positions (6) then joint velocities (6)
    observation.environment_state  float32 (13,)  cube position (3), cube quaternion wxyz (4),
                                                  bin position (3), cube minus tool-centre
                                                  point (3) (as robosuite's gripper_to_cube)
    observation.images.<camera>    uint8   (H, W, 3) for each camera in ``cameras``

One ``act`` holds the targets for one control period, ``n_substeps`` physics steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from data.schema import Feature
from robolearn.robot import Robot
from sim import require_rendering
from sim.arm.layout import LayoutConfig, sample_layout
from sim.arm.model import BIN_INNER_HALF, CUBE_HALF, HOME, JOINTS, TABLE_X, TABLE_Y, build_mjcf

CAMERAS = ("front", "wrist")


@dataclass
class SimArmConfig:
    fps: float = 30.0  # control rate, Hz (LeRobot runs the SO-101 at 30 fps)
    timestep: float = 0.002  # nominal physics step, s; adjusted so n_substeps * dt = 1 / fps
    cameras: list[str] = field(default_factory=list)  # observed cameras, from {"front", "wrist"}
    camera_height: int = 64  # observed image height, px
    camera_width: int = 64  # observed image width, px
    render_height: int = 240  # height of frames from render() (videos), px
    render_width: int = 320  # width of frames from render(), px
    home: tuple[float, ...] = HOME  # joint positions at reset, rad, in JOINTS order
    layout: LayoutConfig = field(default_factory=LayoutConfig)  # randomised object placement
    # the cube from this observed camera's frames, as a real arm senses it (sim.arm.cube_finder):
    # observation.environment_state is then the finder's (7,) instead of the true pose (13,)
    cube_camera: str | None = None
    cube_camera_pose: list[float] | None = None  # its pose, 10 numbers; None: the scene's

    def __post_init__(self) -> None:
        if self.fps <= 0 or not 0 < self.timestep <= 1.0 / self.fps:
            raise ValueError(f"SimArmConfig: need fps > 0 and 0 < timestep <= 1/fps, got "
                             f"fps={self.fps}, timestep={self.timestep}")
        self.cameras = list(self.cameras)
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"SimArmConfig.cameras: {self.cameras}; choose distinct names from "
                             f"{CAMERAS}")
        for name in ("camera_height", "camera_width", "render_height", "render_width"):
            if not 1 <= getattr(self, name) <= 480:
                raise ValueError(f"SimArmConfig.{name} must be in 1..480")
        self.home = tuple(float(v) for v in self.home)
        if len(self.home) != len(JOINTS):
            raise ValueError(f"SimArmConfig.home: expected {len(JOINTS)} values, got {self.home}")
        if isinstance(self.layout, dict):
            self.layout = LayoutConfig(**self.layout)
        check_cube_camera(self.cube_camera, self.cube_camera_pose, self.cameras)


def check_cube_camera(camera: str | None, pose: Any, cameras: Any) -> None:
    """``cube_camera`` must be an observed camera; ``cube_camera_pose`` 10 finite numbers."""
    if camera is None:
        if pose is not None:
            raise ValueError("cube_camera_pose is set but cube_camera is not")
        return
    if camera not in cameras:
        raise ValueError(f"cube_camera: {camera!r} is not an observed camera "
                         f"({list(cameras)}); add it to cameras")
    if pose is not None:
        from sim.arm.cube_finder import check_pose

        check_pose(pose, "cube_camera_pose")


def joint_state_feature() -> Feature:
    """``observation.state``: joint positions (rad) then velocities (rad/s), in JOINTS order;
    what a real arm's driver must give too (``hardware/arms``) for a policy to move over."""
    return Feature("float32", (2 * len(JOINTS),), names=(
        *[f"{j}.pos" for j in JOINTS], *[f"{j}.vel" for j in JOINTS]))


def camera_feature(height: int, width: int) -> Feature:
    """``observation.images.<camera>``: an RGB frame ``(H, W, 3)``."""
    return Feature("uint8", (height, width, 3), image=True)


class SimArm(Robot):
    simulated = True
    name = "sim_arm"
    config_class = SimArmConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = cfg = SimArmConfig(**kwargs)
        self.fps = cfg.fps
        self.n_substeps = max(1, round(1.0 / (cfg.fps * cfg.timestep)))
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(1.0 / (cfg.fps * self.n_substeps)))
        self.model.opt.timestep = 1.0 / (cfg.fps * self.n_substeps)  # exact, not 6 digits
        self.data = mujoco.MjData(self.model)
        m = self.model
        jids = [m.joint(j).id for j in JOINTS]
        self._qadr = np.array([m.jnt_qposadr[j] for j in jids])
        self._dadr = np.array([m.jnt_dofadr[j] for j in jids])
        self._low = m.jnt_range[jids, 0].copy()
        self._high = m.jnt_range[jids, 1].copy()
        if not np.all((self._low <= cfg.home) & (np.asarray(cfg.home) <= self._high)):
            raise ValueError(f"SimArmConfig.home {cfg.home} outside the joint limits")
        self._cube_q = m.jnt_qposadr[m.joint("cube").id]
        self._cube_body = m.body("cube").id
        self._bin_mocap = m.body_mocapid[m.body("bin").id]
        self._target_mocap = m.body_mocapid[m.body("target").id]
        self._tcp = m.site("tcp").id
        self._g_cube = int(m.geom("cube").id)
        self._g_fixed, self._g_moving = int(m.geom("fixed_jaw").id), int(m.geom("moving_jaw").id)
        self._gripper_geoms = {int(m.geom("palm").id), int(self._g_fixed), int(self._g_moving)}
        self._act = np.zeros(len(JOINTS))
        self._nan = np.zeros(len(JOINTS), dtype=bool)
        self._state: dict[str, Any] | None = None
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._finder: Any = None
        if cfg.cube_camera is not None:
            from sim.arm.cube_finder import CubeFinder

            self._finder = CubeFinder(cfg.cube_camera_pose)
        self._features = self._make_features()

    # ------------------------------------------------------------------ features
    def _make_features(self) -> dict[str, Feature]:
        cfg = self.cfg
        feats = {
            "observation.state": joint_state_feature(),
            # cube - tcp: where the cube is relative to the jaws, which a policy otherwise has
            # to work out through the forward kinematics of the joint angles (lift BC: the
            # gripper closed at a fixed step, 1.4 cm too high, without it)
            "observation.environment_state": Feature("float32", (13,), names=(
                "cube.x", "cube.y", "cube.z", "cube.qw", "cube.qx", "cube.qy", "cube.qz",
                "bin.x", "bin.y", "bin.z", "tcp_to_cube.x", "tcp_to_cube.y", "tcp_to_cube.z")),
        }
        if self._finder is not None:
            from sim.arm.cube_finder import feature

            feats["observation.environment_state"] = feature()
        for cam in cfg.cameras:
            feats[f"observation.images.{cam}"] = camera_feature(cfg.camera_height,
                                                                cfg.camera_width)
        return feats

    @property
    def observation_features(self) -> dict[str, Feature]:
        return self._features

    @property
    def action_feature(self) -> Feature:
        return Feature("float32", (len(JOINTS),), names=JOINTS)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._low.copy(), self._high.copy()

    # ------------------------------------------------------------------ control
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Home pose; cube, bin and reach target from ``options`` (keys ``cube_pos`` (3,) or
        (2,), ``cube_yaw`` rad, ``bin_pos`` (2,) or (3,), ``target`` (3,)) or drawn from the
        layout ranges with ``seed``."""
        opts = dict(options or {})
        unknown = set(opts) - {"cube_pos", "cube_yaw", "bin_pos", "target"}
        if unknown:
            raise KeyError(f"sim_arm.reset: unknown option(s) {sorted(unknown)}")
        layout = {**sample_layout(np.random.default_rng(seed), self.cfg.layout), **opts}
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._qadr] = self.cfg.home
        d.ctrl[:] = self.cfg.home
        cube = np.zeros(3)
        cube[:len(layout["cube_pos"])] = layout["cube_pos"][:3]
        cube[2] = max(cube[2], CUBE_HALF)
        half_yaw = 0.5 * float(layout["cube_yaw"])
        d.qpos[self._cube_q:self._cube_q + 3] = cube
        d.qpos[self._cube_q + 3:self._cube_q + 7] = (math.cos(half_yaw), 0, 0, math.sin(half_yaw))
        bin_pos = np.zeros(3)
        bin_pos[:2] = np.asarray(layout["bin_pos"], dtype=np.float64)[:2]
        d.mocap_pos[self._bin_mocap] = bin_pos
        d.mocap_pos[self._target_mocap] = np.asarray(layout["target"], dtype=np.float64)
        mujoco.mj_forward(m, d)
        self._state = None
        if self._finder is not None:
            self._finder.reset()  # nothing seen of this episode's cube yet
        return self.observe()

    def act(self, action: np.ndarray) -> np.ndarray:
        """Clip ``action`` (6,) to the joint limits, hold joints given NaN, run one control
        period; returns the targets sent (float32). Allocation-light: this is the hot path."""
        if np.shape(action) != (len(JOINTS),):
            raise ValueError(f"sim_arm.act: expected shape ({len(JOINTS)},), "
                             f"got {np.shape(action)}")
        a = self._act
        a[:] = action
        np.isnan(a, out=self._nan)
        if self._nan.any():  # hold the current position of joints given no target
            a[self._nan] = self.data.qpos[self._qadr][self._nan]
        np.minimum(a, self._high, out=a)  # np.clip's dispatch costs more than the physics
        np.maximum(a, self._low, out=a)
        self.data.ctrl[:] = a
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self._state = None
        return a.astype(np.float32)

    def stop(self) -> None:
        self.data.ctrl[:] = self.data.qpos[self._qadr]

    def hold_action(self) -> np.ndarray:
        """Position servos hold where they are when commanded their current positions."""
        return np.asarray(self.data.qpos[self._qadr], dtype=np.float64).copy()

    def observe(self) -> dict[str, np.ndarray]:
        d = self.data
        obs = {
            "observation.state": np.concatenate(
                [d.qpos[self._qadr], d.qvel[self._dadr]]).astype(np.float32),
            "observation.environment_state": np.concatenate(
                [d.qpos[self._cube_q:self._cube_q + 7], d.mocap_pos[self._bin_mocap],
                 d.qpos[self._cube_q:self._cube_q + 3] - d.site_xpos[self._tcp]]
            ).astype(np.float32),
        }
        for cam in self.cfg.cameras:
            obs[f"observation.images.{cam}"] = self._render(
                cam, self.cfg.camera_height, self.cfg.camera_width)
        if self._finder is not None:
            obs["observation.environment_state"] = self._finder.observe(
                obs[f"observation.images.{self.cfg.cube_camera}"], d.qpos[self._qadr])
        return obs

    # ------------------------------------------------------------------ task quantities
    def state(self) -> dict[str, Any]:
        """Ground truth: ``ee_pos`` (3,) tcp position, ``ee_rot`` (3, 3), ``joint_pos`` (6,),
        ``joint_vel`` (6,), ``gripper`` jaw angle rad, ``cube_pos`` (3,), ``cube_quat`` (4,) wxyz,
        ``bin_pos`` (3,), ``target`` (3,), ``grasped`` (both jaws touch the cube),
        ``cube_touching_gripper``, ``cube_height`` (cube bottom above the table, m),
        ``cube_in_bin``, ``cube_on_table``."""
        if self._state is not None:
            return self._state
        d = self.data
        fixed = moving = touching = False
        if d.ncon:  # python ints: far cheaper than numpy scalars for a handful of contacts
            cube = self._g_cube
            for g1, g2 in d.contact.geom[:d.ncon].tolist():
                other = g2 if g1 == cube else g1 if g2 == cube else -1
                if other >= 0:
                    fixed |= other == self._g_fixed
                    moving |= other == self._g_moving
                    touching |= other in self._gripper_geoms
        cube_pos = d.xpos[self._cube_body].copy()
        bin_pos = d.mocap_pos[self._bin_mocap].copy()
        joint_pos = d.qpos[self._qadr]
        cx, cy, cz = cube_pos.tolist()
        bx, by, bz = bin_pos.tolist()
        inside = (max(abs(cx - bx), abs(cy - by)) < BIN_INNER_HALF - 0.5 * CUBE_HALF
                  and cz < bz + 0.04)
        on_table = TABLE_X[0] < cx < TABLE_X[1] and TABLE_Y[0] < cy < TABLE_Y[1] and cz > -0.01
        self._state = {
            "ee_pos": d.site_xpos[self._tcp].copy(),
            "ee_rot": d.site_xmat[self._tcp].reshape(3, 3).copy(),
            "joint_pos": joint_pos,
            "joint_vel": d.qvel[self._dadr].copy(),
            "gripper": float(joint_pos[-1]),
            "cube_pos": cube_pos,
            "cube_quat": d.xquat[self._cube_body].copy(),
            "bin_pos": bin_pos,
            "target": d.mocap_pos[self._target_mocap].copy(),
            "grasped": bool(fixed and moving),
            "cube_touching_gripper": bool(touching),
            "cube_height": cz - CUBE_HALF,
            "cube_in_bin": inside,
            "cube_on_table": on_table,
        }
        return self._state

    # ------------------------------------------------------------------ cameras
    def _render(self, camera: str, height: int, width: int) -> np.ndarray:
        renderer = self._renderers.get((height, width))
        if renderer is None:
            require_rendering("sim_arm")
            renderer = self._renderers[(height, width)] = mujoco.Renderer(self.model, height, width)
        renderer.update_scene(self.data, camera)
        return renderer.render()

    def render(self, camera: str | None = None) -> np.ndarray | None:
        """An RGB frame (render_height, render_width, 3) from ``camera`` (default ``front``)."""
        cam = camera or "front"
        if cam not in CAMERAS:
            raise ValueError(f"sim_arm: unknown camera {cam!r}; cameras: {CAMERAS}")
        return self._render(cam, self.cfg.render_height, self.cfg.render_width)

    def disconnect(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        super().disconnect()
