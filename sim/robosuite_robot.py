"""robosuite's standard manipulation tasks (Lift, PickPlaceCan, NutAssemblySquare, ...) behind
robolearn's :class:`Robot` interface, as the optional ``robosuite`` extra.

robosuite is imported lazily (in :func:`import_robosuite`), so ``import sim.robosuite_robot``
works without it; building a robot without it fails naming the extra to install.

Observations (one control step = ``1 / control_freq`` s = ``n_substeps`` mj_steps)::

    observation.state              (30,) float32  eef pos, eef quat (xyzw), gripper qpos/qvel,
                                                  joint pos cos/sin, joint vel (``proprio_keys``)
    observation.environment_state  (K,)  float32  robosuite's ``object-state`` (K: 10 for Lift)
    observation.images.<camera>    (S, S, 3) uint8 one per camera in ``cameras``, upright

Action: the composite controller's vector, ``(7,)`` for the Panda's default BASIC controller:
OSC_POSE deltas ``(dx, dy, dz, dax, day, daz)`` in [-1, 1] (scaled by robosuite to 5 cm and
0.5 rad per step) plus the gripper in [-1 open, 1 closed].

Headless rendering: set ``MUJOCO_GL=egl`` (GPU) or ``MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa``
(CPU, needs ``libosmesa6``) before anything imports mujoco; robosuite picks EGL otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.schema import Feature
from robolearn.robot import Robot, RobotError
from robolearn.task import Task

ENV_NAMES = ("Lift", "PickPlaceCan", "NutAssemblySquare", "PickPlaceMilk", "PickPlaceBread",
             "PickPlaceCereal", "NutAssemblyRound", "Stack", "Door")
DEFAULT_PROPRIO = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos",
                   "robot0_gripper_qvel", "robot0_joint_pos_cos", "robot0_joint_pos_sin",
                   "robot0_joint_vel")
OSC_POSE_NAMES = ("dx", "dy", "dz", "dax", "day", "daz")
# robosuite's start-up chatter: missing optional macro file, optional robot models and IK deps.
_NOISE = ("No private macro file", "private macro file", "setup_macros.py", "robosuite_models",
          "mink-based whole-body IK", "Loading controller configuration")


class _DropNoise(logging.Filter):
    """Drop robosuite's known harmless start-up lines; errors and other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        msg = record.getMessage()
        return not any(n in msg for n in _NOISE)


def import_robosuite() -> Any:
    """Import robosuite quietly, or fail naming the ``robosuite`` extra."""
    logger = logging.getLogger("robosuite_logs")  # the name robosuite's DefaultLogger uses
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # an escape in robosuite's ASCII logo
            import robosuite
    except ImportError as e:
        raise ImportError("the 'robosuite' robot needs the optional robosuite extra: "
                          "pip install 'robolearn[robosuite]' (robosuite>=1.5.2,<1.6)") from e
    return robosuite


@dataclass
class RobosuiteConfig:
    """One robosuite environment with a single arm."""

    env_name: str = "Lift"  # robosuite task, e.g. "Lift", "PickPlaceCan", "NutAssemblySquare"
    robot: str = "Panda"  # robosuite robot model name
    controller: str | None = None  # composite controller; None: the robot's default (BASIC:
    # arm OSC_POSE deltas + GRIP gripper); or a part controller name such as "OSC_POSE"
    control_freq: float = 20.0  # control steps per second, Hz
    horizon: int = 500  # robosuite's episode length in steps (reported, never raises: the
    # RobotEnv's max_steps truncates episodes)
    cameras: list[str] = field(default_factory=list)  # e.g. ["agentview", "robot0_eye_in_hand"]
    camera_size: int = 64  # camera images are camera_size x camera_size pixels
    reward_shaping: bool = True  # robosuite's dense shaped reward instead of sparse 0/1
    proprio_keys: tuple[str, ...] = DEFAULT_PROPRIO  # robosuite obs keys in observation.state
    hard_reset: bool = False  # rebuild the MuJoCo model on every reset (slow, ~0.5 s)
    render_size: int = 256  # side of render() frames, pixels

    def __post_init__(self) -> None:
        if self.env_name not in ENV_NAMES:
            raise ValueError(f"env_name {self.env_name!r}: expected one of {ENV_NAMES}")
        if self.control_freq <= 0 or self.horizon <= 0:
            raise ValueError("control_freq and horizon must be positive")
        if self.camera_size <= 0 or self.render_size <= 0:
            raise ValueError("camera_size and render_size must be positive")
        self.cameras = list(self.cameras)
        self.proprio_keys = tuple(self.proprio_keys)
        if not self.proprio_keys:
            raise ValueError("proprio_keys must name at least one robosuite observation")


