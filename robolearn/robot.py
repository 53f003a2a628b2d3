"""The robot interface that simulated robots and hardware drivers both implement.

A policy only ever sees a :class:`Robot`: swap the driver (``robot: sim_car`` -> ``robot:
rc_car``) and the same policy drives the real thing. Lifecycle::

    with make_robot("sim_car", cfg) as robot:      # connect() ... disconnect()
        obs = robot.reset(seed=0)                  # {"observation.state": (D,), ...}
        sent = robot.act(action)                   # the action actually sent, after limits
        obs = robot.observe()

Features use the episode store's format (``data.schema.Feature``), so what a robot observes is
recorded without translation. ``act`` blocks for at most one control period in simulation
(it advances the physics by ``1 / fps``); hardware drivers send and return at once, and the
control loop keeps the rate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from data.schema import Feature
from robolearn_core.registry import resolve


class RobotError(Exception):
    """A robot cannot do what was asked (not connected, link lost, limits misconfigured)."""


class Robot(ABC):
    """Base class of every robot, simulated or real."""

    name: str = "robot"  # registry name, e.g. "sim_car"
    # the typed config dataclass whose fields are the constructor's keyword arguments (the
    # ``robot.*`` keys of collect and train configs); every registered robot has one
    config_class: type | None = None
    fps: float = 20.0  # control rate the robot expects, Hz
    # a simulated robot moves only when stepped (nothing happens while the loop waits); a real
    # one keeps executing its last command, which is what the control loop's watchdog is for
    simulated: bool = False

    def __init__(self) -> None:
        self._connected = False

    # ------------------------------------------------------------------ features
    @property
    @abstractmethod
    def observation_features(self) -> dict[str, Feature]:
        """What :meth:`observe` returns: ``{"observation.state": Feature("float32", (9,))}``."""

    @property
    @abstractmethod
    def action_feature(self) -> Feature:
        """The action vector: ``Feature("float32", (A,), names=...)``."""

    @property
    @abstractmethod
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest action the robot accepts, each ``(A,)``."""

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"{self.name}: not connected (use `with robot:` or connect())")

    # ------------------------------------------------------------------ control
    @abstractmethod
    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> dict[str, np.ndarray]:
        """Bring the robot to a start state (simulation: randomised by ``seed``)."""

    @abstractmethod
    def observe(self) -> dict[str, np.ndarray]:
        """The current observation, one array per observation feature."""

    @abstractmethod
    def act(self, action: np.ndarray) -> np.ndarray:
        """Send one action; returns the action actually sent after the robot's own limits."""

    def stop(self) -> None:
        """Bring the robot to a safe standstill now (zero throttle, hold position)."""

    def hold_action(self) -> np.ndarray:
        """The action that keeps the robot where it is: what the control loop sends while a
        teleop user is hands-off (a car: no throttle; an arm: its current joint positions)."""
        low, high = self.action_bounds
        return np.clip(np.zeros_like(low, dtype=np.float64), low, high)

    def state(self) -> dict[str, Any]:
        """Task-relevant quantities (poses, contacts...): ground truth in simulation, estimates
        on hardware. Tasks read this, never the simulator directly."""
        return {}

    def render(self, camera: str | None = None) -> np.ndarray | None:
        """An RGB frame for videos, or None where the robot cannot render."""
        return None

    def needs_recovery(self) -> bool:
        """The robot cannot go on practising as it is (stuck against a wall): autonomous
        practice then calls :meth:`recover` instead of waiting for a human."""
        return False

    def recover(self) -> dict[str, np.ndarray]:
        """Get out of the situation :meth:`needs_recovery` reported; returns the observation."""
        raise NotImplementedError(f"{type(self).__name__} has no recovery manoeuvre")

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        low, high = self.action_bounds
        return np.clip(np.asarray(action, dtype=np.float64), low, high)


# --------------------------------------------------------------------------- the registry
# name -> "module:Class" (the class names its config: ``config_class``). Adding a robot touches
# its own folder plus one line here.
ROBOTS: dict[str, str] = {
    "sim_car": "sim.car.robot:SimCar",
    "sim_arm": "sim.arm.robot:SimArm",
    "robosuite": "sim.robosuite_robot:RobosuiteRobot",
    "so101": "hardware.so101.robot:SO101",
    "so100": "hardware.so101.robot:SO100",
    "koch": "hardware.koch.robot:Koch",
    "rc_car": "hardware.rc_car.robot:RCCar",
}


def make_robot(name: str, **kwargs: Any) -> Robot:
    return resolve(ROBOTS, name, "robot")(**kwargs)


def robot_config_class(name: str) -> type:
    """The config dataclass of robot ``name`` (an omegaconf structured schema)."""
    cls = resolve(ROBOTS, name, "robot")
    if cls.config_class is None:
        raise TypeError(f"robot {name!r} ({cls.__name__}) names no config_class")
    config: type = cls.config_class
    return config
