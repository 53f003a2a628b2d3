"""``robolearn collect``: record demonstrations into an episode store.

``source=scripted`` drives the robot with its scripted expert (``num_envs`` > 1: in parallel
worker processes); ``source=teleop`` hands it to a teleop device (``teleop=keyboard|gamepad|
spacemouse``, or a leader arm: ``so101_leader``, ``koch_leader``...) at the robot's real rate,
one episode at a time in three steps, each with its own keys (the device's key table is printed
at the start and on ``?``/``h``; a leader arm's keys are the keyboard's):

1. ready: nothing moves and nothing is recorded until the start key (keyboard: Enter);
2. driving: every step is recorded, a status line shows the robot (car: speed, steering,
   throttle, laps; arm: joints) until the end key (keyboard: Enter) or the step limit;
3. review: keep it (the task's verdict), keep it as a success or a failure, discard it, or
   re-record the same start (keyboard: k s f d r); no key for ``review_timeout_s``: kept.

Ctrl-C never loses a committed episode: the steps of the episode in flight are kept as an
incomplete episode tagged ``interrupted``. The device is opened before the store: a device
that is missing fails with one line and leaves nothing behind, and a store this run created
but recorded no episode into is removed again.

An existing store with the same schema is appended to; otherwise a new one is created.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source, StoreError
from data.store import remove_store
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
from robolearn_core.config import MISSING, ConfigError, InvalidValue
from robolearn_core.progress import console

if TYPE_CHECKING:
    from rich.live import Live

    from hardware.teleop import Teleop, TeleopDevice

log = logging.getLogger("robolearn.collect")


@dataclass
class CollectConfig:
    output: str = MISSING  # episode store to create, or to append to (same schema)
    env: str = "robolearn/SimArmLift-v0"  # registered environment (robot + task)
    episodes: int = 10  # episodes to keep
    source: str = "scripted"  # who drives: scripted | teleop
    teleop: str = "keyboard"  # device when source=teleop (keyboard | gamepad | spacemouse |
    #   so101_leader | so100_leader | koch_leader (a leader arm; its keys: the keyboard's))
    teleop_config: dict[str, Any] = field(default_factory=dict)  # the device's config fields
    robot: Any = None  # settings of the env's robot (cameras...); None: the env's own
    num_envs: int = 1  # scripted only: environments in parallel worker processes
    review_timeout_s: float = 30.0  # teleop: how long to wait for keep/discard after an episode
    seed: int = 0  # first episode's seed (object placement)
    max_steps: int | None = None  # steps per episode; None: the environment's own limit
    # scripted only, > 0: DART demonstrations. The expert drives with this much Gaussian noise
    # (action units: rad for an arm's joints; a gripper stays clean) and each step records its
    # clean answer for the state reached, so the data shows the way back from small errors.
    # Camera-only lift, 1,000 demos: 81% plain, 97% with 0.03 (README, "Real arms: Measured")
    dart_noise: float = 0.0

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
        if self.dart_noise < 0 or (self.dart_noise > 0 and self.source != "scripted"):
            raise InvalidValue("dart_noise", f"must be >= 0, and 0 unless source=scripted; got "
                               f"{self.dart_noise}")
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
                                 dart_noise=cfg.dart_noise, **_overrides(cfg))
        console.print(f"{cfg.output}: {len(store)} episodes")
        store.close()
        return 0
    env = _env(cfg)
    try:
        if cfg.source == "scripted":
            with _store_of_this_run(cfg, env) as store, \
                    store.recorder(task=env.task.description or env.task.name) as rec:
                _scripted(cfg, env, rec)
        else:
            _teleop(cfg, env)
    finally:
        env.close()
    return 0


@contextlib.contextmanager
def _store_of_this_run(cfg: CollectConfig, env: RobotEnv) -> Iterator[EpisodeStore]:
    """The output store, closed at the end; one that this run created and recorded nothing into
    (an error before the first step, quit at the first prompt) is removed again."""
    fresh = not Path(cfg.output).exists()
    store = _open_store(cfg, env)
    try:
        with store:
            yield store
    except BaseException:
        if fresh and len(store) == 0:  # the error's own line says what happened
            remove_store(store.path)
        raise
    if fresh and len(store) == 0:
        remove_store(store.path)
        console.print(f"{cfg.output}: no episode recorded; removed the empty store")
    else:
        console.print(f"{cfg.output}: {len(store)} episodes, {store.num_frames} steps")


def _scripted(cfg: CollectConfig, env: RobotEnv, rec: Any) -> None:
    from robolearn.experts import DartExpert
    from robolearn.vector import run_scripted_episode
    from robolearn_core.progress import track

    loop = ControlLoop(env, LoopConfig(realtime=False))
    dart = DartExpert(env, cfg.dart_noise) if cfg.dart_noise > 0 else None
    for i in track(range(cfg.episodes), "collecting episodes"):
        run_scripted_episode(loop, rec, cfg.seed + i, dart)


def _teleop(cfg: CollectConfig, env: RobotEnv) -> None:
    from hardware.teleop import make_teleop

    teleop = make_teleop(cfg.teleop, env.robot, **cfg.teleop_config)
    if "start" not in teleop.device.event_map("ready").values():
        raise ConfigError(f"teleop={cfg.teleop}: no input starts an episode with these settings "
                          "(teleop_config.keys=none?); collect needs keys to start and keep "
                          "episodes")
    teleop.alone = True  # no policy: a leader arm drives every step, moving or not
    with teleop:  # opened before the store: a missing device leaves nothing behind
        with _store_of_this_run(cfg, env) as store, \
                store.recorder(task=env.task.description or env.task.name,
                               background=True) as rec:
            TeleopSession(cfg, env, teleop, rec).run()


def _signed(x: float) -> str:
    return f"{round(x, 2) + 0.0:+.2f}"  # no "-0.00"


# the word a prompt shows for an event ("[r]e-record")
WORDS = {"rerecord": "re-record", "takeover": "take over"}


def prompt_keys(device: TeleopDevice, mode: str) -> str:
    """The keys of ``mode``, as a prompt line: ``[k]eep  [s]uccess ... enter: start``."""
    from hardware.teleop.base import MODE_EVENTS

    table = device.event_map(mode)
    parts = []
    for event in MODE_EVENTS[mode]:
        keys = [key for key, e in table.items() if e == event]
        word = WORDS.get(event, event)
        first = next((k for k in keys if len(k) == 1 and word.startswith(k.lower())), None)
        if first is not None:
            parts.append(f"[{first}]{word[1:]}")
        elif keys:
            parts.append(f"{'/'.join(keys)}: {word}")
    return "  ".join(parts)


class TeleopSession:
    """One human, one device: ready -> driving -> review for each episode (module doc)."""

    def __init__(self, cfg: CollectConfig, env: RobotEnv, teleop: Teleop, rec: Any) -> None:
        from hardware.teleop import robot_kind

        self.cfg, self.env, self.teleop = cfg, env, teleop
        self.kind = robot_kind(env.robot)
        self.joints = tuple(env.robot.action_feature.names or ())
        state = env.features.get("observation.state")
        self.state_names = tuple(state.names or ()) if state is not None else ()
        self.loop = ControlLoop(env, LoopConfig(realtime=True), rec)
        self.kept = 0
        self.decision = "keep"  # of the last review
        self.live: Live | None = None
        self.obs: dict[str, np.ndarray] = {}
        self.steps, self.ended_by_key, self._shown = 0, False, 0.0

    def run(self) -> None:
        self.show_keys()
        seed = self.cfg.seed
        while self.kept < self.cfg.episodes:
            ready = (f"episode {self.kept + 1} of {self.cfg.episodes} (seed {seed}): "
                     f"{prompt_keys(self.teleop.device, 'ready')}")
            if self.wait("ready", ready) != "start":
                return  # quit
            self.drive(seed)
            self.kept += self.decision not in ("discard", "rerecord")
            seed += self.decision != "rerecord"  # re-record: the same start again

    def show_keys(self) -> None:
        from rich.table import Table

        from hardware.teleop.keys import key_table

        device = self.teleop.device
        table = Table("input", "driving", "before an episode", "after an episode",
                      title=f"teleop={device.name} keys ({self.kind})", title_justify="left")
        for row in key_table(device, self.kind, self.joints):
            table.add_row(*row)
        console.print(table, markup=False, highlight=False)

    def wait(self, mode: str, prompt: str, timeout: float | None = None) -> str | None:
        """Switch the device to ``mode`` and return its first event other than help (which
        shows the keys); None after ``timeout`` s."""
        self.teleop.set_mode(mode)
        console.print(prompt, markup=False, highlight=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            for event in self.teleop.device.read().events:
                if event != "help":
                    return event
                self.show_keys()
                console.print(prompt, markup=False, highlight=False)
            time.sleep(0.02)
        return None

    def drive(self, seed: int) -> None:
        from rich.live import Live

        self.teleop.set_mode("drive")
        self.teleop.reset()
        self.steps, self.ended_by_key, self.obs = 0, False, {}
        with Live(console=console, transient=True, refresh_per_second=4) as self.live:
            self.loop.run_episode(None, self, seed=seed, source=Source.TELEOP,
                                  stop_when=self.stop_when, review=self.review)
        self.live = None

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The control loop's teleop: the device's action, noting the observation for the
        status line."""
        self.obs = obs
        return self.teleop.get_action(obs)

    def stop_when(self) -> bool:
        self.steps += 1
        for event in self.teleop.poll_events():
            if event == "help":
                self.show_keys()
            self.ended_by_key |= event == "end"
        now = time.monotonic()
        if self.live is not None and now - self._shown >= 0.2:
            self._shown = now
            self.live.update(self.status(), refresh=True)
        return self.ended_by_key

    def status(self) -> Any:
        from rich.text import Text

        head = [f"REC episode {self.kept + 1}/{self.cfg.episodes}",
                f"{self.steps / self.env.robot.fps:5.1f} s",
                prompt_keys(self.teleop.device, "drive")]
        if self.teleop.takeover:
            head.append("TAKEOVER")
        return Text(f"{'  '.join(head)}\n{'  '.join(self.readout())}", no_wrap=True,
                    overflow="ellipsis")

    def readout(self) -> list[str]:
        """What the robot does now: car speed, steering, throttle; arm joints and gripper;
        the task's counters (laps, checkpoints...)."""
        state = self.obs.get("observation.state")
        out = []
        if state is not None and self.state_names:
            v = dict(zip(self.state_names, np.asarray(state, np.float64).tolist(), strict=False))
            if self.kind == "car":
                if "vx" in v and "vy" in v:
                    out.append(f"speed {math.hypot(v['vx'], v['vy']):.2f} m/s")
                out += [f"{k} {_signed(v[k])}" for k in ("steering", "throttle") if k in v]
            else:
                joints = [j for j in self.joints if f"{j}.pos" in v and j != "gripper"]
                out.append("joints " + " ".join(_signed(v[f"{j}.pos"]) for j in joints))
                if "gripper.pos" in v:
                    out.append(f"gripper {_signed(v['gripper.pos'])}")
        out += [f"{k.replace('_', ' ')} {x}" for k, x in self.env.task.info().items()
                if isinstance(x, int) and not isinstance(x, bool)]
        return out

    def review(self, result: EpisodeResult) -> tuple[bool, bool | None]:
        """After an episode: the human's decision (review keys), keep after the timeout."""
        if self.live is not None:
            self.live.stop()
        why = ("you ended it" if self.ended_by_key
               else "the task ended it" if result.terminated else "step limit")
        prompt = (f"episode over ({why}): {result.steps} steps, "
                  f"{result.steps / self.env.robot.fps:.1f} s, task success: "
                  f"{'yes' if result.success else 'no'}\n"
                  f"{prompt_keys(self.teleop.device, 'review')}")
        decision = self.wait("review", prompt, self.cfg.review_timeout_s)
        if decision is None:
            console.print(f"no decision in {self.cfg.review_timeout_s:g} s: kept")
            decision = "keep"
        self.decision = decision
        if decision in ("discard", "rerecord"):
            return False, None
        return True, {"success": True, "failure": False}.get(decision)
