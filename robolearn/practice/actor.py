"""``robolearn actor``: one robot practising for a learner (``robolearn learner``).

The actor steps its robot through the control loop (:class:`robolearn.loop.ControlLoop`: fixed
rate, safety filter, watchdog, a teleop device able to take over, recording), the same loop
``collect``, ``eval`` and ``deploy`` use. Each step goes to its episode store
(``output/episodes.zarr``, source ``autonomous``, interventions marked) and, through the loop's
``sink``, to the link; new weights are taken between steps (the policy call loads the newest
version the link holds). Nothing here waits for a gradient step.

- Until the learner has made one update, the actor acts uniformly at random over the action
  bounds (the learner's ``start_after`` transitions); then the agent's stochastic policy.
- The link down (learner killed, network gone: no message for ``liveness_s``): the episode ends
  there, the robot is stopped and held stopped, the store keeps every step; when the learner is
  back the actor resends what the learner lacks and practises on.
- A stuck or flipped car runs FastRLAP's recovery manoeuvre and practises on in the same task
  episode (a new stored episode starts: no stored step pairs with a post-manoeuvre
  observation).
- Lap times (tasks that time laps) go to ``output/laps.jsonl`` with robot time (steps / the
  robot's control rate) and wall time: the curves of practice. ``output/events.jsonl`` has the
  link's story: ``link_down`` (the robot stopped), ``link_up``, ``first_step`` after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source
from robolearn.env import ENVS, RobotEnv, make_env, robot_config, robot_kwargs, unknown_env
from robolearn.loop import ControlLoop, LoopConfig, Transition, create_store
from robolearn.practice.link import DEFAULT_ADDRESS, ActorLink
from robolearn.practice.security import Security, read_token
from robolearn.rundir import check_output, start_output
from robolearn.safety import SafetyConfig
from robolearn.scene import PersonScene, Scene, SceneStopped, SceneTask
from robolearn.teacher import TeacherConfig, TeacherTakeover
from robolearn_core.config import InvalidValue, to_yaml

log = logging.getLogger("robolearn.actor")

ACTOR_ENTRIES = ("episodes.zarr", "laps.jsonl", "events.jsonl", "config.yaml", "actor.json")


@dataclass
class ActorConfig:
    learner: str = DEFAULT_ADDRESS  # the learner's host:port
    actor_id: str = "actor0"  # unique per robot in a session
    env: str = "robolearn/SimCar-v0"  # the robot and task this actor practises
    # what the policy observes (None: every observation.* feature); a reward classifier may
    # look at more (a camera the policy does not use)
    observations: list[str] | None = None
    robot: Any = None  # settings of the env's robot; None: the env's own
    output: str = "outputs/practice/actor0"  # episodes.zarr, laps.jsonl
    token: str | None = None  # the learner's shared secret
    token_file: str | None = None  # ... read from the first line of this file instead
    tls_ca: str | None = None  # PEM certificate to trust for the learner (TLS)
    env_steps: int | None = None  # stop after this many steps of this actor; None: Ctrl-C
    max_episode_steps: int | None = None  # None: the env's limit
    time_scale: float = 1.0  # simulated robots: run the loop this many times real time
    seed: int = 0  # seeds random actions, sampling and episode resets
    threads: int = 1  # torch CPU threads for inference (the default threads cost 20x here)
    liveness_s: float = 3.0  # the link is down after this long without a learner message
    random_until_learned: bool = True  # uniform random actions until the first update
    # HIL-SERL: the reward is a learned success classifier's (robolearn reward train): 1 on a
    # frame it calls a success, which ends the episode; the env's own reward is not used
    reward_classifier: str | None = None
    # who can take over: none | keyboard | gamepad | spacemouse | so101_leader | so100_leader |
    # koch_leader, or expert (the scripted expert as a simulated teacher, robolearn.teacher:
    # unattended HIL-SERL interventions)
    teleop: str = "none"
    # the device's config fields; for expert, the teacher's (rule=random, p, hold, noise, ...)
    teleop_config: dict[str, Any] = field(default_factory=dict)
    # bounds, rate limit (FastRLAP: max_delta=0.2 on a real car's [-1, 1]), NaN handling,
    # watchdog
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    # who resets the scene between episodes (robolearn.scene): none (the robot's own reset:
    # simulation, a car) or person (a real arm: after homing the actor waits for Enter, and
    # asks after each episode whether it succeeded: HIL-SERL's review labels)
    scene: str = "none"

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise InvalidValue("env", unknown_env(self.env))
        self.robot = robot_config(self.env, self.robot)
        if self.time_scale <= 0:
            raise InvalidValue("time_scale", f"must be > 0, got {self.time_scale}")
        from hardware.teleop import TELEOPS

        names = ("none", *TELEOPS, "expert")
        if self.teleop not in names:
            raise InvalidValue("teleop", f"must be one of {', '.join(names)}, got "
                                         f"{self.teleop!r}")
        if self.scene not in ("none", "person"):
            raise InvalidValue("scene", f"must be none or person, got {self.scene!r}")
        if self.scene == "person" and self.teleop == "keyboard" \
                and not (self.teleop_config or {}).get("tty"):
            # both would read this terminal: Enter for the scene and keys for driving, each
            # eating the other's input
            raise InvalidValue("teleop", "keyboard and scene=person would both read this "
                               "terminal: give the keyboard its own (teleop_config.tty="
                               "/dev/pts/N, a second terminal) or take over with another device")
        if self.env_steps is not None and self.env_steps < 1:
            raise InvalidValue("env_steps", f"must be >= 1, got {self.env_steps}")


def schema_for(path: str | None, overrides: list[str]) -> type:
    from robolearn.env import with_robot

    return with_robot(ActorConfig, path, overrides)


def robot_spec(env: RobotEnv, env_id: str, observations: list[str] | None = None
               ) -> dict[str, Any]:
    """What the learner needs to know of this robot (JSON)."""
    low, high = env.robot.action_bounds
    keys = [k for k in env.features if k.startswith("observation.")]
    if observations is not None:
        unknown = [k for k in observations if k not in keys]
        if unknown:
            raise InvalidValue("observations", f"{env.robot.name} does not observe {unknown}; "
                                               f"it observes {keys}")
        keys = list(observations)
    return {"env": env_id, "robot": env.robot.name, "fps": env.robot.fps,
            "features": {k: env.features[k].to_json() for k in keys},
            "action": env.robot.action_feature.to_json(),
            "low": np.asarray(low).tolist(), "high": np.asarray(high).tolist()}


class PracticePolicy:
    """The actor's policy: uniform random until the learner has learned, then the agent's
    stochastic actions with the newest weights the link holds (taken between steps)."""

    def __init__(self, link: ActorLink, low: np.ndarray, high: np.ndarray, seed: int,
                 random_until_learned: bool) -> None:
        self.link, self.low, self.high = link, np.asarray(low), np.asarray(high)
        self.rng = np.random.default_rng(seed)
        self.random_until_learned = random_until_learned
        self.agent: Any = None
        self.version = self.learner_step = 0
        self.seed = seed
        self._prepared = False

    def _take_weights(self) -> None:
        """Load the newest weights into the agent (a copy of tensors: fast enough between
        steps); the agent itself is built only in :meth:`prepare`, between episodes."""
        if self.agent is None:
            return
        got = self.link.latest()
        if got is None:
            return
        self.agent.actor.load_state_dict({k: torch.from_numpy(np.array(v))
                                          for k, v in got.state.items()})
        self.version, self.learner_step = got.version, got.learner_step

    def prepare(self, timeout: float = 10.0) -> None:
        """Between episodes: build the agent once the learner's weights are there (building it
        inside a step would stall the control path: the RC car's failsafe fires at 80 ms). The
        first call waits up to ``timeout`` for them; later calls never wait."""
        deadline = time.monotonic() + (timeout if not self._prepared else 0.0)
        self._prepared = True
        while self.agent is None:
            if self.link.stats.weight_versions:
                self.agent = _agent_from(self.link.policy_json, self.link.spec, self.seed)
                break
            if not self.link.up or time.monotonic() >= deadline:
                return
            time.sleep(0.02)
        self._take_weights()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._take_weights()
        if self.agent is None or (self.random_until_learned and self.learner_step == 0):
            return self.rng.uniform(self.low, self.high)
        return self.agent.explore(obs).cpu().numpy()


def _agent_from(policy_json: str, spec: dict[str, Any], seed: int) -> Any:
    """The learner's agent, rebuilt on the CPU to act (its config as the learner sent it)."""
    from omegaconf import OmegaConf

    from policies.rl import agent_class
    from robolearn.practice.learner import build_agent

    msg = json.loads(policy_json)
    acls = agent_class(msg["policy"]).config_class
    cfg: Any = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(acls),
                                                   OmegaConf.create(msg["config"])))
    cfg = dataclasses.replace(cfg, device="cpu", seed=seed,
                              actor=dataclasses.replace(cfg.actor, device="cpu"))
    agent = build_agent(msg["policy"], cfg, spec)
    agent.actor.eval()
    return agent