def _element_names(key: str, n: int) -> list[str]:
    short = key.removeprefix("robot0_")
    suffix = {3: "xyz", 4: ("qx", "qy", "qz", "qw")}.get(n) if key.endswith(("_pos", "_quat")) \
        else None
    return [f"{short}.{s}" for s in suffix] if suffix else [f"{short}.{i}" for i in range(n)]


class RobosuiteRobot(Robot):
    """A robosuite environment driven one control step per :meth:`act`."""

    simulated = True

    name = "robosuite"
    config_class = RobosuiteConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = RobosuiteConfig(**kwargs)
        suite = import_robosuite()
        cfg = self.cfg
        if cfg.controller is None or cfg.controller in suite.ALL_COMPOSITE_CONTROLLERS:
            ctrl = suite.load_composite_controller_config(controller=cfg.controller,
                                                          robot=cfg.robot)
        else:  # a part controller for the arm, e.g. "OSC_POSE", wrapped in a BASIC composite
            ctrl = suite.load_composite_controller_config(controller=None, robot=cfg.robot)
            arm = suite.load_part_controller_config(default_controller=cfg.controller)
            gripper = ctrl["body_parts"]["right"].get("gripper")
            ctrl["body_parts"]["right"] = {**arm, **({"gripper": gripper} if gripper else {})}
        self.controller_config = ctrl
        cams = cfg.cameras
        self.env = suite.make(
            cfg.env_name, robots=cfg.robot, controller_configs=ctrl, has_renderer=False,
            has_offscreen_renderer=bool(cams), use_camera_obs=bool(cams),
            camera_names=cams or "agentview", camera_heights=cfg.camera_size,
            camera_widths=cfg.camera_size, control_freq=cfg.control_freq, horizon=cfg.horizon,
            ignore_done=True, reward_shaping=cfg.reward_shaping, hard_reset=cfg.hard_reset)
        import robosuite.macros as macros
        self._flip = macros.IMAGE_CONVENTION == "opengl"  # OpenGL images are bottom-up
        self.fps = float(cfg.control_freq)
        self._obs: dict[str, Any] = self.env.reset()
        missing = [k for k in cfg.proprio_keys if k not in self._obs]
        if missing:
            raise ValueError(f"proprio_keys {missing} are not robosuite observations; known: "
                             f"{sorted(k for k in self._obs if k.startswith('robot0_'))}")
        self._reward, self._steps = 0.0, 0
        self._renderer: Any = None
        self._features = self._make_features()
        low, high = self.env.action_spec
        self._bounds = (np.asarray(low, np.float64), np.asarray(high, np.float64))

    # ------------------------------------------------------------------ features
    def _make_features(self) -> dict[str, Feature]:
        names = [n for k in self.cfg.proprio_keys
                 for n in _element_names(k, np.size(self._obs[k]))]
        feats = {"observation.state": Feature("float32", (len(names),), tuple(names))}
        obj_keys = [k for k, o in self.env._observables.items()
                    if o.modality == "object" and o.is_enabled() and o.is_active()]
        obj_names = [n for k in obj_keys for n in _element_names(k, np.size(self._obs[k]))]
        n_obj = int(np.size(self._obs["object-state"]))
        feats["observation.environment_state"] = Feature(
            "float32", (n_obj,), tuple(obj_names) if len(obj_names) == n_obj else None)
        for cam in self.cfg.cameras:
            size = self.cfg.camera_size
            feats[f"observation.images.{cam}"] = Feature("uint8", (size, size, 3), image=True)
        return feats

    @property
    def observation_features(self) -> dict[str, Feature]:
        return dict(self._features)

    @property
    def action_feature(self) -> Feature:
        dim = int(self.env.action_dim)
        names: list[str] = []
        for part, (start, end) in self.env.robots[0].composite_controller \
                ._action_split_indexes.items():
            n = end - start
            names += list(OSC_POSE_NAMES) if n == 6 and part == "right" else \
                ["gripper"] if n == 1 and part.endswith("gripper") else \
                [f"{part}.{i}" for i in range(n)]
        return Feature("float32", (dim,), tuple(names) if len(names) == dim else None)

    @property
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._bounds[0].copy(), self._bounds[1].copy()

    # ------------------------------------------------------------------ simulator access
    @property
    def model(self) -> Any:
        """The underlying ``mujoco.MjModel``."""
        return self.env.sim.model._model

    @property
    def data(self) -> Any:
        """The underlying ``mujoco.MjData``."""
        return self.env.sim.data._data

    @property
    def n_substeps(self) -> int:
        """mj_steps per control step (control_timestep / model_timestep)."""
        return int(round(self.env.control_timestep / self.env.model_timestep))

    # ------------------------------------------------------------------ control
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        if seed is not None:  # reseed in place: placement samplers hold this Generator
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._obs = self.env.reset()
        self._reward, self._steps = 0.0, 0
        return self.observe()

    def observe(self) -> dict[str, np.ndarray]:
        obs = self._obs
        out = {
            "observation.state": np.concatenate(
                [np.ravel(obs[k]) for k in self.cfg.proprio_keys]).astype(np.float32),
            "observation.environment_state": np.asarray(obs["object-state"], np.float32),
        }
        for cam in self.cfg.cameras:
            img = np.asarray(obs[f"{cam}_image"], dtype=np.uint8)
            out[f"observation.images.{cam}"] = np.ascontiguousarray(img[::-1] if self._flip
                                                                     else img)
        return out

    def act(self, action: np.ndarray) -> np.ndarray:
        self._require_connected()
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self._bounds[0].shape:
            raise RobotError(f"{self.name}: action shape {a.shape}, expected "
                             f"{self._bounds[0].shape}")
        sent = self.clip_action(np.where(np.isnan(a), 0.0, a))  # NaN -> 0: no OSC motion
        self._obs, reward, _, _ = self.env.step(sent)
        self._reward, self._steps = float(reward), self._steps + 1
        return sent

    def stop(self) -> None:
        """Nothing to stop: the simulation only moves in act()."""

    def state(self) -> dict[str, Any]:
        obs = self._obs
        objects = {k.removesuffix("_pos"): np.array(obs[k]) for k in obs
                   if k.endswith("_pos") and not k.startswith("robot0_") and "_to_" not in k}
        quats = {k.removesuffix("_quat"): np.array(obs[k]) for k in obs
                 if k.endswith("_quat") and not k.startswith("robot0_") and "_to_" not in k}
        return {
            "eef_pos": np.array(obs["robot0_eef_pos"]),
            "eef_quat": np.array(obs["robot0_eef_quat"]),  # xyzw
            "gripper_qpos": np.array(obs["robot0_gripper_qpos"]),
            "objects": objects,  # object name -> world position (m)
            "object_quats": quats,  # object name -> orientation, xyzw
            "reward": self._reward,  # robosuite's reward for the last step
            "success": bool(self.env._check_success()),
            "steps": self._steps,
            "horizon_reached": self._steps >= self.cfg.horizon,
        }

    def render(self, camera: str | None = None) -> np.ndarray | None:
        """An upright (render_size, render_size, 3) frame, or None where GL is unavailable."""
        try:
            import mujoco
            if self._renderer is None:
                size = self.cfg.render_size
                self._renderer = mujoco.Renderer(self.model, size, size)
            self._renderer.update_scene(self.data, camera=camera or "agentview")
            return np.asarray(self._renderer.render(), dtype=np.uint8)
        except Exception as e:  # no GL context (headless without egl/osmesa)
            warnings.warn(f"robosuite render unavailable: {e}", stacklevel=2)
            return None

    def disconnect(self) -> None:
        super().disconnect()
        if self._renderer is not None:
            with contextlib.suppress(Exception):
                self._renderer.close()
            self._renderer = None

    def close(self) -> None:
        """Free the simulator and its GL contexts."""
        self.disconnect()
        self.env.close()


class RobosuiteTask(Task):
    """robosuite's own reward and success check for whichever environment the robot runs."""

    name = "robosuite"
    description = "solve the robosuite task"

    def default_weights(self) -> dict[str, float]:
        return {"env_reward": 1.0}

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        return {"env_reward": float(robot.state()["reward"])}

    def success(self, robot: Robot) -> bool:
        return bool(robot.state()["success"])
