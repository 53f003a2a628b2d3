"""The RL runner's configuration (``robolearn train policy=sac|rlpd|iql|calql|wsrl``) and what
every RL learner sees of a robot: its features and normalisation (the single-process runner,
:mod:`robolearn.rl_train`, the practice learner and RLIF's novice share them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data import EpisodeStore
from data.schema import Feature
from robolearn.env import ENVS, RobotEnv, robot_config, unknown_env
from robolearn.safety import SafetyConfig
from robolearn_core.config import InvalidValue


@dataclass
class RLTrainConfig:
    env: str = "robolearn/SimCar-v0"  # registered environment to practise in
    dataset: str | None = None  # offline episode store (demos); needed by rlpd/iql/calql/wsrl
    dataset_episodes: int | None = None  # use only the first N episodes of the dataset
    obs_norm: str = "identity"  # low-dim observations: identity | dataset (the dataset's mean
    # and std, each std floored at obs_std_floor; bound them with policy_config.actor.obs_clip)
    obs_std_floor: float = 1e-2  # raw units; a feature constant in the demos stays finite
    output: str = "outputs/rl"  # run directory: checkpoints/, online.zarr, tb/, metrics.jsonl
    policy: str = "rlpd"  # RL learner: sac | rlpd | iql | calql | wsrl
    env_steps: int = 50_000  # online environment steps (warm-up included)
    max_episode_steps: int | None = None  # per training episode; None: the env's own limit
    robot: Any = None  # settings of the env's robot (camera=true...); None: the env's own
    eval_every: int = 5000  # env steps between evaluations of the deterministic policy
    eval_episodes: int = 5  # seeded episodes per evaluation
    log_every: int = 1000  # env steps (or offline gradient steps) between logged metrics
    save_every: int = 10_000  # env steps between checkpoints (taken at the next episode end)
    keep_last: int = 3  # newest checkpoints kept (each holds the replay); 0 keeps every one
    buffer_size: int = 1_000_000  # online replay capacity, transitions
    absorbing_success: bool = True  # success that ends an episode pays r / (1 - gamma) (see
    # policies.rl.replay.absorbing_reward); the stores keep the env's own rewards
    record: bool = True  # write online experience to <output>/online.zarr
    resume: bool = True  # continue from <output>/checkpoints/last if it exists
    stop_at: int | None = None  # stop with a checkpoint at the first episode end after this step
    seed: int = 0  # seeds the agent, random actions and episode resets
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    # the filter every practice and evaluation action goes through: bounds, a rate limit
    # (max_delta; FastRLAP uses 0.2 on a real car's [-1, 1] actions), what a NaN does ("hold"
    # the last safe action or "stop" the robot). The runner steps the robot synchronously (a
    # simulated robot waits between steps), so watchdog_s is the control loop's, not used here.
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise InvalidValue("env", unknown_env(self.env))
        self.robot = robot_config(self.env, self.robot)
        if self.obs_norm not in ("identity", "dataset"):
            raise InvalidValue("obs_norm", f"must be 'identity' or 'dataset', got "
                                           f"{self.obs_norm!r}")
        if self.obs_norm == "dataset" and not self.dataset:
            raise InvalidValue("obs_norm", "'dataset' needs dataset=STORE")
        if self.obs_std_floor <= 0:
            raise InvalidValue("obs_std_floor", f"must be > 0, got {self.obs_std_floor}")
        for name in ("env_steps", "eval_every", "eval_episodes", "log_every", "save_every",
                     "buffer_size"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        if self.keep_last < 0:
            raise InvalidValue("keep_last", f"must be >= 0 (0 keeps every checkpoint), got "
                                            f"{self.keep_last}")


def rl_features(env: RobotEnv) -> tuple[dict[str, Feature], dict[str, dict[str, np.ndarray]]]:
    """What the agent sees and acts on, and its normalization statistics: observations as they
    are (identity; LayerNorm critics cope with the scales), images to [-1, 1], actions mapped
    from the robot's bounds to [-1, 1] (the actor's tanh then covers exactly the legal range)."""
    low, high = env.robot.action_bounds
    return rl_features_of(env.features, env.robot.action_feature, low, high)


def rl_features_of(features: dict[str, Feature], action: Feature, low: np.ndarray,
                   high: np.ndarray
                   ) -> tuple[dict[str, Feature], dict[str, dict[str, np.ndarray]]]:
    """:func:`rl_features` from the parts (a learner that only knows its actors' spec)."""
    feats = {k: f for k, f in features.items() if k.startswith("observation.")}
    stats: dict[str, dict[str, np.ndarray]] = {}
    for k, f in feats.items():
        shape = (f.shape[-1],) if f.image else f.shape
        mid, spread = (0.5, 0.5) if f.image else (0.0, 1.0)
        stats[k] = {"mean": np.full(shape, mid, np.float32), "std": np.full(shape, spread,
                                                                             np.float32)}
    low, high = (np.asarray(b, np.float32) for b in (low, high))
    stats["action"] = {"min": low, "max": high, "mean": (low + high) / 2,
                       "std": (high - low) / 2}
    return {**feats, "action": action}, stats


def obs_stats(store: EpisodeStore, features: dict[str, Feature], std_floor: float,
              episodes: Iterable[int] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Mean and std (floored at ``std_floor``) of ``store``'s low-dim observations among
    ``features``: the ``obs_norm=dataset`` normalisation (this runner's and the learner's)."""
    from policies.normalize import compute_stats

    keys = [k for k, f in features.items() if k.startswith("observation.") and not f.image]
    stats = compute_stats(store, keys, episodes=episodes)
    return {k: {"mean": st["mean"].astype(np.float32),
                "std": np.maximum(st["std"], std_floor).astype(np.float32)}
            for k, st in stats.items()}