class Actor:
    """``teleop``: a device object (``get_action(obs) -> action | None``) in place of the one
    ``cfg.teleop`` names; ``scene``: a :class:`robolearn.scene.Scene` in place of the one
    ``cfg.scene`` names (programs and tests: the emulated arm's experimenter)."""

    def __init__(self, cfg: ActorConfig, teleop: Any = None, scene: Scene | None = None
                 ) -> None:
        self.cfg = cfg
        self.teleop = teleop
        self.scene = scene if scene is not None else (
            PersonScene(cfg.actor_id) if cfg.scene == "person" else None)
        torch.set_num_threads(max(cfg.threads, 1))
        self.out = Path(cfg.output)
        env_kwargs = dict(ENVS[cfg.env])
        self.overrides: dict[str, Any] = {}
        kwargs = robot_kwargs(cfg.env, cfg.robot)
        if kwargs != env_kwargs.get("robot_kwargs", {}):
            self.overrides["robot_kwargs"] = kwargs
        if cfg.max_episode_steps:
            self.overrides["max_steps"] = cfg.max_episode_steps
        self.env_kwargs = {**env_kwargs, **self.overrides}
        self.stop = threading.Event()
        if isinstance(self.scene, PersonScene) and self.scene.stop is None:
            self.scene.stop = self.stop  # SIGTERM ends a wait for the person
        self.steps = 0  # this actor's steps, all sessions (robot time = steps / fps)
        self.t_start = time.time()
        self._first_step = False  # the next step is the first after a reconnection
        self.classifier: Any = None
        self._classified_success = False
        self.obs_keys: list[str] = []
        self.interventions = 0  # steps a teleop device or teacher drove

    def run(self) -> int:
        cfg = self.cfg
        check_output(self.out, wipe=False, entries=ACTOR_ENTRIES)
        start_output(self.out, wipe=False, entries=ACTOR_ENTRIES, kind="actor")
        env = make_env(**self.env_kwargs)
        robot = env.robot
        scene_task = None
        if self.scene is not None:  # set after each reset, judged during and after each episode
            env.task = scene_task = SceneTask(env.task, self.scene)
        if not robot.simulated and cfg.time_scale != 1.0:
            raise InvalidValue("time_scale", "a real robot runs in real time (time_scale=1)")
        spec = robot_spec(env, cfg.env, cfg.observations)
        self.obs_keys = list(spec["features"])
        link = ActorLink(cfg.learner, cfg.actor_id, spec,
                         security=Security(read_token(cfg.token, cfg.token_file),
                                           tls_ca=cfg.tls_ca),
                         liveness_s=cfg.liveness_s).start()
        low, high = robot.action_bounds
        policy = PracticePolicy(link, low, high, cfg.seed, cfg.random_until_learned)
        self.classifier = None
        if cfg.reward_classifier:
            from policies.reward_classifier import RewardClassifier

            try:
                self.classifier = RewardClassifier.load(cfg.reward_classifier)
            except (ValueError, OSError) as exc:
                raise InvalidValue("reward_classifier", str(exc)) from None
            lacking = [k for k in self.classifier.cfg.cameras if k not in env.features]
            if lacking:
                raise InvalidValue("reward_classifier", f"it looks at {lacking}, which "
                                   f"{robot.name} does not observe (robot.cameras=...)")
        teleop = self.teleop
        if teleop is None and cfg.teleop == "expert":
            teleop = _expert_takeover(env, cfg)
        elif teleop is None and cfg.teleop != "none":
            from hardware.teleop import make_teleop

            teleop = make_teleop(cfg.teleop, robot, **cfg.teleop_config)
        path = self.out / "episodes.zarr"
        store = (EpisodeStore.open(path, "a") if (path / "zarr.json").exists()
                 else create_store(str(path), env, cfg.env, self.overrides,
                                   actor_id=cfg.actor_id))
        self.steps = store.num_frames  # committed steps of earlier runs of this actor
        laps_file = open(self.out / "laps.jsonl", "a")
        self.events = open(self.out / "events.jsonl", "a")
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        loop_cfg = LoopConfig(fps=robot.fps * cfg.time_scale, realtime=True,
                              safety=cfg.safety)
        episode = 0
        # SIGTERM stops the session cleanly; the caller's handler is back when run() returns
        # (an actor run inside a test or program must not keep the process from dying)
        previous = signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        try:
            with contextlib.ExitStack() as stack:
                if hasattr(teleop, "__enter__"):  # a device: connected for the session
                    stack.enter_context(teleop)
                if hasattr(teleop, "set_mode"):
                    teleop.set_mode("drive")
                stack.enter_context(store)
                rec = stack.enter_context(store.recorder(
                    task=env.task.description or env.task.name, source=Source.AUTONOMOUS,
                    background=True))
                loop = ControlLoop(env, loop_cfg, recorder=rec)
                link_lost = False

                def sink(t: Transition) -> None:
                    self._sink(link, env, t, laps_file)

                def stop_when() -> bool:
                    nonlocal link_lost
                    link_lost = not link.up
                    return (link_lost or self.stop.is_set() or robot.needs_recovery()
                            or self._budget_spent() or self._classified_success)

                start_obs = None
                while not (self.stop.is_set() or self._budget_spent()):
                    if not link.up:
                        robot.stop()  # held in its safe state until the learner is back
                        if link.stats.connects:  # (not before the first connection)
                            self._event("link_down", error=link.stats.last_error)
                        log.info("actor %s: waiting for the learner at %s (%s)", cfg.actor_id,
                                 cfg.learner, link.stats.last_error or "connecting")
                        while not link.wait_up(0.5):
                            if self.stop.is_set():
                                return 0
                        self._event("link_up")
                        self._first_step = True
                        start_obs = None
                    policy.prepare()
                    seed = cfg.seed * 1_000_003 + episode
                    if isinstance(teleop, TeacherTakeover):
                        teleop.reset(seed)  # its random takeovers, seeded per episode
                    elif hasattr(teleop, "reset") and start_obs is None:
                        teleop.reset()  # a device: no takeover held into a new episode
                    try:
                        result = loop.run_episode(
                            policy, teleop, seed=seed, sink=sink, stop_when=stop_when,
                            start_obs=start_obs, actor_id=cfg.actor_id,
                            weights_version=policy.version,
                            review=None if scene_task is None
                            else lambda r: (True, scene_task.verdict(r.success)))
                    except SceneStopped:  # the robot homed and was halted; nothing recorded
                        log.info("actor %s: stopped while the scene waited for a person",
                                 cfg.actor_id)
                        break
                    episode += 1
                    start_obs = None
                    self._classified_success = False
                    if not (result.terminated or link_lost or self.stop.is_set()) \
                            and robot.needs_recovery():
                        start_obs = env.recover()  # FastRLAP: back off, then practise on
                # every transition reaches the learner before a clean exit (when it is up)
                deadline = time.monotonic() + 10
                while link.pending and link.up and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            signal.signal(signal.SIGTERM, previous)
            laps_file.close()
            self.events.close()
            link.close()
            env.close()
            (self.out / "actor.json").write_text(json.dumps({
                "actor_id": cfg.actor_id, "steps": self.steps, "sent": link.next_seq,
                "acked": link.acked(), "connects": link.stats.connects,
                "disconnects": link.stats.disconnects, "resent": link.stats.resent,
                "weight_versions": link.stats.weight_versions,
                "weight_latency_ms": _percentiles(link.stats.latencies_ms),
                "interventions": self.interventions}, indent=1))
        return 0

    def _event(self, name: str, **more: Any) -> None:
        self.events.write(json.dumps({"event": name, "time": time.time(), "steps": self.steps,
                                      **more}) + "\n")
        self.events.flush()

    def _budget_spent(self) -> bool:
        return self.cfg.env_steps is not None and self.steps >= self.cfg.env_steps

    def _sink(self, link: ActorLink, env: RobotEnv, t: Transition, laps_file: Any) -> None:
        row: dict[str, Any] = {f"obs/{k}": t.obs[k] for k in self.obs_keys}
        row.update({f"next_obs/{k}": t.next_obs[k] for k in self.obs_keys})
        reward, done = t.reward, t.terminated
        if self.classifier is not None:  # HIL-SERL: success (by the classifier) ends it
            reward = self.classifier.reward(t.next_obs)
            done = self._classified_success = reward > 0
        row.update(action=np.asarray(t.action, np.float32), reward=np.float32(reward),
                   done=np.float32(done),
                   intervention=np.uint8(t.source == Source.INTERVENTION))
        self.interventions += int(t.source == Source.INTERVENTION)
        link.push(row)
        self.steps += 1
        if self._first_step:
            self._event("first_step")
            self._first_step = False
        if t.info.get("reward_terms", {}).get("lap"):
            laps = getattr(env.task, "lap_times", [])
            if laps:
                rec = {"actor_id": self.cfg.actor_id, "lap_time": laps[-1],
                       "robot_s": self.steps / env.robot.fps,
                       "wall_s": time.time() - self.t_start, "steps": self.steps,
                       "collisions": getattr(env.task, "collisions", 0)}
                laps_file.write(json.dumps(rec) + "\n")
                laps_file.flush()


def _expert_takeover(env: RobotEnv, cfg: ActorConfig) -> TeacherTakeover:
    """``teleop=expert``: the scripted expert takes over by its rule (``teleop_config``: the
    fields of :class:`robolearn.teacher.TeacherConfig`)."""
    try:
        tcfg = TeacherConfig(**{"rule": "random", "seed": cfg.seed, **cfg.teleop_config})
        return TeacherTakeover(env, tcfg)
    except TypeError as exc:
        raise InvalidValue("teleop_config", f"{exc} (the fields of a simulated teacher: "
                           "rule, p, hold, noise, delay, weak, expert, seed)") from None
    except ValueError as exc:
        raise InvalidValue("teleop_config", str(exc)) from None


def _percentiles(x: list[float]) -> dict[str, float]:
    if not x:
        return {}
    a = np.asarray(x)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def run(cfg: ActorConfig) -> int:
    return Actor(cfg).run()
