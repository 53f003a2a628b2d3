"""``robolearn learner``: the learning half of a practice session.

The learner serves the link (:mod:`robolearn.practice.link`) and runs gradient updates in its
own thread, as fast as the CPU or GPU allows but never more than ``policy_config.utd`` critic
updates per transition received (one ``agent.update`` call per transition, each call ``utd``
minibatches): the actors never wait for it, and a slow learner shows up as a lower realised UTD
in the metrics, not as a robot that stands still. It publishes the actor's weights every
``publish_every_s`` seconds (all actors get each version) and checkpoints every
``checkpoint_every_s``.

What it knows of the robots comes from its actors: the first actor's spec (features, action
bounds, control rate) builds the agent and is kept in ``spec.json``; every later actor must
match it. Replay: RLPD's two halves: ``online`` (every transition of every actor) and, with
``dataset=``, the demonstrations plus every intervention step (HIL-SERL puts interventions into
both). Exactly-once replay across restarts: each checkpoint holds the replay and, per actor,
how many of its transitions it holds; a restarted learner tells each actor that count in
``Hello`` and the actor resends the rest (it keeps every transition until a checkpoint holds it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.schema import Feature
from policies.rl.replay import NO_MC, ReplayBuffer, load_transitions, mixed_batch
from robolearn.practice.link import DEFAULT_ADDRESS, LinkServer, Refused
from robolearn.practice.security import Security, read_token
from robolearn.rundir import (
    check_output,
    load_training_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    start_output,
)
from robolearn_core.config import ConfigError, InvalidValue, to_yaml

log = logging.getLogger("robolearn.learner")

LEARNER_ENTRIES = ("checkpoints", "metrics.jsonl", "config.yaml", "spec.json")
PRACTICE_AGENTS = ("sac", "rlpd")


@dataclass
class LearnerConfig:
    output: str = "outputs/practice/learner"  # checkpoints/, metrics.jsonl, spec.json
    address: str = DEFAULT_ADDRESS  # host:port to listen on (port 0: any free port)
    token: str | None = None  # shared secret every actor must present
    token_file: str | None = None  # ... read from the first line of this file instead
    tls_cert: str | None = None  # PEM certificate of this learner (needed off loopback)
    tls_key: str | None = None  # PEM private key of tls_cert
    policy: str = "rlpd"  # sac | rlpd (rlpd needs dataset=: the demos of its offline half)
    dataset: str | None = None  # episode store of demonstrations (RLPD's offline half)
    # the demos' reward: "env" (as recorded) or "success" (1 on the step that ends a successful
    # episode, else 0: what a success classifier pays, HIL-SERL's reward_classifier actors)
    dataset_reward: str = "env"
    obs_norm: str = "identity"  # identity | dataset (the demos' mean and std; as robolearn train)
    obs_std_floor: float = 1e-2  # raw units: a feature constant in the demos stays finite
    buffer_size: int = 200_000  # online replay capacity, transitions
    intervention_capacity: int = 50_000  # room for intervention steps in the offline half
    start_after: int = 1000  # transitions received before the first update
    publish_every_s: float = 1.0  # seconds between weight versions (FastRLAP: 2 s)
    checkpoint_every_s: float = 30.0  # seconds between checkpoints (resend window of actors)
    log_every_s: float = 5.0  # seconds between metrics rows
    max_actors: int = 16  # actors served at once; one more is refused with a message
    stop_after: int | None = None  # stop (with a checkpoint) after this many transitions
    seed: int = 0  # seeds the agent and its sampling
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    keep_last: int = 2  # checkpoints kept
    resume: bool = True  # continue from output/checkpoints/last

    def __post_init__(self) -> None:
        if self.dataset_reward not in ("env", "success"):
            raise InvalidValue("dataset_reward", f"must be 'env' or 'success', got "
                                                 f"{self.dataset_reward!r}")
        if self.obs_norm not in ("identity", "dataset"):
            raise InvalidValue("obs_norm", f"must be 'identity' or 'dataset', got "
                                           f"{self.obs_norm!r}")
        if self.obs_norm == "dataset" and not self.dataset:
            raise InvalidValue("obs_norm", "'dataset' needs dataset=STORE")
        if self.policy not in PRACTICE_AGENTS:
            raise InvalidValue("policy", f"practice runs {' | '.join(PRACTICE_AGENTS)}, got "
                                         f"{self.policy!r}")
        for name in ("buffer_size", "max_actors", "intervention_capacity"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("publish_every_s", "checkpoint_every_s", "log_every_s"):
            if getattr(self, name) <= 0:
                raise InvalidValue(name, f"must be > 0, got {getattr(self, name)}")


def schema_for(path: str | None, overrides: list[str]) -> type:
    """LearnerConfig with ``policy_config`` typed as the chosen agent's config."""
    from policies.rl import agent_class
    from robolearn_core.config import probe

    name = str(probe(path, overrides).get("policy", "rlpd"))
    if name not in PRACTICE_AGENTS:
        raise ConfigError(f"policy: practice runs {' | '.join(PRACTICE_AGENTS)}, got {name!r}")
    acls = agent_class(name).config_class
    return dataclasses.make_dataclass(
        f"LearnerConfig_{name}", [("policy_config", acls, dataclasses.field(
            default_factory=acls))], bases=(LearnerConfig,),
        namespace={"selected_by": {"policy_config": ("policy", name)}})


