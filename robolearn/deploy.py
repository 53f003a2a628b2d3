"""``robolearn deploy CHECKPOINT robot=NAME robot.KEY=VALUE``: a policy on a robot.

Runs the checkpoint through the same control loop as ``collect`` and ``eval``: at the robot's
rate, through the safety filter, under the watchdog, with a teleop device able to take over
(its steps recorded as interventions), recording every step into an episode store whose
metadata names the checkpoint and the robot, with a live status line.

- **Robot.** ``robot`` defaults to the robot of the env the checkpoint's data came from, with
  that data's robot settings (cameras); any registered robot can be named, and its typed config
  (``robot.port=...``) is checked when the config loads. On the checkpoint env's own robot the
  env's task scores the episodes (reward, success); on any other robot (a real arm) the task is
  ``unscored``: no reward, success unknown.
- **Fit.** Before anything connects or moves, the policy's observation keys and shapes must be
  among what the robot observes and its action shape the robot's; otherwise one line names
  every missing or mismatched key with both sides (exit 2, no store written).
- **Inference.** ``threads`` sets torch's CPU threads (measured on a busy 2-core machine: the
  default made an MLP re-plan 20x slower). ``async_inference``: chunked policies plan their
  next chunk in a background thread while the current one executes
  (:mod:`policies.async_inference`); ``auto`` does so when a re-plan, timed once at start,
  takes more than a quarter of the control period.
- **Ending.** Ctrl-C, a policy exception, a lost robot link or any error: the loop stops the
  robot and commits the steps recorded (an interrupted episode); the command prints one line
  and exits 130 (Ctrl-C) or 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source, StoreError
from data.store import remove_store
from policies.async_inference import AsyncChunks
from robolearn.deploy_status import Driver, Inline, Status, say
from robolearn.env import ENVS, RobotEnv, robot_kwargs
from robolearn.evaluate import _run_metadata, resolve_checkpoint
from robolearn.loop import ActionError, ControlLoop, LoopConfig, create_store, step_features
from robolearn.robot import ROBOTS, Robot, RobotError, make_robot, robot_config_class
from robolearn.safety import SafetyConfig
from robolearn.task import Task, make_task
from robolearn_core.config import MISSING, ConfigError, InvalidValue, probe

log = logging.getLogger("robolearn.deploy")

# max change per step of an arm's joint targets when safety.max_delta is null: rad per step,
# about an STS3215 servo's no-load speed (4.7 rad/s) at 30 Hz; the scripted demos move the
# joints by at most 0.06 rad per step (the gripper closes over 6 steps instead of 1)
ARM_MAX_DELTA = 0.15
ASYNC_WHEN = 0.25  # async_inference=auto: plan off the control path above this share of a period


@dataclass
class RobotChoice:
    """Which robot the ``robot.*`` settings are for (mixed into the robot's own config)."""

    type: str = field(default="", kw_only=True)  # registered robot name; robot=NAME sets it


@dataclass
class DeployConfig:
    checkpoint: str = MISSING  # a saved policy directory, or a training run directory
    # the robot and its settings: robot=NAME (default: the robot of the checkpoint's env, with
    # the data's settings), robot.KEY=VALUE its config fields (robot.port=/dev/ttyACM0)
    robot: Any = None
    episodes: int = 1  # episodes to run; 0: until Ctrl-C
    max_steps: int | None = None  # steps per episode; None: the env's limit (else unlimited)
    # episode store to record into: a new one, or one robolearn recorded with the same schema
    # and robot; None: a new store outputs/deploy/<date-time>
    output: str | None = None
    teleop: str = "none"  # device that can take over: none | keyboard | gamepad | spacemouse
    teleop_config: dict[str, Any] = field(default_factory=dict)  # the device's config fields
    # autonomy deadman (F1TENTH's): the policy drives only while this teleop button is held
    # (gamepad: lb); released, the robot gets its hold action (a car: no throttle). None: off
    deadman: str | None = None
    fps: float | None = None  # control rate, Hz; None: the robot's own
    # between the policy and the robot (safety.max_delta null: 0.15 rad per step on an arm
    # (ARM_MAX_DELTA), the robot's own limit on a car)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    threads: int = 1  # torch CPU threads for inference (0: torch's default: slow on a busy CPU)
    async_inference: str = "auto"  # plan chunks off the control path: auto | on | off
    # where off-path planning runs: thread, or process (a copy of the policy in a child
    # process: no GIL shared with the control loop; a diffusion policy's many small torch calls
    # otherwise delay it, README "Real arms: Measured")
    planner: str = "thread"
    device: str = "auto"  # torch device for the policy; auto: cuda when available, else cpu
    seed: int = 0  # first episode's seed (a simulated robot's start state)

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise InvalidValue("episodes", f"must be >= 0 (0: until Ctrl-C), got {self.episodes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidValue("max_steps", f"must be >= 1 or null, got {self.max_steps}")
        if self.fps is not None and self.fps <= 0:
            raise InvalidValue("fps", f"must be > 0, got {self.fps}")
        if self.threads < 0:
            raise InvalidValue("threads", f"must be >= 0 (0: torch's default), got "
                                          f"{self.threads}")
        # YAML reads a bare on/off as a boolean: omegaconf hands it over as "True"/"False"
        self.async_inference = {"true": "on", "false": "off"}.get(
            self.async_inference.lower(), self.async_inference)
        if self.async_inference not in ("auto", "on", "off"):
            raise InvalidValue("async_inference", f"must be auto, on or off, got "
                                                  f"{self.async_inference!r}")
        if self.planner not in ("thread", "process"):
            raise InvalidValue("planner", f"must be thread or process, got {self.planner!r}")
        if self.teleop not in ("none", "keyboard", "gamepad", "spacemouse"):
            raise InvalidValue("teleop", f"must be none, keyboard, gamepad or spacemouse, got "
                                         f"{self.teleop!r}")
        if self.deadman and self.teleop == "none":
            raise InvalidValue("deadman", "needs a teleop device to hold it (teleop=gamepad)")


class Deadman:
    """The policy's action while ``button`` is held on the teleop device, the robot's hold
    action otherwise; on each new press the policy plans afresh (``restart``)."""

    def __init__(self, select: Any, device: Any, button: str, hold: Any, restart: Any) -> None:
        if not hasattr(device, "held"):
            raise ValueError(f"deadman={button}: the teleop device reports no buttons")
        self.select, self.device, self.button = select, device, button
        self.hold, self.restart = hold, restart
        self.released_steps = 0  # steps the policy was held back
        self._was_held = False

    def reset(self, seed: int | None = None) -> None:
        """A new episode: the policy's own reset (the loop calls this), released."""
        owner = getattr(self.select, "__self__", self.select)
        if hasattr(owner, "reset"):
            owner.reset(seed=seed)
        self._was_held = False

    def __call__(self, obs: dict[str, Any]) -> Any:
        held = self.button in self.device.held()
        if not held:
            self.released_steps += 1
            self._was_held = False
            return self.hold()
        if not self._was_held:
            self.restart()
            self._was_held = True
        return self.select(obs)


# --------------------------------------------------------------------------- what runs where
@dataclass(frozen=True)
class TrainedOn:
    """What the checkpoint was trained on: its env (if known) and that env's robot settings."""

    env_id: str | None
    robot: str | None
    robot_kwargs: dict[str, Any]
    max_steps: int | None = None  # the episode length the data was recorded with


def checkpoint_data(checkpoint: str) -> tuple[Path, TrainedOn]:
    """The policy directory of ``checkpoint`` and what its data came from (``dataset.json``)."""
    policy_dir, run_dir = resolve_checkpoint(Path(checkpoint))
    meta = _run_metadata(run_dir)
    env_id = meta.get("env_id") if meta.get("env_id") in ENVS else None
    if env_id is None:
        robot = meta.get("robot_type") if meta.get("robot_type") in ROBOTS else None
        return policy_dir, TrainedOn(None, robot, {})
    kwargs = {**ENVS[env_id].get("robot_kwargs", {}),
              **meta.get("env_overrides", {}).get("robot_kwargs", {})}
    limit = meta.get("env_overrides", {}).get("max_steps", ENVS[env_id].get("max_steps"))
    return policy_dir, TrainedOn(env_id, ENVS[env_id]["robot"], kwargs, limit)


def _chosen_robot(name: str | None, data: TrainedOn | None, checkpoint: str) -> str:
    if name is None:
        if data is None or data.robot is None:
            raise ConfigError(f"robot: the data of {checkpoint} names no registered robot; "
                              f"pass robot=NAME (known: {', '.join(ROBOTS)})")
        name = data.robot
    if name not in ROBOTS:
        raise ConfigError(f"robot: unknown robot {name!r}; known: {', '.join(ROBOTS)}")
    return name


def robot_schema(name: str, data: TrainedOn | None) -> tuple[type, Any]:
    """The config class of robot ``name`` with its ``type`` field, and a factory of its
    defaults (the checkpoint data's robot settings when it is the data's robot)."""
    cls = robot_config_class(name)
    made = dataclasses.make_dataclass(
        f"Deploy{cls.__name__}", [("type", str, field(default=name, kw_only=True))],
        bases=(cls, RobotChoice))
    kwargs = data.robot_kwargs if data is not None and data.robot == name else {}
    return made, functools.partial(made, **kwargs)


def schema_for(path: str | None, overrides: list[str]) -> type[DeployConfig]:
    """DeployConfig with ``robot`` typed as the chosen robot's config (read from the file and
    the overrides first: ``robot.type``, else the checkpoint's robot), so every ``robot.*`` key
    is checked at load time."""
    values = probe(path, overrides)
    name = values.get("robot")  # robot=NAME before the command line's rewrite to robot.type
    if not isinstance(name, str):
        name = OmegaConf.select(values, "robot.type", default=None, throw_on_missing=False)
    checkpoint = values.get("checkpoint")
    data = checkpoint_data(str(checkpoint))[1] if isinstance(checkpoint, str) else None
    if name is None and data is None:
        return DeployConfig  # no checkpoint yet (--help): the load names what is missing
    name = _chosen_robot(None if name is None else str(name), data, str(checkpoint))
    made, factory = robot_schema(name, data)
    return dataclasses.make_dataclass(  # type: ignore[return-value]
        f"DeployConfig_{name}", [("robot", made, field(default_factory=factory))],
        bases=(DeployConfig,), namespace={"selected_by": {"robot": ("robot", name)}})


def _robot_config(cfg: DeployConfig, data: TrainedOn) -> tuple[str, Any]:
    """(robot name, its config class instance) from ``cfg.robot`` (typed by
    :func:`schema_for`, or None: the checkpoint's robot with the data's settings)."""
    if cfg.robot is None:
        name = _chosen_robot(None, data, cfg.checkpoint)
        return name, robot_schema(name, data)[1]()
    if not isinstance(cfg.robot, RobotChoice):
        raise ConfigError(f"robot: expected robot=NAME and robot.KEY=VALUE settings, got "
                          f"{cfg.robot!r}")
    name = _chosen_robot(cfg.robot.type, data, cfg.checkpoint)
    cls = robot_config_class(name)
    return name, cls(**{f.name: getattr(cfg.robot, f.name) for f in dataclasses.fields(cls)})


def check_fits(policy: Any, robot: Robot, task: Task) -> None:
    """Raise a one-line :class:`ConfigError` naming every observation the policy needs that
    the robot (and task) do not give as the policy saw it, and an action shape mismatch."""
    gives = {**robot.observation_features, **task.observation_features(robot)}
    problems = []
    for key in policy.obs_keys:
        want, have = policy.features[key], gives.get(key)
        if have is None:
            problems.append(f"{key} {_spec(want)} missing")
        elif (have.shape, have.dtype) != (want.shape, want.dtype) or (
                want.names and have.names and tuple(want.names) != tuple(have.names)):
            problems.append(f"{key}: policy {_spec(want)}, {robot.name} {_spec(have)}")
    want, have = policy.features["action"], robot.action_feature
    if want.shape != have.shape or (want.names and have.names
                                    and tuple(want.names) != tuple(have.names)):
        problems.append(f"action: policy {_spec(want)}, {robot.name} {_spec(have)}")
    if problems:
        raise ConfigError(f"robot: the policy does not fit {robot.name}: {'; '.join(problems)} "
                          f"({robot.name} observes "
                          f"{', '.join(f'{k} {_spec(f)}' for k, f in gives.items())})")


def _spec(feat: Any) -> str:
    names = f" {list(feat.names)}" if feat.names and len(feat.names) <= 8 else ""
    return f"{feat.dtype}{tuple(feat.shape)}{names}"


def make_deploy_env(name: str, config: Any, data: TrainedOn, max_steps: int | None
                    ) -> tuple[Robot, Task, int, str | None, dict[str, Any]]:
    """The robot (not connected), the task, the step limit, and the env id and overrides
    recorded in the store: the data env's task on its own robot, else ``unscored``."""
    plain = OmegaConf.to_container(OmegaConf.structured(config))
    assert isinstance(plain, dict)
    robot = make_robot(name, **{f.name: getattr(config, f.name)
                                for f in dataclasses.fields(config)})
    if data.env_id is not None and data.robot == name:
        spec = ENVS[data.env_id]
        task = make_task(spec["task"], **spec.get("task_kwargs", {}))
        limit = max_steps or int(data.max_steps or 500)
        overrides: dict[str, Any] = {"robot_kwargs": robot_kwargs(data.env_id, config),
                                     "max_steps": limit}
        return robot, task, limit, data.env_id, overrides
    return robot, make_task("unscored"), max_steps or 2**62, None, {"robot_kwargs": plain}


# --------------------------------------------------------------------------- inference
def warmup_ms(policy: Any) -> float:
    """One re-plan's time (ms), on an observation at the data's mean (images black), after a
    first one that pays for allocations; the policy is reset after."""
    obs = {}
    for key in policy.obs_keys:
        feat = policy.features[key]
        mean = policy.stats.get(key, {}).get("mean")
        obs[key] = (np.zeros(feat.shape, feat.dtype) if feat.image or mean is None
                    else np.broadcast_to(mean, feat.shape).astype(feat.dtype))
    policy.reset()
    window = policy.observe(obs)
    policy.plan(window)
    t0 = time.perf_counter()
    policy.plan(window)
    ms = 1000 * (time.perf_counter() - t0)
    policy.reset()
    return ms


def make_inference(policy: Any, mode: str, fps: float, *, threads: int,
                   hold: Any, stall_s: float, process: bool = False) -> Inline | AsyncChunks:
    """The policy as the control loop calls it: inline, or off the control path
    (``mode``: on, off, or auto: a chunked policy whose re-plan takes over ASYNC_WHEN of the
    period)."""
    period_ms = 1000 / fps
    chunked = policy.config.action_horizon > 1
    plan = warmup_ms(policy)
    off_path = mode == "on" or (mode == "auto" and chunked and plan > ASYNC_WHEN * period_ms)
    log.info("inference: a re-plan takes %.1f ms (period %.1f ms, threads %s): %s", plan,
             period_ms, threads or "torch default",
             "planned off the control path" if off_path else "inline")
    if off_path:
        return AsyncChunks(policy, 1 / fps, hold=hold, threads=threads, stall_s=stall_s,
                           process=process)
    return Inline(policy)


# --------------------------------------------------------------------------- the command
def run(cfg: DeployConfig) -> int:
    return deploy(cfg)


def deploy(cfg: DeployConfig, *, policy: Any = None, teleop: Any = None) -> int:
    """Run ``cfg``; ``policy`` (a loaded :class:`policies.base.Policy`) replaces the
    checkpoint's, and ``teleop`` (any object with ``get_action(obs) -> action | None``) the
    device named by ``cfg.teleop``. Returns the exit code."""
    import torch

    from policies.base import Policy

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    policy_dir, data = checkpoint_data(cfg.checkpoint)
    name, robot_cfg = _robot_config(cfg, data)
    if policy is None:
        policy = Policy.load(policy_dir, device=None if cfg.device == "auto" else cfg.device)
    robot, task, limit, env_id, overrides = make_deploy_env(name, robot_cfg, data,
                                                            cfg.max_steps)
    check_fits(policy, robot, task)  # nothing is connected yet
    device = teleop
    if device is None and cfg.teleop != "none":
        from hardware.teleop import make_teleop

        device = make_teleop(cfg.teleop, robot, **cfg.teleop_config)
    safety = cfg.safety
    if safety.max_delta is None and _is_arm(robot):
        safety = dataclasses.replace(safety, max_delta=ARM_MAX_DELTA)
    fps = cfg.fps or robot.fps
    with contextlib.ExitStack() as stack:
        # timed (and warmed up) before the robot connects: nothing waits with torque on
        inference = make_inference(policy, cfg.async_inference, fps, threads=cfg.threads,
                                   hold=robot.hold_action, stall_s=safety.watchdog_s,
                                   process=cfg.planner == "process")
        if isinstance(inference, AsyncChunks):
            stack.callback(inference.close)
        if hasattr(device, "__enter__"):
            stack.enter_context(device)  # opened before the store: a missing one leaves none
        if hasattr(device, "set_mode"):
            device.set_mode("drive")
        env = RobotEnv(robot, task, limit)  # connects the robot
        stack.callback(env.close)
        meta = {"checkpoint": str(policy_dir.resolve()), "robot": name,
                "inference": "async" if isinstance(inference, AsyncChunks) else "inline"}
        store = stack.enter_context(_store_of_this_run(
            cfg.output, env, env_id, overrides,
            {**meta, "rate_hz": fps, "safety": dataclasses.asdict(safety)}))
        rec = stack.enter_context(store.recorder(task=task.description or task.name,
                                                 background=True))
        loop = ControlLoop(env, LoopConfig(fps=fps, realtime=True, max_steps=limit,
                                           safety=safety), rec)
        driver = Driver(device, inference.restart) if device is not None else None
        select = inference.select_action
        if cfg.deadman:
            select = Deadman(select, device, cfg.deadman, robot.hold_action, inference.restart)
        status = Status(loop, inference, driver, cfg.episodes)
        say(f"deploying {policy_dir} on {name} at {fps:g} Hz ({meta['inference']} inference, "
            f"{cfg.threads or 'default'} torch threads, safety.max_delta={safety.max_delta}) "
            f"into {store.path}; Ctrl-C stops")
        code = _episodes(cfg, loop, select, inference, driver, status, meta, task)
        if isinstance(select, Deadman):
            say(f"deadman {cfg.deadman} released for {select.released_steps} steps (the robot "
                "held, no policy action sent)")
        return code
    return 1  # not reached (mypy: ExitStack may swallow exceptions)


def _episodes(cfg: DeployConfig, loop: ControlLoop, select: Any, inference: Any,
              driver: Driver | None, status: Status, meta: dict[str, Any], task: Task) -> int:
    episode = 0
    try:
        with status.live():
            while cfg.episodes == 0 or episode < cfg.episodes:
                status.start(episode)
                if driver is not None:
                    driver.reset()
                result = loop.run_episode(select, driver,
                                          seed=cfg.seed + episode, source=Source.POLICY,
                                          observer=status,
                                          stop_when=None if driver is None else driver.ended,
                                          **meta)
                status.done(result, task.judges_success)
                episode += 1
    except KeyboardInterrupt as exc:
        say(f"robolearn deploy: interrupted{_notes(exc)}")
        return 130
    except (ActionError, RobotError) as exc:
        say(f"robolearn deploy: {exc}{_notes(exc)}")
        return 1
    except Exception as exc:  # the loop has stopped the robot and kept the steps
        log.debug("deploy failed", exc_info=True)
        say(f"robolearn deploy: {type(exc).__name__}: {exc}{_notes(exc)}")
        return 1
    return 0


def _notes(exc: BaseException) -> str:
    return "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))


def _is_arm(robot: Robot) -> bool:
    names = robot.action_feature.names
    return names is not None and tuple(names) != ("steering", "throttle")


@contextlib.contextmanager
def _store_of_this_run(output: str | None, env: RobotEnv, env_id: str | None,
                       overrides: dict[str, Any], meta: dict[str, Any]
                       ) -> Iterator[EpisodeStore]:
    """The store to record into, closed at the end: robolearn's store at ``output`` with the
    same schema and robot is appended to, a new one created (never over foreign files); one
    this run created and recorded nothing into is removed again."""
    path = Path(output) if output else _new_output()
    fresh = not (path / "zarr.json").exists()
    if fresh:
        store = create_store(str(path), env, env_id, overrides, **meta)
    else:
        store = EpisodeStore.open(path, "a")
        want = dict(step_features(env))
        if store.features != want or store.robot_type != env.robot.name:
            store.close()
            raise StoreError(f"{path}: existing store holds {store.robot_type} episodes with "
                             f"features {sorted(store.features)}; this deployment records "
                             f"{env.robot.name} with {sorted(want)}: choose another output")
    try:
        with store:
            yield store
    finally:
        if fresh and len(store) == 0:
            remove_store(store.path)
            say(f"{path}: no step recorded; removed the empty store")
        else:
            say(f"{path}: {len(store)} episodes, {store.num_frames} steps")


def _new_output() -> Path:
    """outputs/deploy/<date-time>, a name no store has yet."""
    base = Path("outputs") / "deploy" / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
