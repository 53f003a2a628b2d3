"""``robolearn improve START method=... teacher=expert rounds=N``: interactive imitation.

The robot acts, asks its teacher when the method says so, and learns from the answers, round
after round. ``START`` is a BC training run (its ``dataset.json`` names the demonstrations) or
an episode store of demonstrations; the novice is a bootstrap ensemble of MLPs
(:class:`policies.interactive.NoviceEnsemble`) refitted on all data at the start of each round
and, with ``fit_every=episode``, after every episode that added training data.

Methods (what runs the robot at each step, who labels what):

- ``dagger``: the teacher labels every step; the robot executes the teacher's action with
  probability beta (``beta=exponential|linear|first|none``, ``beta_p``), else the novice's;
- ``hgdagger``: the teacher takes over when its rule says (``teacher.rule``); only the steps it
  controls are labelled;
- ``thrifty``: the robot hands control to the teacher when its novelty (ensemble variance)
  exceeds a threshold set from the target intervention rate ``alpha`` (on held-out demos, then
  on the autonomous steps of the previous rounds), and takes it back when its novelty is below
  the threshold again and its plan agrees with the teacher's (``teacher.tolerance``);
- ``askdagger``: the robot asks when its uncertainty is at or above SAG's threshold (``sag.*``:
  mode, target, random query probability); FIER turns the answer into data: an accepted plan is
  a validation demo (executed), a rejected one gets the teacher's action (an annotation demo,
  executed), and a plan rejected on a random-only query is executed and only labelled; PIER
  weights the data by uncertainty, outcome and age (``pier=true``); a plan may cover
  ``plan_steps`` steps, one question for all of them: the one-step novice's rollout on a copy
  of the simulation (``plan=rollout``, the simulated teacher only) or a chunk the novice
  predicts at once (``plan=chunk``: a person judges it from its summary, on any robot);
- ``rlif``: the teacher takes over as in HG-DAgger, but the novice is an RL agent
  (:mod:`robolearn.rlif`) whose only reward is the takeover itself (-1 on the step that led
  into one), trained between rounds; it can end better than its teacher, since it learns to
  avoid what makes the teacher step in, not to copy the teacher's actions.

Every step goes into ``OUTPUT/session.zarr`` through the control loop with its provenance:
``interactive.event`` (:data:`robolearn.improve_data.EVENTS`), ``interactive.label`` (the
teacher's answer, NaN where none was asked), ``interactive.uncertainty`` and
``interactive.threshold`` at that moment, ``interactive.rejected`` (the novice's plan where the
teacher turned it down: took over, or annotated or rejected it; NaN elsewhere); each episode's
metadata names its round and method.
``OUTPUT/rounds.jsonl`` has one line a round (labels so far, queries, interventions, the
threshold, the success rate of the novice that ran it when ``eval_episodes`` > 0). Run the same
command again and an interrupted session resumes where it stopped (the novice is refitted from
the same data and seed).

Expert labels counted: DAgger every labelled step; HG-DAgger, ThriftyDAgger and RLIF every step
the teacher controls; ASkDAgger every query answered (validated, annotated or labelled).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from data.store import EpisodeStore
from policies.interactive import (
    EnsembleConfig,
    NoviceEnsemble,
    pier,
    quantile_threshold,
    sag_threshold,
)
from policies.thrifty_risk import RiskConfig, RiskQ
from robolearn.env import ENVS, RobotEnv, make_env
from robolearn.improve_config import ImproveConfig
from robolearn.improve_data import (
    ANNOTATED,
    NONE,
    REJECTED,
    TAKEOVER,
    VALIDATED,
    Data,
    History,
    aggregate,
    before_round,
    demo_store,
    extra_features,
    label_count,
    load_demos,
    obs_vector,
    sag_past,
    success_transitions,
)
from robolearn.improve_gate import Gate, Novice
from robolearn.loop import ControlLoop, LoopConfig, create_store
from robolearn.rlif import RLIFNovice
from robolearn.teacher import (
    HumanTeacher,
    SimulatedTeacher,
    Teacher,
    cannot_preview,
)
from robolearn_core.config import ConfigError
from robolearn_core.progress import console

log = logging.getLogger("robolearn.improve")

# --------------------------------------------------------------------------- rounds
class Session:
    """A resumable improve session in ``cfg.output``."""

    def __init__(self, cfg: ImproveConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.demos_path = demo_store(cfg.start)
        self.demos, self.meta, self.features = load_demos(self.demos_path)
        self.obs_keys = [k for k in self.features if k != "action"]
        env_id = cfg.env or self.meta.get("env_id")
        if env_id not in ENVS:
            raise ConfigError(f"env: {env_id!r} is not a registered env (start: "
                              f"{self.demos_path})")
        self.env_id = env_id
        self.overrides = dict(self.meta.get("env_overrides", {})) if cfg.env in (
            None, self.meta.get("env_id")) else {}
        if cfg.robot_kwargs:
            self.overrides["robot_kwargs"] = {**ENVS[env_id].get("robot_kwargs", {}),
                                              **self.overrides.get("robot_kwargs", {}),
                                              **cfg.robot_kwargs}
        if cfg.max_steps is not None:
            self.overrides["max_steps"] = cfg.max_steps
        if cfg.plan_steps > 1 and cfg.teacher == "expert":  # before the output exists: a
            # refused session leaves nothing
            env = self.make_env()
            try:
                why = cannot_preview(env)
            finally:
                env.close()
            if why:
                raise ConfigError(f"plan_steps: {cfg.plan_steps}: a plan is previewed on a copy "
                                  f"of {env_id}'s simulation, and {why}: use plan_steps=1")
        self.horizon = cfg.plan_steps if cfg.plan == "chunk" else 1  # the novice's chunk
        self._rlif: RLIFNovice | None = None  # rlif: the learner, kept across rounds
        self._risk: RiskQ | None = None  # thrifty: the risk critic, kept across rounds
        self.rounds_path = self.out / "rounds.jsonl"
        self.store_path = self.out / "session.zarr"
        marker = self.out / "improve.json"
        if self.out.exists() and any(self.out.iterdir()) and not marker.exists():
            raise ConfigError(f"output: {self.out} exists and is not an improve session; "
                              "choose another")
        self.out.mkdir(parents=True, exist_ok=True)
        if marker.exists():
            before = json.loads(marker.read_text())
            if before.get("method") != cfg.method or before.get("start") != str(cfg.start):
                raise ConfigError(f"output: {self.out} holds a {before.get('method')} session "
                                  f"from {before.get('start')}; resume it with the same start "
                                  "and method, or choose another output")
            was = before.get("config", {})
            then = (was.get("plan", "rollout"), was.get("plan_steps", 1),
                    was.get("fit_every", "round"))
            if then != (cfg.plan, cfg.plan_steps, cfg.fit_every):
                raise ConfigError(f"output: {self.out} holds a session with plan={then[0]} "
                                  f"plan_steps={then[1]} fit_every={then[2]}; resume it with "
                                  "those, or choose another output")
        else:
            marker.write_text(json.dumps({"method": cfg.method, "start": str(cfg.start),
                                          "config": asdict(cfg)}, indent=1, default=str))

    def make_env(self) -> RobotEnv:
        return make_env(**{**ENVS[self.env_id], **self.overrides})

    def done_rounds(self) -> list[dict[str, Any]]:
        if not self.rounds_path.exists():
            return []
        return [json.loads(line) for line in self.rounds_path.read_text().splitlines() if line]

    def fit(self, data: Data, round_index: int, n_demos: int, grown: int = 0
            ) -> NoviceEnsemble:
        """The novice on ``data``; ``grown``: labelled steps gathered since the round began
        (``fit_every=episode``; seeded by it, so a resumed round refits the same novice)."""
        c = self.cfg
        ens = NoviceEnsemble(self.features,
                             EnsembleConfig(**{**asdict(c.ensemble),
                                               "seed": c.seed * 101 + round_index
                                               + 7_919 * grown,
                                               "horizon": self.horizon}))
        probs = weights = None
        if c.method == "askdagger" and c.pier and (round_index > 0 or n_demos > 0):
            probs, weights = pier(data.u, data.age, data.r, n_demos, c.pier_config)
        ens.fit(data.obs, data.act, weights=weights, probs=probs)
        return ens

    def threshold(self, ens: Novice, hist: dict[str, np.ndarray], round_index: int,
                  rng: np.random.Generator) -> float:
        c = self.cfg
        if c.method == "thrifty" and isinstance(ens, NoviceEnsemble):
            if hist and (hist["interactive.event"] == NONE).sum() > 25:
                auto = hist["interactive.event"] == NONE
                return quantile_threshold(hist["interactive.uncertainty"][auto], c.alpha)
            n = len(self.demos.act)  # held-out 10% of the demonstrations
            held = np.random.default_rng(c.seed).choice(n, max(n // 10, 1), replace=False)
            _, nov = ens.predict({k: v[held] for k, v in self.demos.obs.items()})
            return quantile_threshold(nov, c.alpha)
        if c.method == "askdagger":
            if not hist:
                return 0.0  # no outcomes known yet: ask about everything (as SAG does)
            return sag_threshold(*sag_past(hist), round_index, c.sag, rng)
        return float("nan")

    def fit_rlif(self, k: int, store: EpisodeStore, env: RobotEnv) -> RLIFNovice:
        """RLIF's learner after round ``k - 1``: built (BC on the demonstrations) or restored
        from ``OUTPUT/rlif`` once, then trained on the episodes collected since its last fit;
        saved after each fit, so a resumed session goes on from the same learner."""
        if self._rlif is None:
            low, high = env.robot.action_bounds
            self._rlif = RLIFNovice(self.features, np.asarray(low), np.asarray(high),
                                    self.cfg.rlif, self.cfg.seed, self.demos.obs)
            if not self._rlif.restore(self.out / "rlif"):
                with EpisodeStore.open(self.demos_path, "r") as demos:
                    lengths = [demos.info(i).length for i in range(len(demos))]
                self._rlif.pretrain(self.demos.obs, self.demos.act, lengths)
        nv = self._rlif
        if nv.round >= k:  # resumed after this round's fit
            return nv
        added = nv.read(store, TAKEOVER)
        nv.learn(int(round(self.cfg.rlif.updates * added)))
        nv.round = k
        nv.save(self.out / "rlif")
        return nv

    def fit_risk(self, k: int, ens: NoviceEnsemble, store: EpisodeStore,
                 hist: dict[str, np.ndarray]) -> tuple[RiskQ | None, float, float]:
        """ThriftyDAgger's risk critic, trained further on every episode so far (the
        demonstrations and the session's, robot and teacher steps alike; the next action is
        this round's novice's), and its thresholds: the alpha-quantile of Q(s, plan) over the
        earlier rounds' autonomous steps to hand over, their median to hand back (Thrifty's
        a-priori 0.48 and 0.495 until 25 such steps exist). None until an episode has
        succeeded: a critic that has seen no success values everything near 0 and would keep
        the teacher in control for good. Checkpointed in ``OUTPUT/thrifty/risk.pt`` with the
        round it was fitted for and its thresholds: a resumed round reuses them, a later one
        goes on training it, as an uninterrupted session would."""
        import torch

        path = self.out / "thrifty" / "risk.pt"
        saved = torch.load(path, weights_only=True) if self._risk is None and \
            path.exists() else None
        if saved is not None and saved["round"] > k:  # not this session's past: start afresh
            saved = None
        keys = ens.obs_keys
        x, a, nxt, reward, done = success_transitions(self.demos_path, store, keys, k)
        if not reward.any():
            return None, float("nan"), float("nan")
        if self._risk is None:
            self._risk = RiskQ(x.shape[1], a.shape[1], RiskConfig(
                **{**asdict(self.cfg.risk_config), "seed": self.cfg.seed}))
            if saved is not None:
                try:
                    self._risk.load_state_dict(saved["critic"])
                except (RuntimeError, ValueError, KeyError) as e:
                    raise ConfigError(f"risk_config: {path} holds a critic these settings "
                                      f"cannot continue ({str(e).splitlines()[0]}); resume "
                                      "with the session's own risk_config") from None
                if saved["round"] == k:  # this round's critic: resume it as it was
                    return self._risk, saved["risk_threshold"], saved["risk_back"]
        self._risk.fit(x, a, obs_vector(nxt, keys), ens.predict(nxt)[0], reward, done)
        risk_thr, back_thr = 0.48, 0.495
        if hist and (hist["interactive.event"] == NONE).sum() > 25:
            auto = hist["interactive.event"] == NONE
            obs = {k: hist[k][auto] for k in keys}
            q = self._risk.value(obs_vector(obs, keys), ens.predict(obs)[0])
            risk_thr, back_thr = float(np.quantile(q, self.cfg.alpha)), float(np.median(q))
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"round": k, "risk_threshold": risk_thr, "risk_back": back_thr,
                    "critic": self._risk.state_dict()}, tmp)
        tmp.replace(path)  # atomic: a crash leaves the previous round's critic
        return self._risk, risk_thr, back_thr

    def kept(self, done: list[dict[str, Any]]) -> tuple[int, float]:
        """``keep=fewest_takeovers``: the round whose fit is kept so far and its teacher's
        share of steps (-1, inf before any round has collected)."""
        best = (-1, float("inf"))
        for r in done:
            if r.get("kept"):
                best = (r["round"], _teacher_share(r))
        return best

    def keep_fit(self, ens: Novice) -> None:
        """Save the fit that drove this round as ``OUTPUT/kept`` (a policy directory for RLIF,
        the ensemble's members otherwise), replacing the one kept before only once written:
        two renames, then the delete, so a crash anywhere leaves a whole kept fit."""
        import shutil

        tmp, path, old = self.out / "kept.tmp", self.out / "kept", self.out / "kept.old"
        self._recover_kept()
        for scratch in (tmp, old):  # robolearn's own scratch copies
            shutil.rmtree(scratch, ignore_errors=True)
        (ens.agent.actor if isinstance(ens, RLIFNovice) else ens).save(tmp)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    def _recover_kept(self) -> None:  # killed between keep_fit's renames: kept.old is it
        if not (self.out / "kept").exists() and (self.out / "kept.old").exists():
            (self.out / "kept.old").rename(self.out / "kept")

    def load_kept(self) -> Any:
        """The kept fit as a callable ``obs -> action`` for :meth:`evaluate`."""
        self._recover_kept()
        if self.cfg.method == "rlif":
            from policies.base import Policy

            return Policy.load(self.out / "kept")
        return NoviceEnsemble.load(self.out / "kept")

    def evaluate(self, novice: Any, env: RobotEnv) -> float:
        loop = ControlLoop(env, LoopConfig(realtime=False))
        act: Callable[[dict[str, np.ndarray]], np.ndarray]
        if isinstance(novice, RLIFNovice):
            act = novice.greedy
        elif isinstance(novice, NoviceEnsemble):
            act = novice.runner()  # a chunk novice executes each plan whole
        else:  # a saved policy (its bound method: the loop resets it each episode)
            act = novice.select_action
        ok = 0
        for i in range(self.cfg.eval_episodes):
            r = loop.run_episode(act, seed=self.cfg.eval_seed + i, record=False)
            ok += bool(r.success)
        return ok / self.cfg.eval_episodes

    def run(self) -> list[dict[str, Any]]:
        c = self.cfg
        env = self.make_env()
        done = self.done_rounds()
        store = None
        try:
            if (self.store_path / "zarr.json").exists():
                store = EpisodeStore.open(self.store_path, "a")
            else:
                store = create_store(str(self.store_path), env, self.env_id, self.overrides,
                                     extra_features(env.robot.action_feature.shape[0]),
                                     start=str(self.demos_path), method=c.method)
            teacher: Teacher
            human: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if c.teacher == "human":
                from hardware.teleop import make_teleop

                teleop = make_teleop(c.teleop, env.robot, **c.teleop_config)
                names = list(env.robot.action_feature.names or [])
                teacher = HumanTeacher(teleop, names, query_timeout_s=c.query_timeout_s)
                human = teleop  # connected for the session, always disconnected
            else:
                teacher = SimulatedTeacher(env, c.teacher_config)
            history = History(self.obs_keys)
            task = env.task.description or env.task.name
            with human, store, store.recorder(task=task, background=True) as rec:
                # resume after the last round that collected (a final fit's row collects nothing)
                for k in range(sum("labels_after" in r for r in done), c.rounds + 1):
                    # what came before this round (a round resumed part-way fits the
                    # novice it began with, and the episodes it has are this round's)
                    hist = before_round(history.update(store), k)
                    data = aggregate(self.demos, hist, self.horizon)
                    rng = np.random.default_rng(c.seed * 7_919 + k)
                    ens: Novice = (self.fit_rlif(k, store, env) if c.method == "rlif" else
                                   self.fit(data, k, int((data.age > 0).sum())))
                    row: dict[str, Any] = {"round": k, "labels": label_count(hist),
                                           "demo_steps": int(len(self.demos.act)),
                                           "data": int(len(data.act))}
                    if c.eval_episodes and (k % c.eval_every == 0 or k == c.rounds):
                        row["success"] = self.evaluate(ens, env)
                    if k == c.rounds:  # the last fit: evaluated, nothing more collected
                        ens.save(self.out / "novice")
                        kept_round, _ = self.kept(done)
                        if c.keep != "last" and kept_round >= 0:
                            row["kept_round"] = kept_round
                            if "success" in row:
                                row["success_last"] = row["success"]
                                row["success"] = self.evaluate(self.load_kept(), env)
                        self._log(row)
                        done.append(row)
                        break
                    thr = self.threshold(ens, hist, k, rng)
                    row["threshold"] = None if np.isnan(thr) else thr
                    gate = Gate(c, ens, teacher, k, thr, rng, env.robot.action_feature.shape[0])
                    if c.plan_steps > 1 and isinstance(teacher, SimulatedTeacher):
                        gate.preview = functools.partial(teacher.preview, env,
                                                         steps=c.plan_steps)
                    if c.method == "thrifty" and c.risk and isinstance(ens, NoviceEnsemble):
                        gate.risk, gate.risk_thr, gate.back_thr = self.fit_risk(k, ens, store,
                                                                                hist)
                        if gate.risk is not None:
                            row.update(risk_threshold=gate.risk_thr, risk_back=gate.back_thr)
                    # a person watches and drives at the robot's rate; the simulated teacher
                    # needs no clock
                    loop = ControlLoop(env, LoopConfig(realtime=c.teacher == "human"), rec)
                    # a session begun by an older robolearn lacks newer columns
                    # (interactive.rejected): it goes on recording the ones it has
                    gate.columns = set(store.features)
                    have = sum(1 for i in range(len(store))
                               if store.info(i).metadata.get("round") == k)
                    fitted, row["fits"] = len(data.act), 1
                    for e in range(have, c.episodes):
                        if c.fit_every == "episode" and e > 0:  # the data so far, now
                            now = aggregate(self.demos, history.update(store), self.horizon)
                            if len(now.act) > fitted:  # (the same fit on a resumed round)
                                ens = self.fit(now, k, int((now.age > 0).sum()),
                                               len(now.act) - len(data.act))
                                gate.novice, fitted = ens, len(now.act)
                                row["fits"] += 1
                        # each episode its own stream: a round resumed at an episode
                        # reproduces the uninterrupted one's random queries and imputations
                        gate.rng = np.random.default_rng([c.seed, k, e])
                        if c.method == "askdagger":  # SAG follows every outcome (Gate._sag)
                            gate.sag_past = sag_past(history.update(store))
                        loop.run_episode(gate, gate, seed=c.seed * 1_000 + k * 100 + e,
                                         step_extras=gate.extras, round=k, method=c.method)
                    h = history.update(store)
                    sel = h["round"] == k
                    ev = h["interactive.event"][sel]
                    row.update({"labels_after": label_count(h), "steps": int(sel.sum()),
                                "queries": int(np.isin(ev, (VALIDATED, ANNOTATED, REJECTED)).sum()),
                                "takeovers": int((ev == TAKEOVER).sum())})
                    if c.keep == "fewest_takeovers" and \
                            _teacher_share(row) <= self.kept(done)[1]:
                        self.keep_fit(ens)
                        row["kept"] = True
                    self._log(row)
                    done.append(row)
        finally:
            env.close()
        return done

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.rounds_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        parts = [f"round {row['round']}", f"labels {row.get('labels_after', row['labels'])}"]
        if "success" in row:
            parts.append(f"novice success {100 * row['success']:.0f}%")
        if "kept_round" in row:
            parts.append(f"the fit of round {row['kept_round']} kept (OUTPUT/kept)"
                         + (f"; the last fit: {100 * row['success_last']:.0f}%"
                            if "success_last" in row else ""))
        elif row.get("kept"):
            parts.append("its fit kept")
        if "queries" in row:
            parts.append(f"queries {row['queries']}, takeovers {row['takeovers']}")
        console.print(", ".join(parts))


def _teacher_share(row: dict[str, Any]) -> float:
    """A collecting round's share of steps the teacher drove (``keep=fewest_takeovers``)."""
    return float(row["takeovers"] / max(row["steps"], 1))


def run(cfg: ImproveConfig) -> int:
    import torch

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    Session(cfg).run()
    return 0