def spec_features(spec: dict[str, Any]) -> tuple[dict[str, Feature], Feature, np.ndarray,
                                                 np.ndarray]:
    """An actor's spec -> (observation features, action feature, action low, high)."""
    feats = {k: Feature.from_spec(k, v) for k, v in spec["features"].items()}
    action = Feature.from_spec("action", spec["action"])
    return feats, action, np.asarray(spec["low"], np.float32), np.asarray(spec["high"],
                                                                          np.float32)


def build_agent(policy: str, config: Any, spec: dict[str, Any],
                obs_stats: dict[str, dict[str, np.ndarray]] | None = None) -> Any:
    """The agent for ``spec`` (the learner's, and each actor's copy to act with).
    ``obs_stats``: normalisation of observations (else identity); they are buffers of the
    actor's weights, so an actor built without them gets them with the first weights."""
    from policies.rl import agent_class
    from robolearn.rl_setup import rl_features_of

    feats, action, low, high = spec_features(spec)
    features, stats = rl_features_of(feats, action, low, high)
    stats.update(obs_stats or {})
    try:
        return agent_class(policy)(config, features, stats)
    except InvalidValue as e:
        raise ConfigError(f"policy_config.actor.{e.field}: {e.message}") from None


def actor_state(agent: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in agent.actor.state_dict().items()}


