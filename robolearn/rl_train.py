"""``robolearn train policy=sac|rlpd|iql|calql|wsrl``: offline pretraining and online practice.

One runner serves every RL learner (the maths lives in each agent's ``update``):

1. **offline** (``offline_steps`` > 0: IQL, Cal-QL, WSRL): gradient steps on transitions of the
   ``dataset`` episode store;
2. **warm-up** (``warmup_steps``, WSRL): the pretrained policy drives, no updates;
3. **online**: the robot steps through the control loop (:class:`robolearn.loop.ControlLoop`,
   the one ``collect``, ``eval``, ``deploy`` and the practice actor use: safety filter,
   recording into ``<output>/online.zarr`` with source ``autonomous``, the robot stopped at each
   episode's end), here as fast as the simulation goes; the loop's sink puts each step into the
   online replay, then ``utd`` critic updates run on a
   batch that is ``offline_ratio`` offline data (RLPD's symmetric sampling) and the rest online.
   The first ``random_steps`` actions are uniform in the learner's action units (over the
   action bounds; over the largest offsets for relative entries).

Every ``eval_every`` steps the deterministic policy runs ``eval_episodes`` seeded episodes on a
separate environment (return, success, lap time where the task times laps). Logs go to
TensorBoard and ``metrics.jsonl``; checkpoints hold the actor as a regular policy (so
``robolearn eval <output>`` works) and the whole training state.

Exact resume: checkpoints are taken at episode ends (and after pretraining) and hold weights,
optimisers, the online replay, counters, the agent's and the runner's random states; episode
``k`` always resets with seed ``seed * 1_000_003 + k``. Resuming drops from the online store the
episodes recorded after the checkpoint (they are recorded again), so the store always matches
the replay. A run killed at any moment resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source, StoreError
from policies.rl.replay import (
    ReplayBuffer,
    discounted_returns,
    learner_reward,
    load_transitions,
    mixed_batch,
)
from robolearn.env import (
    ENVS,
    RobotEnv,
    make_env,
    robot_defaults,
    robot_kwargs,
)
from robolearn.loop import ControlLoop, LoopConfig, Transition, create_store
from robolearn.rl_setup import obs_stats, rl_features
from robolearn.robot import ROBOTS
from robolearn.rundir import (
    RUN_ENTRIES,
    check_output,
    check_resumable,
    flatten,
    load_training_state,
    restore,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    start_output,
    truncate_metrics,
)
from robolearn.safety import SafetyConfig
from robolearn_core.config import ConfigError, InvalidValue, to_yaml
from robolearn_core.registry import resolve

# what the runner writes in its output directory (a fresh start deletes these, nothing else)
RL_ENTRIES = (*RUN_ENTRIES, "online.zarr")

log = logging.getLogger("robolearn.rl")


class Runner:
    def __init__(self, cfg: Any) -> None:
        from policies.rl import agent_class

        self.cfg, self.acfg = cfg, cfg.policy_config
        if self.acfg.uses_offline_data and not cfg.dataset:
            raise ConfigError(f"dataset: policy {cfg.policy} learns from offline data; pass "
                              "dataset=STORE (an episode store of demonstrations)")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.output)
        self.env_kwargs = dict(ENVS[cfg.env])
        self.env_overrides: dict[str, Any] = {}
        kwargs = robot_kwargs(cfg.env, cfg.robot)
        if kwargs != self.env_kwargs.get("robot_kwargs", {}):
            self.env_overrides["robot_kwargs"] = kwargs
        if cfg.max_episode_steps:
            self.env_overrides["max_steps"] = cfg.max_episode_steps
        self.env_kwargs.update(self.env_overrides)
        if not resolve(ROBOTS, self.env_kwargs["robot"], "robot").simulated:
            # this runner steps the robot between gradient updates, with no fixed rate and no
            # watchdog: a simulated robot waits, a real one would keep its last command
            raise ConfigError(f"env: {cfg.env} drives a real robot ({self.env_kwargs['robot']});"
                              " practise on it with `robolearn practice` (or `robolearn "
                              "learner` + `robolearn actor`), whose control loop holds its rate "
                              "under a watchdog while the learner learns beside it")
        self.env = make_env(**self.env_kwargs)
        self.features, stats = rl_features(self.env)
        if cfg.obs_norm == "dataset":
            stats.update(self._dataset_stats())
        # the run's seed seeds the agent too (initialisation, sampling noise): runs with
        # different seeds differ in everything; policy_config.seed still varies it on its own
        agent_cfg = dataclasses.replace(self.acfg, seed=cfg.seed * 7919 + self.acfg.seed)
        try:
            self.agent = agent_class(cfg.policy)(agent_cfg, self.features, stats)
        except InvalidValue as e:  # checks against the env's features (relative_actions)
            raise ConfigError(f"policy_config.actor.{e.field}: {e.message}") from None
        self.device = self.agent.device
        self.obs_keys = self.agent.obs_keys
        # preallocated: no larger than the run can fill (1,000,000 64x64 camera transitions
        # would be 25 GB before the first step)
        self.online = ReplayBuffer(self.features, min(cfg.buffer_size, cfg.env_steps),
                                   self.device)
        self.offline = self._load_offline() if self.acfg.uses_offline_data else None
        # practice steps the robot through the control loop collect, eval, deploy and the
        # practice actor use (safety filter, recording, a stop at every episode's end); as
        # fast as the simulation goes (no fixed rate: the robot waits for the updates, which
        # is why this runner refuses real robots), so no watchdog either
        self.loop = ControlLoop(self.env, LoopConfig(realtime=False, safety=cfg.safety))
        self.safety = self.loop.safety
        self.eval_env: RobotEnv | None = None  # built at the first evaluation
        self.rng = np.random.default_rng(cfg.seed)  # uniform random actions
        self.env_step = self.episode = self.offline_step = self.updates = 0
        self.episodes_recorded = 0
        # the practice loop's state, shared by the loop's sink (_learn) and stop_when (_pause)
        self._ep_ret: float = 0.0  # the learner episode's return so far
        self._ep_first: int = 0  # its first row in the replay (for Monte-Carlo returns)
        self._ep_rewards: list[float] = []  # its learner rewards
        self._ended: str = ""  # how the env ended the episode: terminated | truncated
        self._why: str = ""  # why the loop paused it: budget_end | recovery
        self._success = False  # the last step's success
        self._last_save = 0  # env step of the last checkpoint
        self._info: dict[str, Any] = {}  # the last update's metrics
        self._t0, self._s0 = 0.0, 0  # practice's start: time, env step

    # ------------------------------------------------------------------ data
    @contextlib.contextmanager
    def _open_dataset(self) -> Iterator[EpisodeStore]:
        """The ``dataset`` store, read-only, once it is known to hold every feature the env
        observes and acts with, in the env's shapes (else a StoreError naming them)."""
        cfg, keys = self.cfg, list(self.features)
        with EpisodeStore.open(cfg.dataset, "r") as store:
            missing = [k for k in keys if k not in store.features]
            if missing:
                raise StoreError(f"dataset {cfg.dataset}: lacks {missing}, which {cfg.env} "
                                 f"observes (the store has {sorted(store.features)})")
            wrong = [f"{k} {store.features[k].shape} (env: {self.features[k].shape})"
                     for k in keys if store.features[k].shape != self.features[k].shape]
            if wrong:
                raise StoreError(f"dataset {cfg.dataset}: shapes differ from {cfg.env}'s: "
                                 f"{', '.join(wrong)} (recorded with another robot version?)")
            yield store

    def _dataset_stats(self) -> dict[str, dict[str, np.ndarray]]:
        """``obs_norm=dataset``: mean and (floored) std of the dataset's low-dim observations.
        Why: identity leaves centimetre-scale features (the arm's gripper-to-cube vector) next to
        radian-scale joints; the critics' first layer then has to learn the scales first."""
        with self._open_dataset() as store:  # the episodes the learner uses, no others
            return obs_stats(store, self.features, self.cfg.obs_std_floor,
                             range(self._n_episodes(store)))

    def _n_episodes(self, store: EpisodeStore) -> int:
        """How many of the dataset's episodes (its first) the run learns from."""
        n = self.cfg.dataset_episodes
        return len(store) if n is None else min(n, len(store))

    def _load_offline(self) -> ReplayBuffer:
        cfg = self.cfg
        with self._open_dataset() as store:
            n = self._n_episodes(store)
            data = load_transitions(store, self.obs_keys, self.acfg.gamma,
                                    self.env.task.success_terminates(), range(n),
                                    absorbing_success=cfg.absorbing_success)
        buf = ReplayBuffer(self.features, len(data["reward"]), self.device)
        buf.extend(data)
        log.info("offline data: %d transitions from %d episodes of %s", len(buf), n,
                 cfg.dataset)
        return buf

    def batch(self) -> dict[str, torch.Tensor]:
        """``utd`` minibatches, each ``offline_ratio`` offline and the rest online."""
        a = self.acfg
        return mixed_batch(self.online, self.offline if a.keep_offline else None, a.utd,
                           a.batch_size, a.offline_ratio, self.agent.generator)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        state = {"agent": self.agent.state_dict(), "optim": self.agent.optim_state(),
                 "online": self.online.state_dict(), "rng": rng_state(),
                 "runner_rng": self.rng.bit_generator.state,
                 "counters": {"env_step": self.env_step, "episode": self.episode,
                              "offline_step": self.offline_step, "updates": self.updates,
                              "episodes_recorded": self.episodes_recorded}}
        save_checkpoint(self.out / "checkpoints", self.env_step + self.offline_step,
                        self.agent.actor, state, keep_last=self.cfg.keep_last)

    def try_resume(self) -> bool:
        last = self.out / "checkpoints" / "last"
        if not (self.cfg.resume and (last.is_symlink() or last.exists())):
            return False
        self._check_resumable()
        # onto the CPU: random states must stay CPU byte tensors (Generator.set_state refuses
        # CUDA ones); the weights, optimisers and replay move to the device as they load
        state = load_training_state(last)

        def load() -> None:
            self.agent.load_state_dict(state["agent"])
            self.agent.load_optim_state(state["optim"])
            if state["online"]["size"] > self.online.capacity:  # resumed with a smaller budget
                self.online = ReplayBuffer(self.features, min(self.cfg.buffer_size,
                                                              state["online"]["size"]),
                                           self.device)
            self.online.load_state_dict(state["online"])
            restore_rng_state(state["rng"])
            self.rng.bit_generator.state = state["runner_rng"]
            for k, v in state["counters"].items():
                setattr(self, k, int(v))

        restore("training state", last / "training_state.pt", load)
        log.info("resumed %s at env step %d (offline step %d)", self.out, self.env_step,
                 self.offline_step)
        return True

    # on resume, budgets, evaluation, logging and the device may change; anything else would
    # mix two experiments in one run
    RESUMABLE_CHANGES = ("env_steps", "stop_at", "eval_every", "eval_episodes", "log_every",
                         "save_every", "keep_last", "threads", "resume", "output",
                         "policy_config.device", "policy_config.actor.device")

    def _check_resumable(self) -> None:
        # a run saved before the runner took a safety config ran with its defaults, and one
        # saved before robot configs were typed (robot: a dict of overrides) with its env's
        # robot defaults (other missing keys are not filled: a default that changed since would
        # pass unnoticed)
        from omegaconf import OmegaConf

        defaults = {f"safety.{f.name}": getattr(SafetyConfig(), f.name)
                    for f in dataclasses.fields(SafetyConfig)}
        robot = OmegaConf.to_container(OmegaConf.create(to_yaml(robot_defaults(self.cfg.env))))
        assert isinstance(robot, dict)
        defaults.update({f"robot.{k}": v for k, v in flatten(robot).items()})
        check_resumable(self.out, self.cfg, self.RESUMABLE_CHANGES,
                        "budgets, evaluation, logging, checkpointing and the device", defaults)

    def _logged_before_checkpoint(self, row: dict[str, Any]) -> bool:
        """Whether a ``metrics.jsonl`` row was logged before the checkpoint this run resumed
        from (the rest are logged again)."""
        if row.get("kind") == "offline":
            return int(row.get("offline_step", 0)) <= self.offline_step
        if row.get("kind") == "eval" and row.get("env_step") == 0:
            return self.env_step > 0  # the pretrained policy's, run after its checkpoint
        return int(row.get("env_step", 0)) <= self.env_step

    def open_store(self) -> EpisodeStore | None:
        """The online store, trimmed to the episodes the checkpoint knows about."""
        if not self.cfg.record:
            return None
        path = self.out / "online.zarr"
        if not (path / "zarr.json").exists():
            return create_store(str(path), self.env, self.cfg.env, self.env_overrides)
        store = EpisodeStore.open(path, "a")
        extra = list(range(self.episodes_recorded, len(store)))
        if extra:
            log.info("%s: dropping %d episode(s) recorded after the checkpoint", path,
                     len(extra))
            store.delete(extra)
        return store

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        cfg, a = self.cfg, self.acfg
        check_output(self.out, wipe=False, entries=RL_ENTRIES)  # before reading anything there
        resumed = self.try_resume()
        start_output(self.out, wipe=not resumed, entries=RL_ENTRIES)
        truncate_metrics(self.out / "metrics.jsonl", self._logged_before_checkpoint)
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        (self.out / "dataset.json").write_text(json.dumps(  # robolearn eval reads the env here
            {"env_id": cfg.env, "env_overrides": self.env_overrides, "dataset": cfg.dataset},
            indent=1))
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.out / "tb"))
        self.metrics = open(self.out / "metrics.jsonl", "a")
        try:
            if self.offline_step < a.offline_steps:
                self.pretrain()
                self.save()
            if self.env_step == 0 and a.offline_steps:
                self.evaluate()  # the pretrained policy, before any online step
            self.practice()
        finally:
            self.writer.close()
            self.metrics.close()
            self.env.close()
            if self.eval_env is not None:
                self.eval_env.close()
        return 0

    def pretrain(self) -> None:
        from robolearn_core.progress import track

        a = self.acfg
        assert self.offline is not None
        t0 = time.perf_counter()
        steps = range(self.offline_step, a.offline_steps)
        for _ in track(steps, "offline pretraining"):
            info = self.agent.update(self.offline.sample(a.batch_size, self.agent.generator),
                                     offline=True)
            self.offline_step += 1
            if self.offline_step % self.cfg.log_every == 0:
                self.log({"offline_step": self.offline_step, **_floats(info),
                          "grad_steps_per_s": (self.offline_step - steps.start)
                          / (time.perf_counter() - t0)}, self.offline_step, "offline")

    def practice(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from robolearn_core.progress import console

        cfg = self.cfg
        if self.env_step >= cfg.env_steps:  # a finished run invoked again: change nothing (a
            # later, larger budget must continue it as if this call had never happened)
            log.info("%s: already practised for %d env steps", self.out, self.env_step)
            return
        if cfg.stop_at is not None and self.env_step >= cfg.stop_at:  # likewise
            log.info("%s: already stopped at env step %d (stop_at=%d)", self.out,
                     self.env_step, cfg.stop_at)
            return
        stop = min(cfg.env_steps, cfg.stop_at or cfg.env_steps)
        self._success_ends = self.env.task.success_terminates()
        self._last_save, self._info = self.env_step, {}
        self._t0, self._s0 = time.perf_counter(), self.env_step
        with contextlib.ExitStack() as stack, \
                Progress(TextColumn("practising {task.fields[policy]}"), BarColumn(),
                         MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                         console=console, transient=True) as bar:
            store = self.open_store()
            self.loop.recorder = None
            if store is not None:  # a step in flight at an exception is kept as incomplete
                stack.enter_context(store)  # (and dropped on resume)
                self.loop.recorder = stack.enter_context(store.recorder(
                    task=self.env.task.description, source=Source.AUTONOMOUS))
            self._bar, self._task = bar, bar.add_task(
                "rl", total=cfg.env_steps, completed=self.env_step, policy=cfg.policy,
                status="")
            while True:  # one learner episode: loop episodes, split by recovery manoeuvres
                self._ep_ret, self._ep_first, self._ep_rewards = 0.0, self.online.pos, []
                start_obs: dict[str, np.ndarray] | None = None
                while True:
                    self._ended = self._why = ""
                    self.loop.run_episode(
                        self._act, seed=self._seed(self.episode), source=Source.AUTONOMOUS,
                        sink=self._learn, stop_when=self._pause, start_obs=start_obs,
                        tags=lambda: (self._why,) if self._why else ())
                    self.episodes_recorded += self.loop.recorder is not None
                    if self._why != "recovery":
                        break
                    start_obs = self.env.recover()  # FastRLAP: back off, then practise on
                # the episode ended (the env's verdict), or the budget ran out in it
                self.online.set_returns(self._ep_first,
                                        discounted_returns(self._ep_rewards,
                                                           self.acfg.gamma))
                if self._ended:
                    self.log({"env_step": self.env_step, "episode": self.episode,
                              "episode_return": self._ep_ret,
                              "episode_success": float(self._success)},
                             self.env_step, "episode")
                self.episode += 1
                done_now = self.env_step >= stop  # stop <= env_steps
                if self.env_step - self._last_save >= cfg.save_every or done_now:
                    self.save()
                    self._last_save = self.env_step
                if done_now or not self._ended:
                    break

    def _act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The practising policy: uniform random at first, then the agent's exploration."""
        if self.env_step < self.acfg.random_steps:
            # uniform in the learner's units: over the bounds, or over the largest offsets for
            # relative action entries
            uniform = self.rng.uniform(-1.0, 1.0, len(self.safety.low))
            return self.agent.robot_action(uniform, obs).cpu().numpy()
        return self.agent.explore(obs).cpu().numpy()

    def _learn(self, t: Transition) -> None:
        """The loop's sink: each step into the replay, then the step's updates, logs and
        evaluation (here, between two steps of a simulated robot)."""
        cfg, a = self.cfg, self.acfg
        learn_r = learner_reward(t.reward, t.terminated, t.info, self._success_ends, a.gamma,
                                 cfg.absorbing_success)
        self.online.add(t.obs, t.action, learn_r, t.next_obs, t.terminated)
        self._ep_rewards.append(learn_r)
        self._ep_ret += t.reward
        self._success = bool(t.info["success"])
        self.env_step += 1
        if t.terminated or t.truncated:
            self._ended = "terminated" if t.terminated else "truncated"
        if self.env_step > max(a.random_steps, a.warmup_steps) \
                and len(self.online) >= a.batch_size:
            self._info = self.agent.update(self.batch())
            self.updates += a.utd
        if self.env_step % cfg.log_every == 0:
            sps = (self.env_step - self._s0) / (time.perf_counter() - self._t0)
            self.log({"env_step": self.env_step, "updates": self.updates,
                      "env_steps_per_s": sps, **_floats(self._info)}, self.env_step, "train")
            self._bar.update(self._task, status=f"{sps:.0f} steps/s")
        if self.env_step % cfg.eval_every == 0:
            self.evaluate()
        self._bar.update(self._task, completed=self.env_step)

    def _pause(self) -> bool:
        """The loop's ``stop_when``, after a step that did not end the episode: the budget is
        spent (the stored episode is tagged ``budget_end``), or the robot needs its recovery
        manoeuvre (``recovery``: the store's stretch ends there, so no stored step pairs with
        the observation after the manoeuvre, a transition that never happened)."""
        if self.env_step >= self.cfg.env_steps:
            self._why = "budget_end"
        elif self.env.robot.needs_recovery():
            self._why = "recovery"
        return bool(self._why)

    def _seed(self, episode: int) -> int:
        return self.cfg.seed * 1_000_003 + episode

    def evaluate(self) -> dict[str, Any]:
        from robolearn.evaluate import evaluate

        if self.eval_env is None:
            self.eval_env = make_env(**self.env_kwargs)
        # the actor acts deterministically (tanh of its mean); select_action restores train mode
        report = evaluate(self.agent.actor, self.eval_env, self.cfg.eval_episodes, 100_000,
                          progress=False, safety=self.cfg.safety)
        m: dict[str, Any] = {"env_step": self.env_step, "eval_return": report["mean_return"],
                             "eval_success": report["success_rate"]}
        laps = [r["task"].get("lap_times", []) for r in report["results"]]
        if any(laps):
            m["eval_lap_time"] = float(np.mean([t[0] for t in laps if t]))  # first lap, s
            m["eval_lap_fraction"] = float(np.mean([bool(t) for t in laps]))
            m["eval_collisions"] = float(np.mean([r["task"].get("collisions", 0)
                                                  for r in report["results"]]))
        self.log({**m, "eval_returns": [r["return"] for r in report["results"]],
                  "eval_successes": [r["success"] for r in report["results"]]},
                 self.env_step, "eval")  # per episode too: which one failed, audits
        log.info("step %d: eval return %.1f, success %.0f%%%s", self.env_step,
                 m["eval_return"], 100 * m["eval_success"],
                 f", lap {m['eval_lap_time']:.2f} s" if "eval_lap_time" in m else "")
        return m

    def log(self, m: dict[str, Any], step: int, kind: str) -> None:
        for k, v in m.items():
            if isinstance(v, float):
                self.writer.add_scalar(f"{kind}/{k}", v, step)
        self.metrics.write(json.dumps({"kind": kind, "time": time.time(), **m}) + "\n")
        self.metrics.flush()


def _floats(info: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in info.items()}  # the only host sync of the metrics


def run(cfg: Any) -> int:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    return Runner(cfg).run()
