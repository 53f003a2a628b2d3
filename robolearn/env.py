"""A gymnasium environment made of a :class:`Robot` and a :class:`Task`.

Registered environments (``gymnasium.make("robolearn/SimCar-v0")`` works without importing
robolearn: the ``gymnasium.envs`` entry point in pyproject.toml calls :func:`register_envs`).
Observations are a ``Dict`` space keyed by feature name (``observation.state``, ...); the action
space is the robot's action bounds. ``info`` carries ``reward_terms``, ``success`` and
``action_sent`` (what the robot really received after its limits).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from data.schema import Feature
from robolearn.robot import Robot, make_robot, robot_config_class
from robolearn.task import Task, make_task
from robolearn_core.config import ConfigError, InvalidValue, probe


def feature_space(feat: Feature) -> spaces.Box:
    if feat.image:
        return spaces.Box(0, 255, feat.shape, np.uint8)
    return spaces.Box(-np.inf, np.inf, feat.shape, np.dtype(feat.dtype))


class RobotEnv(gym.Env):  # type: ignore[type-arg]
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, robot: Robot, task: Task, max_steps: int = 500,
                 render_mode: str | None = None) -> None:
        self.robot, self.task, self.max_steps = robot, task, max_steps
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": robot.fps}
        if not robot.is_connected:
            robot.connect()
        self.features = {**robot.observation_features, **task.observation_features(robot)}
        self.observation_space: spaces.Dict = spaces.Dict(
            {k: feature_space(f) for k, f in self.features.items()})
        low, high = robot.action_bounds
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32),
                                       dtype=np.float32)
        self._steps = 0
        self._expert: Any = None
        self._last_obs: dict[str, np.ndarray] = {}

    def expert_action(self) -> np.ndarray:
        """The robot's scripted expert's action for the current observation (vectorised
        collection calls this inside each worker process)."""
        if self._expert is None:
            from robolearn.experts import make_expert

            self._expert = make_expert(self)
            self._expert.reset()
        return self._expert(self._last_obs)

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {**self.robot.observe(), **self.task.observe(self.robot)}
        self._last_obs = {k: np.asarray(obs[k], dtype=self.observation_space[k].dtype)
                          for k in self.features}
        return self._last_obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        opts = {**self.task.reset_options(self.robot, self.np_random), **(options or {})}
        robot_seed = int(self.np_random.integers(2**31))
        self.robot.reset(seed=robot_seed, options=opts)
        self.task.reset(self.robot)
        self._steps = 0
        if self._expert is not None:
            self._expert.reset()
        return self._obs(), {"success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool,
                                                dict[str, Any]]:
        sent = self.robot.act(np.asarray(action, dtype=np.float64))
        self._steps += 1
        terms = self.task.reward_terms(self.robot, sent)
        success = self.task.success(self.robot)
        failure = self.task.failure(self.robot)
        terminated = failure or (success and self.task.success_terminates())
        truncated = not terminated and self._steps >= self.max_steps
        info = {"reward_terms": terms, "success": success, "failure": failure,
                "action_sent": sent}
        return self._obs(), self.task.reward(terms), terminated, truncated, info

    def recover(self) -> dict[str, np.ndarray]:
        """Run the robot's recovery manoeuvre (stuck car: back off) mid-episode; returns the
        observation after it. The episode and its step count go on."""
        self.robot.recover()
        return self._obs()

    def render(self) -> np.ndarray | None:
        return self.robot.render()

    def close(self) -> None:
        if self.robot.is_connected:
            self.robot.disconnect()


def make_env(robot: str, task: str, max_steps: int = 500, render_mode: str | None = None,
             robot_kwargs: dict[str, Any] | None = None,
             task_kwargs: dict[str, Any] | None = None) -> RobotEnv:
    return RobotEnv(make_robot(robot, **(robot_kwargs or {})),
                    make_task(task, **(task_kwargs or {})), max_steps, render_mode)


# id -> make_env keyword arguments. One line per environment.
ENVS: dict[str, dict[str, Any]] = {
    "robolearn/SimCar-v0": {"robot": "sim_car", "task": "car_laps", "max_steps": 1200,
                            "robot_kwargs": {"track": "oval"}},
    "robolearn/SimCarChicane-v0": {"robot": "sim_car", "task": "car_laps", "max_steps": 1500,
                                   "robot_kwargs": {"track": "chicane"}},
    "robolearn/SimCarTechnical-v0": {"robot": "sim_car", "task": "car_laps", "max_steps": 2000,
                                     "robot_kwargs": {"track": "technical"}},
    "robolearn/SimArmReach-v0": {"robot": "sim_arm", "task": "arm_reach", "max_steps": 150},
    "robolearn/SimArmLift-v0": {"robot": "sim_arm", "task": "arm_lift", "max_steps": 250},
    "robolearn/SimArmBin-v0": {"robot": "sim_arm", "task": "arm_bin", "max_steps": 400},
    "robolearn/RobosuiteLift-v0": {"robot": "robosuite", "task": "robosuite", "max_steps": 200,
                                   "robot_kwargs": {"env_name": "Lift"}},
    "robolearn/RobosuitePickPlaceCan-v0": {"robot": "robosuite", "task": "robosuite",
                                           "max_steps": 500,
                                           "robot_kwargs": {"env_name": "PickPlaceCan"}},
    "robolearn/RobosuiteNutAssemblySquare-v0": {"robot": "robosuite", "task": "robosuite",
                                                "max_steps": 500,
                                                "robot_kwargs": {"env_name": "NutAssemblySquare"}},
    # real arms (or their emulators): nothing scores them (task unscored); 30 s at 30 Hz
    "robolearn/SO101-v0": {"robot": "so101", "task": "unscored", "max_steps": 900},
    "robolearn/SO100-v0": {"robot": "so100", "task": "unscored", "max_steps": 900},
    "robolearn/Koch-v0": {"robot": "koch", "task": "unscored", "max_steps": 900},
    # the real car: laps judged from its own estimates (pose from robot.localisation; a real car
    # senses no wall contact, so the collision term is 0 there)
    "robolearn/RCCar-v0": {"robot": "rc_car", "task": "car_laps", "max_steps": 1200,
                           "robot_kwargs": {"track": "oval"}},
}


def register_envs() -> None:
    """Register every robolearn environment with gymnasium (idempotent)."""
    for env_id, kwargs in ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="robolearn.env:make_env", kwargs=kwargs,
                         max_episode_steps=None)


# --------------------------------------------------------------------------- typed robot configs
def unknown_env(env_id: object) -> str:
    """The message for an env id that is not registered, listing those that are."""
    close = difflib.get_close_matches(str(env_id), list(ENVS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown environment {env_id!r}{hint}; known: {', '.join(ENVS)}"


def robot_defaults(env_id: str) -> Any:
    """The typed config of ``env_id``'s robot as the env registers it: the robot config class's
    defaults, updated by the env's ``robot_kwargs`` (the car's track)."""
    spec = ENVS[env_id]
    return robot_config_class(spec["robot"])(**spec.get("robot_kwargs", {}))


def robot_config(env_id: str, value: Any = None) -> Any:
    """``value`` as the typed config of ``env_id``'s robot: None gives its defaults, a dict
    updates them (a run config saved before robot configs were typed); an instance of another
    robot's config class is refused. Raises :class:`InvalidValue` naming ``robot``."""
    name = ENVS[env_id]["robot"]
    cls = robot_config_class(name)
    if value is None:
        return robot_defaults(env_id)
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value):
        raise InvalidValue("robot", f"{type(value).__name__} is not the config of {env_id}'s "
                                    f"robot {name} ({cls.__name__})")
    if not isinstance(value, dict):
        raise InvalidValue("robot", f"expected the settings of robot {name}, got {value!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean 'robot.{close[0]}'?)" if close else ""
            raise InvalidValue("robot", f"unknown key 'robot.{key}'{hint} of robot {name}; "
                                        f"known: {', '.join(known)}")
    try:
        return cls(**{**ENVS[env_id].get("robot_kwargs", {}), **value})
    except ValueError as exc:
        raise InvalidValue("robot", str(exc)) from None


def _plain(value: Any) -> Any:
    """A config value as JSON data (store metadata): tuples as lists, configs as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def robot_kwargs(env_id: str, config: Any) -> dict[str, Any]:
    """``make_env``'s ``robot_kwargs`` for ``config`` (a typed robot config of ``env_id``): the
    env's own ``robot_kwargs`` plus every field that differs from the env's defaults, as JSON
    data (recorded in stores as ``env_overrides`` and read back by ``robolearn eval``)."""
    defaults = robot_defaults(env_id)
    changed = {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)
               if _plain(getattr(config, f.name)) != _plain(getattr(defaults, f.name))}
    return {**ENVS[env_id].get("robot_kwargs", {}), **changed}


def with_robot[T](schema: type[T], path: str | Path | None, overrides: list[str]) -> type[T]:
    """``schema`` (a config with ``env`` and ``robot`` fields) with ``robot`` typed as the
    config of the chosen env's robot, defaulting to the env's settings, so every ``robot.*`` key
    is checked at load time. The env is read from the file and the overrides first."""
    default_env = {f.name: f.default for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    env_id = probe(path, overrides).get("env", default_env["env"])
    if not isinstance(env_id, str) or env_id not in ENVS:
        raise ConfigError(f"env: {unknown_env(env_id)}")
    name = ENVS[env_id]["robot"]
    cls = robot_config_class(name)
    factory = functools.partial(cls, **ENVS[env_id].get("robot_kwargs", {}))
    chosen = {**getattr(schema, "selected_by", {}), "robot": ("env", env_id)}
    return dataclasses.make_dataclass(  # type: ignore[return-value]
        f"{schema.__name__}_{name}", [("robot", cls, dataclasses.field(default_factory=factory))],
        bases=(schema,), namespace={"selected_by": chosen})