class Learner:
    def __init__(self, cfg: Any) -> None:
        self.cfg, self.acfg = cfg, cfg.policy_config
        if self.acfg.uses_offline_data and not cfg.dataset:
            raise ConfigError(f"dataset: policy {cfg.policy} learns from demonstrations too; "
                              "pass dataset=STORE (an episode store recorded from this robot)")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.out = Path(cfg.output)
        self.security = Security(read_token(cfg.token, cfg.token_file), cfg.tls_cert,
                                 cfg.tls_key)
        self.security.check_server(cfg.address)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.spec: dict[str, Any] | None = None
        self.agent: Any = None
        self.online: ReplayBuffer | None = None
        self.offline: ReplayBuffer | None = None
        self.next_seq: dict[str, int] = {}  # actor -> transitions held from it
        self.durable: dict[str, int] = {}  # actor -> transitions held in the last checkpoint
        self.lost: dict[str, int] = {}  # actor -> transitions the learner never got (wiped)
        self.received = self.updates = self.interventions = 0
        self.ready = threading.Event()  # the agent exists (weights can be served)
        self.server: LinkServer | None = None
        self.error: BaseException | None = None  # what stopped the update thread

    # ------------------------------------------------------------------ set-up
    def _agent_config(self) -> Any:
        return dataclasses.replace(self.acfg, seed=self.cfg.seed * 7919 + self.acfg.seed)

    def _build(self, spec: dict[str, Any]) -> None:
        """Agent and replay for ``spec`` (the first actor's, or spec.json on a restart)."""
        self.spec = spec
        features, _ = self._features()
        self.agent = build_agent(self.cfg.policy, self._agent_config(), spec,
                                 self._dataset_stats(features)
                                 if self.cfg.obs_norm == "dataset" else None)
        self.online = ReplayBuffer(features, self.cfg.buffer_size, self.agent.device)
        if self.acfg.uses_offline_data:
            self.offline = self._load_offline(features)
        self.ready.set()

    def _features(self) -> tuple[dict[str, Feature], Any]:
        from robolearn.rl_setup import rl_features_of

        assert self.spec is not None
        return rl_features_of(*spec_features(self.spec))

    def _dataset_stats(self, features: dict[str, Feature]) -> dict[str, dict[str, np.ndarray]]:
        """Mean and floored std of the demos' low-dim observations (``obs_norm=dataset``)."""
        from data import EpisodeStore
        from robolearn.rl_setup import obs_stats

        with EpisodeStore.open(self.cfg.dataset, "r") as store:
            return obs_stats(store, features, self.cfg.obs_std_floor)

    def _load_offline(self, features: dict[str, Feature]) -> ReplayBuffer:
        from data import EpisodeStore, StoreError

        path = self.cfg.dataset
        try:
            with EpisodeStore.open(path, "r") as store:
                keys = [k for k in features if k.startswith("observation.")]
                missing = [k for k in [*keys, "action"] if k not in store.features]
                if missing:
                    raise ConfigError(f"dataset: {path} lacks {missing}, which the actors' "
                                      f"robot has (the store has {sorted(store.features)})")
                success = self.cfg.dataset_reward == "success"
                # success: a successful scripted episode ends on its success step (done = 1
                # there), which is exactly where a success classifier pays 1
                data = load_transitions(store, keys, self.acfg.gamma, success,
                                        absorbing_success=False)
                if success:
                    data["reward"] = data["done"].astype(np.float32).copy()
        except (StoreError, OSError, ValueError) as exc:
            raise ConfigError(f"dataset: {path}: {exc}") from None
        buf = ReplayBuffer(features, len(data["reward"]) + self.cfg.intervention_capacity,
                           self.agent.device)
        buf.extend(data)
        log.info("offline half: %d demo transitions from %s", len(buf), path)
        return buf

    # ------------------------------------------------------------------ the link's callbacks
    def hello(self, actor_id: str, spec: dict[str, Any], resend_from: int) -> tuple[int, int, str]:
        with self.lock:
            if self.spec is None:
                self._build(spec)
                (self.out / "spec.json").write_text(json.dumps(spec, indent=1))
                self.publish()
            elif diff := _spec_diff(self.spec, spec):
                raise Refused(f"actor {actor_id}'s robot differs from this session's "
                              f"({', '.join(diff)} differ: session {self.spec.get('env')}, "
                              f"actor {spec.get('env')}); one learner learns one robot's "
                              "observations and actions")
            have = self.next_seq.get(actor_id, 0)
            if resend_from > have:  # the learner lost transitions the actor no longer holds
                self.lost[actor_id] = self.lost.get(actor_id, 0) + resend_from - have
                log.error("actor %s: transitions %d..%d are lost (this learner's output was "
                          "older than the actor's session)", actor_id, have, resend_from - 1)
                have = resend_from
            self.next_seq[actor_id] = have
            self.durable.setdefault(actor_id, 0)
            policy = {"policy": self.cfg.policy, "config": to_yaml(self._agent_config())}
            log.info("actor %s connected (holds transitions from %d; learner has %d)",
                     actor_id, resend_from, have)
            return have, self.durable[actor_id], json.dumps(policy)

    def receive(self, actor_id: str, first_seq: int, arrays: dict[str, np.ndarray]
                ) -> tuple[int, int]:
        n = len(arrays["reward"])
        with self.lock:
            assert self.online is not None
            have = self.next_seq.get(actor_id, 0)
            if first_seq > have:
                raise ValueError(f"actor {actor_id}: batch starts at {first_seq}, the learner "
                                 f"has {have}: transitions missing in between")
            skip = have - first_seq  # already held (a resend after a reconnect)
            if skip < n:
                rows = {k: v[skip:] for k, v in arrays.items()}
                self._check(actor_id, first_seq, rows)
                rows["mc_return"] = np.full(n - skip, NO_MC, np.float32)
                self.online.extend({k: rows[k] for k in self.online.data})
                inter = rows.get("intervention")
                if inter is not None and inter.any():  # counted, and RLPD's offline half
                    mask = inter.astype(bool)
                    if self.offline is not None:
                        self.offline.extend({k: rows[k][mask] for k in self.offline.data})
                    self.interventions += int(mask.sum())
                self.received += n - skip
                self.next_seq[actor_id] = first_seq + n
            return self.next_seq[actor_id], self.durable.get(actor_id, 0)

    def _check(self, actor_id: str, first_seq: int, rows: dict[str, np.ndarray]) -> None:
        assert self.online is not None
        for k, buf in self.online.data.items():
            if k == "mc_return":
                continue
            if k not in rows:
                raise ValueError(f"actor {actor_id} batch at {first_seq}: no {k!r}")
            if rows[k].shape[1:] != tuple(buf.shape[1:]):
                raise ValueError(f"actor {actor_id} batch at {first_seq}: {k} has shape "
                                 f"{rows[k].shape[1:]}, expected {tuple(buf.shape[1:])}")
        bad = [k for k, v in rows.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"actor {actor_id} batch at {first_seq}: non-finite values in "
                             f"{bad}")

    def publish(self) -> None:
        if self.server is not None and self.agent is not None:
            self.server.publish(actor_state(self.agent), self.updates)

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        with self.lock:
            if self.agent is None or self.online is None:
                return
            counts = dict(self.next_seq)
            state = {"agent": self.agent.state_dict(), "optim": self.agent.optim_state(),
                     "online": self.online.state_dict(),
                     "offline_extra": self._offline_extra(), "rng": rng_state(),
                     "counters": {"received": self.received, "updates": self.updates,
                                  "interventions": self.interventions},
                     "next_seq": counts, "lost": dict(self.lost)}
            state = _copy(state)  # the snapshot; writing it happens outside the lock
        save_checkpoint(self.out / "checkpoints", self.updates, self.agent.actor, state,
                        keep_last=self.cfg.keep_last)
        with self.lock:
            self.durable.update(counts)

    def _offline_extra(self) -> dict[str, Any] | None:
        """The intervention rows of the offline half (the demos are reloaded from dataset)."""
        if self.offline is None or self.interventions == 0:
            return None
        return self.offline.state_dict()

    def try_resume(self) -> bool:
        last = self.out / "checkpoints" / "last"
        spec_file = self.out / "spec.json"
        if not (self.cfg.resume and (last.is_symlink() or last.exists())
                and spec_file.exists()):
            return False
        self._build(json.loads(spec_file.read_text()))
        state = load_training_state(last)
        assert self.online is not None
        self.agent.load_state_dict(state["agent"])
        self.agent.load_optim_state(state["optim"])
        self.online.load_state_dict(state["online"])
        if state.get("offline_extra") is not None and self.offline is not None:
            self.offline.load_state_dict(state["offline_extra"])
        restore_rng_state(state["rng"])
        for k, v in state["counters"].items():
            setattr(self, k, int(v))
        self.next_seq = {k: int(v) for k, v in state["next_seq"].items()}
        self.durable = dict(self.next_seq)
        self.lost = {k: int(v) for k, v in state.get("lost", {}).items()}
        log.info("resumed %s: %d transitions from %d actor(s), %d updates", self.out,
                 self.received, len(self.next_seq), self.updates)
        return True

    # ------------------------------------------------------------------ the run
    def run(self) -> int:
        cfg = self.cfg
        check_output(self.out, wipe=False, entries=LEARNER_ENTRIES)
        resumed = self.try_resume()
        start_output(self.out, wipe=not resumed, entries=LEARNER_ENTRIES, kind="learner")
        (self.out / "config.yaml").write_text(to_yaml(cfg))
        self.server = LinkServer(cfg.address, self.hello, self.receive, security=self.security,
                                 max_actors=cfg.max_actors, session=self.out.name)
        if resumed:
            self.publish()
        self.server.start()
        # the line a supervisor (robolearn practice, a test) waits for: the bound address
        print(f"learner listening on {self.server.address}", flush=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        updater = threading.Thread(target=self._learn, name="learner-updates", daemon=True)
        updater.start()
        metrics = open(self.out / "metrics.jsonl", "a")
        last_save = last_log = time.monotonic()
        t0, r0, u0 = time.monotonic(), self.received, self.updates
        try:
            while not self.stop.is_set():
                self.stop.wait(0.1)
                now = time.monotonic()
                if now - last_save >= cfg.checkpoint_every_s:
                    self.save()
                    last_save = now
                if now - last_log >= cfg.log_every_s:
                    row = self._metrics(now - t0, self.received - r0, self.updates - u0)
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    last_log = now
                if cfg.stop_after is not None and self.received >= cfg.stop_after:
                    break
            if self.error:
                raise self.error
        finally:
            self.stop.set()
            updater.join(timeout=30)
            self.save()
            metrics.write(json.dumps(self._metrics(time.monotonic() - t0, self.received - r0,
                                                   self.updates - u0)) + "\n")  # the last
            metrics.close()
            self.server.stop(1.0)
        log.info("learner stopped: %d transitions, %d updates, checkpoint in %s",
                 self.received, self.updates, self.out / "checkpoints")
        return 0

    def _metrics(self, elapsed: float, received: int, updates: int) -> dict[str, Any]:
        return {"time": time.time(), "received": self.received, "updates": self.updates,
                "utd_realised": self.updates / max(self.received, 1),
                "transitions_per_s": received / max(elapsed, 1e-9),
                "updates_per_s": updates / max(elapsed, 1e-9),
                "weights_version": self.server.version if self.server else 0,
                "interventions": self.interventions, "actors": dict(self.next_seq),
                "lost": sum(self.lost.values())}

    def _learn(self) -> None:
        """Update while there is unconsumed data (at most one update call per transition),
        publishing weights every ``publish_every_s``."""
        cfg, a = self.cfg, self.acfg
        last_pub = time.monotonic()
        try:
            while not self.stop.is_set():
                with self.lock:
                    ready = (self.online is not None and len(self.online) >= max(
                        cfg.start_after, a.batch_size) and self.updates < self.received)
                    batch = self._batch() if ready else None
                if batch is None:
                    self.stop.wait(0.01)
                else:
                    self.agent.update(batch)
                    self.updates += 1
                if self.updates and time.monotonic() - last_pub >= cfg.publish_every_s:
                    self.publish()
                    last_pub = time.monotonic()
        except BaseException as exc:
            log.exception("learner update failed")
            self.error = exc
            self.stop.set()

    def _batch(self) -> dict[str, torch.Tensor]:
        a = self.acfg
        assert self.online is not None
        return mixed_batch(self.online, self.offline, a.utd, a.batch_size, a.offline_ratio,
                           self.agent.generator)


def _copy(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: _copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_copy(v) for v in tree]
    return tree


def _spec_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts of two actors' specs that differ (none: one learner can learn both)."""
    return [k for k in ("features", "action", "low", "high")
            if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


def run(cfg: Any) -> int:
    return Learner(cfg).run()
