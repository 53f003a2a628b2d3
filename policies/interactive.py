"""The learning parts of interactive imitation (DAgger, HG-DAgger, ThriftyDAgger, ASkDAgger):
a bootstrap ensemble of MLP policies that reports its own uncertainty, DAgger's beta schedules,
ASkDAgger's S-Aware Gating (SAG) threshold and PIER replay priorities, and ThriftyDAgger's
thresholds from a target intervention rate. The loop that asks a teacher is the app's
(``robolearn/improve.py``); nothing here imports it.

References (``../shared/reference/interactive_and_practice.md``): ThriftyDAgger (Hoque et al.
2021: 5 bootstrapped MLPs, novelty = mean over action dimensions of the across-member variance,
thresholds from quantiles at rate alpha); ASkDAgger (Luijkx et al. 2025: SAG's three modes with
the random query probability, logistic imputation of unknown outcomes; PIER's priority
``1 - r (b^(1-c) - 1) / (b - 1)`` with ``c = lam u + (1 - lam)(1 - k / k_max)``, sampling
``p^alpha``, importance weights ``(1 / (N P))^beta / max``); DAgger (Ross et al. 2011: beta_i =
p^(i-1), or 1 in the first round only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.schema import Feature
from policies.mlp import MLPConfig, MLPPolicy
from robolearn_core.config import InvalidValue


# --------------------------------------------------------------------------- the novice
@dataclass
class EnsembleConfig:
    members: int = 5  # bootstrapped MLPs (ThriftyDAgger's num_nets)
    hidden_dim: int = 256  # width of each member's hidden layers
    n_layers: int = 2  # hidden layers per member
    steps: int = 1500  # gradient steps per member per fit (each fit trains from scratch)
    batch_size: int = 256  # samples per gradient step
    lr: float = 1e-3  # Adam learning rate
    # "constant", or "cosine": the rate decays to zero over the fit's steps, so a fit ends
    # on a settled solution rather than wherever its last noisy step left it
    lr_schedule: str = "constant"
    bootstrap: bool = True  # each member trains on a resample with replacement
    seed: int = 0  # seeds the resamples and the members' initialisation
    # the members predict the action as an offset from the first A entries of this
    # observation (MLPConfig.action_offset; the arm's teacher needs it: observation.state)
    action_offset: str | None = None
    # actions each member predicts at once (1: one step). ASkDAgger's plans as chunks
    # (``robolearn improve plan=chunk``): a plan of ``horizon`` steps a person can judge
    # without a simulator; executed open-loop once decided on (and so in evaluation and
    # deployment: each member saves with n_action_steps = horizon)
    horizon: int = 1

    def __post_init__(self) -> None:
        if self.members < 1 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0 \
                or self.horizon < 1:
            raise ValueError("EnsembleConfig: members, steps, batch_size, horizon >= 1 and "
                             "lr > 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InvalidValue("lr_schedule", f"{self.lr_schedule!r} is not 'constant' or "
                               "'cosine'")


class NoviceEnsemble:
    """``members`` MLP policies (robolearn's :class:`MLPPolicy`, one step in, ``horizon``
    steps out: one action, or a chunk) on the robot's low-dimensional observations
    (``observation.state``, and ``observation.environment_state`` where the robot has one: the
    arm's cube pose). ``act(obs)`` returns the members' mean (first) action and the novelty:
    the mean over action dimensions (and the chunk's steps) of the across-member variance, in
    normalised action units (comparable across robots and rounds); ``plan(obs)`` the whole
    mean chunk with it."""

    def __init__(self, features: dict[str, Feature], cfg: EnsembleConfig | None = None) -> None:
        self.cfg = cfg or EnsembleConfig()
        if "action" not in features:
            raise ValueError("NoviceEnsemble: features need an 'action'")
        self.features = dict(features)
        self.obs_keys = sorted(k for k in features if k.startswith("observation.")
                               and not features[k].image)
        if not self.obs_keys:
            raise ValueError("NoviceEnsemble: no low-dimensional observation to learn from")
        self.members: list[MLPPolicy] = []
        self.fits = 0

    def _policy(self, stats: dict[str, dict[str, np.ndarray]], seed: int) -> MLPPolicy:
        c = self.cfg
        mc = MLPConfig(obs_horizon=1, action_horizon=c.horizon, n_action_steps=c.horizon,
                       hidden_dim=c.hidden_dim, n_layers=c.n_layers, seed=seed,
                       action_offset=c.action_offset)
        feats = {k: self.features[k] for k in [*self.obs_keys, "action"]}
        return MLPPolicy(mc, feats, stats)  # type: ignore[arg-type]

    def fit(self, obs: dict[str, np.ndarray], act: np.ndarray, *,
            weights: np.ndarray | None = None, probs: np.ndarray | None = None
            ) -> dict[str, float]:
        """Train every member from scratch on ``obs`` (key -> (N, ...)) and ``act``: ``(N, A)``,
        or ``(N, horizon, A)`` chunks whose NaN entries are missing labels (left out of the
        loss; a chunk's first action must be known: :func:`chunk_targets`). ``probs`` (N,):
        sampling probabilities (PIER), ``weights`` (N,): per-sample loss weights (its
        importance weights); default uniform. Returns the final mean loss."""
        act = np.asarray(act, np.float32)
        if act.ndim == 2:
            act = act[:, None]
        n, h = len(act), self.cfg.horizon
        if n == 0 or any(len(obs[k]) != n for k in self.obs_keys):
            raise ValueError(f"fit: {n} actions and observations of "
                             f"{[len(obs[k]) for k in self.obs_keys]} steps")
        if act.shape[1] != h or not np.isfinite(act[:, 0]).all():
            raise ValueError(f"fit: actions of {act.shape[1]} steps for a horizon of {h}, "
                             "or an unknown first action")
        act = act - np.asarray(self._ref(obs), np.float32)[..., None, :] \
            if self.cfg.action_offset else act  # offsets from the current state
        known = np.isfinite(act).all(-1)  # (N, H)
        obs_t = {k: torch.as_tensor(obs[k], dtype=torch.float32) for k in self.obs_keys}
        act_t = torch.as_tensor(np.nan_to_num(act), dtype=torch.float32)
        known_t = torch.as_tensor(known, dtype=torch.float32)
        w_t = torch.as_tensor(np.ones(n) if weights is None else weights, dtype=torch.float32)
        flat = act[known]
        stats = {k: {"mean": v.mean(0), "std": v.std(0) + 1e-6, "min": v.min(0),
                     "max": v.max(0)}
                 for k, v in [*((k, np.asarray(obs[k])) for k in self.obs_keys),
                              ("action", flat)]}
        c = self.cfg
        gen = np.random.default_rng(c.seed * 7919 + self.fits)
        p = None if probs is None else np.asarray(probs, dtype=np.float64) / np.sum(probs)
        self.members, losses = [], []
        for m in range(c.members):
            torch.manual_seed(c.seed * 1009 + self.fits * 31 + m)
            policy = self._policy(stats, seed=c.seed + m)
            policy.train()
            idx = gen.choice(n, n, replace=True, p=p) if c.bootstrap or p is not None \
                else np.arange(n)
            opt = torch.optim.Adam(policy.parameters(), lr=c.lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.steps) \
                if c.lr_schedule == "cosine" else None
            loss = torch.zeros(())
            for _ in range(c.steps):
                b = idx[gen.integers(0, len(idx), min(c.batch_size, len(idx)))]
                batch = {k: v[b][:, None] for k, v in obs_t.items()}
                target = policy.normalizer.normalize("action", act_t[b])  # (B, H, A)
                pred = policy._forward(batch).reshape(target.shape)
                mask = known_t[b]  # (B, H): a chunk's missing labels teach nothing
                err = ((pred - target).square().mean(-1) * mask).sum(-1) / mask.sum(-1)
                loss = (err * w_t[b]).sum() / w_t[b].sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
            policy.eval()
            self.members.append(policy)
            losses.append(float(loss.detach()))
        self.fits += 1
        return {"loss": float(np.mean(losses))}

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Mean chunks ``(B, horizon, A)`` and novelty ``(B,)`` (the across-member variance,
        averaged over the chunk's steps and action dimensions) for observations key ->
        ``(B, ...)``."""
        if not self.members:
            raise RuntimeError("NoviceEnsemble: fit() it first")
        x = {k: torch.as_tensor(np.asarray(obs[k]), dtype=torch.float32)[:, None]
             for k in self.obs_keys}
        b, h = len(next(iter(x.values()))), self.cfg.horizon
        outs = torch.stack([m._forward(x).reshape(b, h, -1) for m in self.members])
        novelty = outs.var(0, unbiased=False).mean((-2, -1)) if len(self.members) > 1 \
            else torch.zeros(b)
        mean = self.members[0].normalizer.unnormalize("action", outs.mean(0))
        ref = np.asarray(self._ref(obs), np.float32)
        ref = ref[:, None] if np.ndim(ref) else ref
        return (mean.numpy() + ref).astype(np.float32), novelty.numpy()

    def predict(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Mean first actions ``(B, A)`` and novelty ``(B,)`` (:meth:`predict_chunk`)."""
        chunk, novelty = self.predict_chunk(obs)
        return chunk[:, 0], novelty

    def _ref(self, obs: dict[str, np.ndarray]) -> np.ndarray | float:
        """What the actions are offsets from, ``(N, A)`` (0 without ``action_offset``)."""
        key = self.cfg.action_offset
        if key is None:
            return 0.0
        if key not in self.obs_keys:
            raise ValueError(f"ensemble.action_offset: {key!r} is not one of the novice's "
                             f"observations {self.obs_keys}")
        return np.asarray(obs[key], np.float32)[:, :self.features["action"].shape[0]]

    def act(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        a, u = self.plan(obs)
        return a[0], u

    def plan(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Its plan from one observation: ``(horizon, A)`` actions and their novelty."""
        a, u = self.predict_chunk({k: np.asarray(obs[k])[None] for k in self.obs_keys})
        return a[0], float(u[0])

    def runner(self) -> ChunkRunner:
        """The novice alone, as evaluation and deployment run it: each plan executed whole."""
        return ChunkRunner(self)

    def save(self, directory: str | Path) -> Path:
        """Each member as a robolearn policy (``member_<i>``): ``member_0`` deploys as is."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members):
            m.save(out / f"member_{i}")
        return out

    @classmethod
    def load(cls, directory: str | Path, cfg: EnsembleConfig | None = None) -> NoviceEnsemble:
        from policies.base import Policy

        paths = sorted(Path(directory).glob("member_*"), key=lambda p: int(p.name.split("_")[1]))
        if not paths:
            raise FileNotFoundError(f"{directory}: no member_<i> policies")
        members = [Policy.load(p) for p in paths]
        first: Any = members[0]
        ens = cls(first.features, cfg or EnsembleConfig(
            action_offset=getattr(first.config, "action_offset", None),
            horizon=first.config.action_horizon))
        ens.members = members  # type: ignore[assignment]
        return ens


class ChunkRunner:
    """A :class:`NoviceEnsemble` acting alone: it plans, executes the whole plan open-loop,
    and plans again (one step at a time for a one-step novice); ``reset`` at each episode."""

    def __init__(self, novice: NoviceEnsemble) -> None:
        self.novice, self._queue = novice, list[np.ndarray]()

    def reset(self, seed: int | None = None) -> None:
        self._queue = []

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if not self._queue:
            self._queue = list(self.novice.plan(obs)[0])
        return self._queue.pop(0)


def chunk_targets(act: np.ndarray, episode: np.ndarray, horizon: int) -> np.ndarray:
    """Each step's label followed by the next ``horizon - 1`` steps' labels of the same
    episode, ``(N, horizon, A)`` from ``act (N, A)`` (NaN where a step has no label) and
    ``episode (N,)`` (steps of one episode contiguous and in order). A later step outside the
    episode, or unlabelled, is NaN: a missing label the fit leaves out, not a guess."""
    act = np.asarray(act, np.float32)
    n = len(act)
    out = np.full((n, horizon, act.shape[-1]), np.nan, np.float32)
    for j in range(min(horizon, n)):  # j >= n: no step has a label that far ahead
        same = np.zeros(n, bool)
        same[:n - j] = episode[j:] == episode[:n - j]
        out[same, j] = act[j:][same[:n - j]]
    return out


# --------------------------------------------------------------------------- DAgger
def beta(schedule: str, round_index: int, p: float = 0.5, rounds: int = 10) -> float:
    """DAgger's expert-mixing probability in round ``round_index`` (0-based): ``exponential``
    p^i, ``linear`` 1 - i / rounds, ``first`` 1 in round 0 then 0, ``none`` 0."""
    i = round_index
    if schedule == "exponential":
        return float(p ** i)
    if schedule == "linear":
        return max(0.0, 1.0 - i / max(rounds, 1))
    if schedule == "first":
        return 1.0 if i == 0 else 0.0
    if schedule == "none":
        return 0.0
    raise ValueError(f"beta schedule {schedule!r}: exponential, linear, first or none")


# --------------------------------------------------------------------------- ThriftyDAgger
def quantile_threshold(values: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile: a gate ``value > threshold`` fires on a share alpha of
    ``values`` (ThriftyDAgger's novelty threshold from the target intervention rate)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return 0.0
    return float(np.quantile(v, 1.0 - alpha))


# --------------------------------------------------------------------------- ASkDAgger: SAG
@dataclass
class SAGConfig:
    mode: str = "sensitivity"  # sensitivity | specificity | success
    target: float = 0.9  # sigma_des
    p_rand: float = 0.2  # random query probability (CLIPort's default)
    n_min: int = 15  # samples of the relevant class the window must hold
    n_rep: int = 10  # imputations of the unknown outcomes; the median threshold is used

    def __post_init__(self) -> None:
        if self.mode not in ("sensitivity", "specificity", "success"):
            raise ValueError(f"SAG mode {self.mode!r}: sensitivity, specificity or success")
        if not 0 < self.target < 1 or not 0 <= self.p_rand < 1:
            raise ValueError("SAG: target in (0, 1), p_rand in [0, 1)")
        if self.mode == "specificity" and self.target > 1 - self.p_rand:
            raise ValueError("SAG specificity: target must be <= 1 - p_rand")


def _logistic(u: np.ndarray, y: np.ndarray, iters: int = 200) -> tuple[float, float]:
    """P(failure | u) = sigmoid(a u + b) fitted by Newton's method (a small ridge keeps it
    finite when the classes separate)."""
    x = np.column_stack([u, np.ones_like(u)])
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        g = x.T @ (p - y) + 1e-3 * w
        h = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(2)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1])


def _gamma(u: np.ndarray, fail: np.ndarray, cfg: SAGConfig) -> float:
    """The threshold for fully labelled samples (query when u >= gamma)."""
    pr, s = cfg.p_rand, cfg.target
    if cfg.mode == "sensitivity":  # TPR + p_rand (1 - TPR) = s
        uf = np.sort(u[fail])
        if uf.size == 0:
            return float(np.max(u)) + 1e-9
        tpr = min(max((s - pr) / (1 - pr), 0.0), 1.0)
        # the largest gamma with a share >= tpr of failures at or above it
        k = int(math.floor((1 - tpr) * uf.size + 1e-9))
        return float(uf[min(k, uf.size - 1)]) if tpr > 0 else float(uf[-1]) + 1e-9
    if cfg.mode == "specificity":  # (1 - p_rand) TNR = s
        us = np.sort(u[~fail])
        if us.size == 0:
            return float(np.min(u))
        tnr = min(s / (1 - pr), 1.0)
        k = int(math.ceil(tnr * us.size - 1e-9))
        return float(us[k - 1]) + 1e-9 if k > 0 else float(us[0])
    # success: S + p_rand (1 - S) = s, S = 1 - (failures below gamma) / N
    miss_share = (1 - s) / (1 - pr)  # allowed share of all samples that are missed failures
    order = np.argsort(u)
    missed = np.cumsum(fail[order]) / u.size  # missed share if gamma is just above order[i]
    ok = np.nonzero(missed <= miss_share + 1e-12)[0]
    if ok.size == 0:
        return float(u[order[0]])
    i = int(ok[-1])
    return float(u[order[i]]) + 1e-9 if i + 1 < u.size else float(u[order[-1]]) + 1e-9


def sag_threshold(u: np.ndarray, label: np.ndarray, rounds: np.ndarray, current_round: int,
                  cfg: SAGConfig, rng: np.random.Generator) -> float:
    """SAG's threshold gamma from past steps: uncertainty ``u``, ``label`` (+1 the novice's
    plan was right, -1 wrong, 0 unknown: not queried) and the model ``rounds`` they came from.
    The window grows back from the current round until it holds ``n_min`` samples of the
    relevant class (failures; successes in specificity mode) and one of the other; unknown
    outcomes are imputed ``n_rep`` times from a logistic fit of P(failure | u) on the known
    ones, and the median threshold is returned. Without enough data: the smallest uncertainty
    seen (query nearly everything), as ASkDAgger does."""
    u, label, rounds = (np.asarray(x) for x in (u, label, rounds))
    if u.size == 0:
        return 0.0
    relevant = -1 if cfg.mode != "specificity" else 1
    window = None
    for back in range(0, current_round + 1):
        sel = rounds >= current_round - back
        known = label[sel]
        if (known == relevant).sum() >= cfg.n_min and (known == -relevant).sum() >= 1:
            window = sel
            break
    if window is None:
        return float(np.min(u))
    uw, lw = u[window].astype(np.float64), label[window]
    known = lw != 0
    if known.all():
        return _gamma(uw, lw == -1, cfg)
    a, b = _logistic(uw[known], (lw[known] == -1).astype(np.float64))
    p_fail = 1 / (1 + np.exp(-np.clip(a * uw[~known] + b, -30, 30)))
    gammas = []
    for _ in range(cfg.n_rep):
        fail = lw == -1
        fail[~known] = rng.random(p_fail.size) < p_fail
        gammas.append(_gamma(uw, fail, cfg))
    return float(np.median(gammas))


def realised_rate(u: np.ndarray, fail: np.ndarray, gamma: float, p_rand: float,
                  mode: str) -> float:
    """What SAG aims at, measured on fully labelled held-out steps: sensitivity (failures
    queried), specificity (successes not queried) or success (steps not lost to an unqueried
    failure), counting random queries at rate ``p_rand``."""
    q = u >= gamma
    if mode == "sensitivity":
        tpr = q[fail].mean() if fail.any() else 1.0
        return float(tpr + p_rand * (1 - tpr))
    if mode == "specificity":
        tnr = (~q[~fail]).mean() if (~fail).any() else 1.0
        return float((1 - p_rand) * tnr)
    s = 1 - (fail & ~q).mean()
    return float(s + p_rand * (1 - s))


# --------------------------------------------------------------------------- ASkDAgger: PIER
@dataclass
class PIERConfig:
    lam: float = 0.5  # weight of uncertainty vs age in the priority's c
    b: float = 10.0  # base of the priority's exponential in c
    alpha: float = 1.5  # sampling exponent
    beta0: float = 1.0  # importance-weight exponent at the start, annealed to 1
    anneal: int = 100  # interactive demos over which beta reaches 1


def pier(u: np.ndarray, age_round: np.ndarray, r: np.ndarray, n_demos: int,
         cfg: PIERConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sampling probabilities and importance weights of the replay entries. ``u``: the
    uncertainty when each entry was collected; ``age_round``: the model round it came from;
    ``r``: +1 validated success, -1 failure (an annotation: the novice was wrong), 0 offline
    or unknown (priority 1)."""
    u = np.asarray(u, dtype=np.float64)
    k = np.asarray(age_round, dtype=np.float64)
    un = u / u.max() if u.size and u.max() > 0 else np.zeros_like(u)
    kn = k / k.max() if k.size and k.max() > 0 else np.zeros_like(k)
    c = cfg.lam * un + (1 - cfg.lam) * (1 - kn)
    p = 1 - np.asarray(r, dtype=np.float64) * (cfg.b ** (1 - c) - 1) / (cfg.b - 1)
    p = np.maximum(p, 1e-6) ** cfg.alpha
    prob = p / p.sum()
    beta_now = cfg.beta0 + (1 - cfg.beta0) * min(n_demos / max(cfg.anneal, 1), 1.0)
    w = (1 / (len(prob) * prob)) ** beta_now
    return prob, w / w.max()


# --------------------------------------------------------------------------- RLIF
def rlif_transitions(obs: dict[str, np.ndarray], action: np.ndarray, takeover: np.ndarray,
                     failed: bool) -> dict[str, np.ndarray]:
    """One episode's steps -> RLIF's transitions (Luo, Dong et al. 2024), keyed like the RL
    replay's rows (``obs/<key>``, ``next_obs/<key>``, ``action``, ``reward``, ``done``,
    ``mc_return`` unknown) plus ``teacher`` (1 where the teacher chose the action).

    No task reward: the transition that led into a takeover (the step before each takeover's
    first step) gets reward -1, every other one 0. Every takeover step is kept, with the
    teacher's action and reward 0 (the reference code inserts only the last of each
    intervention). ``failed``: the episode terminated in failure (the robot needed a person
    anyway): its last step is kept as terminal with reward -1; otherwise the last step has no
    next state and is dropped (a truncated episode is bootstrapped, never ended)."""
    from policies.rl.replay import NO_MC

    n = len(action)
    takeover = np.asarray(takeover, bool)
    if len(takeover) != n or any(len(v) != n for v in obs.values()):
        raise ValueError(f"rlif_transitions: {n} actions, {len(takeover)} takeover flags, "
                         f"observations of {[len(v) for v in obs.values()]} steps")
    keep = n if failed else n - 1
    reward = np.zeros(n, np.float32)
    starts = np.flatnonzero(takeover[1:] & ~takeover[:-1])  # step i leads into a takeover
    reward[starts] = -1.0
    done = np.zeros(n, np.float32)
    if failed and n:
        reward[-1], done[-1] = -1.0, 1.0
    out: dict[str, np.ndarray] = {
        "action": np.asarray(action, np.float32)[:keep], "reward": reward[:keep],
        "done": done[:keep], "mc_return": np.full(max(keep, 0), NO_MC, np.float32),
        "teacher": takeover[:keep].astype(np.float32)}
    for k, v in obs.items():
        v = np.asarray(v, np.float32)
        out[f"obs/{k}"] = v[:keep]
        out[f"next_obs/{k}"] = np.concatenate([v[1:], v[-1:]])[:keep]
    return out


def rejected_transitions(obs: dict[str, np.ndarray], rejected: np.ndarray
                         ) -> dict[str, np.ndarray]:
    """The plans the teacher turned down by stepping in, as transitions with reward -1
    (RLIF's cost put on the action the gate judged, not only on the step before it): for each
    step ``t`` where ``rejected`` (the novice's plan, NaN where none) is finite, ``(s_t, plan,
    -1, s_t+1)``: the takeover is part of the novice's world, the plan brought the teacher in
    and the teacher moved the robot on to ``s_t+1``. Not terminal: a terminal -1 would be
    worth more than going on wherever more than one takeover lies ahead, an escape an actor
    could learn to seek. (Measured both ways on the car, biased teacher, 3 seeds: terminal
    0.85, 0.00, 0.93 laps, not terminal 0.10, 0.88, 0.01; the spread is the seeds', not this
    choice's.) The episode's last step has no next state and is dropped. Keyed as
    :func:`rlif_transitions`."""
    from policies.rl.replay import NO_MC

    rejected = np.asarray(rejected, np.float32)
    rows = np.flatnonzero(np.isfinite(rejected[:-1]).all(axis=-1))
    n = len(rows)
    out: dict[str, np.ndarray] = {
        "action": rejected[rows], "reward": np.full(n, -1.0, np.float32),
        "done": np.zeros(n, np.float32), "mc_return": np.full(n, NO_MC, np.float32),
        "teacher": np.zeros(n, np.float32)}
    for k, v in obs.items():
        v = np.asarray(v, np.float32)
        out[f"obs/{k}"], out[f"next_obs/{k}"] = v[rows], v[rows + 1]
    return out
