"""``robolearn collect``: record demonstrations into an episode store.

``source=scripted`` drives the robot with its scripted expert (``num_envs`` > 1: in parallel
worker processes); ``source=teleop`` hands it to a teleop device (``teleop=keyboard|gamepad|
spacemouse``) at the robot's real rate. After each teleop episode the device's event keys decide:
keep (k), discard (d), re-record (r), keep as success (s) or failure (f), quit (q). The same
keys end an episode early. Ctrl-C never loses a committed episode: the steps of the episode in
flight are kept as an incomplete episode tagged ``interrupted``.

An existing store with the same schema is appended to; otherwise a new one is created.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source, StoreError
from robolearn.config import MISSING, InvalidValue
from robolearn.env import (
    ENVS,
    RobotEnv,
    make_env,
    robot_config,
    robot_kwargs,
    unknown_env,
    with_robot,
)
from robolearn.loop import ControlLoop, EpisodeResult, LoopConfig, create_store, step_features
from robolearn.progress import console

log = logging.getLogger("robolearn.collect")
REVIEW_EVENTS = ("keep", "discard", "rerecord", "success", "failure", "quit")


@dataclass
class CollectConfig:
    output: str = MISSING  # episode store to create, or to append to (same schema)
    env: str = "robolearn/SimArmLift-v0"  # registered environment (robot + task)
    episodes: int = 10  # episodes to keep
    source: str = "scripted"  # who drives: scripted | teleop
    teleop: str = "keyboard"  # device when source=teleop: keyboard | gamepad | spacemouse
    teleop_config: dict[str, Any] = field(default_factory=dict)  # the device's config fields
    robot: Any = None  # settings of the env's robot (cameras...); None: the env's own
    num_envs: int = 1  # scripted only: environments in parallel worker processes
    review_timeout_s: float = 30.0  # teleop: how long to wait for keep/discard after an episode
    seed: int = 0  # first episode's seed (object placement)
    max_steps: int | None = None  # steps per episode; None: the environment's own limit

    def __post_init__(self) -> None:
        if self.source not in ("scripted", "teleop"):
            raise InvalidValue("source", f"must be 'scripted' or 'teleop', got {self.source!r}")
        if self.episodes < 1:
            raise InvalidValue("episodes", f"must be >= 1, got {self.episodes}")
        if self.env not in ENVS:
            raise InvalidValue("env", unknown_env(self.env))
        self.robot = robot_config(self.env, self.robot)
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidValue("max_steps", f"must be >= 1 or null, got {self.max_steps}")
        if self.num_envs < 1 or (self.num_envs > 1 and self.source != "scripted"):
            raise InvalidValue("num_envs", "must be 1 for teleop (one human), >= 1 otherwise")


def schema_for(path: str | None, overrides: list[str]) -> type[CollectConfig]:
    """CollectConfig with ``robot`` typed as the config of the chosen env's robot."""
    return with_robot(CollectConfig, path, overrides)


def _env(cfg: CollectConfig) -> RobotEnv:
    return make_env(**{**ENVS[cfg.env], **_overrides(cfg)})


def _overrides(cfg: CollectConfig) -> dict[str, Any]:
    """What differs from the registered env: robot overrides and the episode length."""
    out: dict[str, Any] = {"robot_kwargs": robot_kwargs(cfg.env, cfg.robot)}
    if cfg.max_steps is not None:
        out["max_steps"] = cfg.max_steps
    return out


def _open_store(cfg: CollectConfig, env: RobotEnv) -> EpisodeStore:
    overrides = _overrides(cfg)
    if (Path(cfg.output) / "zarr.json").exists():
        store = EpisodeStore.open(cfg.output, "a")
        want = {k: v for k, v in step_features(env).items()}
        if store.features != want:
            store.close()
            raise StoreError(f"{cfg.output}: existing store has features {sorted(store.features)}"
                             f", {cfg.env} records {sorted(want)}; use another output")
        return store
    return create_store(cfg.output, env, cfg.env, overrides)


def run(cfg: CollectConfig) -> int:
    if cfg.source == "scripted" and cfg.num_envs > 1 and not Path(cfg.output).exists():
        from robolearn.vector import collect_scripted

        store = collect_scripted(cfg.env, cfg.output, cfg.episodes, cfg.num_envs, seed=cfg.seed,
                                 **_overrides(cfg))
        console.print(f"{cfg.output}: {len(store)} episodes")
        store.close()
        return 0
    env = _env(cfg)
    try:
        store = _open_store(cfg, env)
        with store, store.recorder(task=env.task.description or env.task.name) as rec:
            if cfg.source == "scripted":
                _scripted(cfg, env, rec)
            else:
                _teleop(cfg, env, rec)
            console.print(f"{cfg.output}: {len(store)} episodes, {store.num_frames} steps")
    finally:
        env.close()
    return 0


def _scripted(cfg: CollectConfig, env: RobotEnv, rec: Any) -> None:
    from robolearn.progress import track

    loop = ControlLoop(env, LoopConfig(realtime=False), rec)
    for i in track(range(cfg.episodes), "collecting episodes"):
        loop.run_episode(lambda obs: env.expert_action(), seed=cfg.seed + i,
                         source=Source.SCRIPTED)


def _teleop(cfg: CollectConfig, env: RobotEnv, rec: Any) -> None:
    from hardware.teleop import make_teleop

    teleop = make_teleop(cfg.teleop, env.robot, **cfg.teleop_config)
    loop = ControlLoop(env, LoopConfig(realtime=True), rec)
    pending: list[str] = []

    def stop_when() -> bool:
        pending.extend(teleop.poll_events())
        return any(e in REVIEW_EVENTS for e in pending)

    def review(result: EpisodeResult) -> tuple[bool, bool | None]:
        console.print(f"episode over: {result.steps} steps, task success={result.success}. "
                      "[k]eep, [d]iscard, [r]e-record, [s]uccess, [f]ailure, [q]uit")
        deadline = time.monotonic() + cfg.review_timeout_s
        while not any(e in REVIEW_EVENTS for e in pending) and time.monotonic() < deadline:
            pending.extend(teleop.device.read().events)
            time.sleep(0.02)
        decision = next((e for e in pending if e in REVIEW_EVENTS), "keep")
        pending.clear()
        review.decision = decision  # type: ignore[attr-defined]
        if decision in ("discard", "rerecord"):
            return False, None
        return True, {"success": True, "failure": False}.get(decision)

    kept, seed = 0, cfg.seed
    with teleop:
        while kept < cfg.episodes:
            teleop.reset()
            pending.clear()
            loop.run_episode(None, teleop, seed=seed, source=Source.TELEOP,
                             stop_when=stop_when, review=review)
            decision = getattr(review, "decision", "keep")
            kept += decision not in ("discard", "rerecord")
            seed += decision != "rerecord"  # re-record: the same start again
            if decision == "quit":
                break
