"""The data side of ``robolearn improve``: the per-step event codes, the demonstrations, the
session's history as the novice learns from it, and the features each step records."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from data.schema import Feature
from data.store import EpisodeStore
from policies.interactive import chunk_targets
from robolearn_core.config import ConfigError

# interactive.event codes
NONE, LABELLED, TAKEOVER, VALIDATED, ANNOTATED, REJECTED = 0, 1, 2, 3, 4, 5
# ASkDAgger with plans of several steps (``plan_steps``): the steps after a plan's first, which
# was the decision (asked about or not); they are not queries, labels or SAG outcomes
PLANNED, FOLLOWED = 6, 7
EVENTS = {NONE: "novice acted, nobody asked", LABELLED: "teacher labelled (DAgger)",
          TAKEOVER: "teacher in control", VALIDATED: "queried: plan accepted, executed",
          ANNOTATED: "queried: plan rejected, teacher's action executed",
          REJECTED: "random query: plan rejected, executed and labelled",
          PLANNED: "a later step of an accepted plan: executed, a validation demo",
          FOLLOWED: "a later step of a plan not asked about (or rejected at random)"}


# --------------------------------------------------------------------------- data
def demo_store(start: str) -> Path:
    p = Path(start)
    if (p / "zarr.json").exists():
        return p
    meta = p / "dataset.json"
    if meta.exists():
        return Path(json.loads(meta.read_text())["dataset"])
    raise ConfigError(f"start: {start} is neither an episode store nor a training run (no "
                      "dataset.json)")


@dataclass
class Data:
    """Everything the novice learns from: demonstrations plus what the session gathered."""

    obs: dict[str, np.ndarray]  # low-dimensional observation key -> (N, ...)
    act: np.ndarray  # (N, A)
    u: np.ndarray  # (N,) uncertainty when collected (0: offline)
    r: np.ndarray  # (N,) +1 validated, -1 annotation (the novice was wrong), 0 offline/other
    age: np.ndarray  # (N,) round it came from (0: offline)
    episode: np.ndarray  # (N,) which episode (demonstrations first, then the session's)


def obs_keys(features: dict[str, Feature]) -> list[str]:
    """The observations the novice learns from: every low-dimensional one."""
    return sorted(k for k, f in features.items() if k.startswith("observation.") and not f.image)


def load_demos(path: Path) -> tuple[Data, dict[str, Any], dict[str, Feature]]:
    with EpisodeStore.open(path, "r") as store:
        keys = obs_keys(store.features)
        if not keys:
            raise ConfigError(f"start: {path} has no low-dimensional observation")
        eps = [store.episode(i, [*keys, "action"]) for i in range(len(store))]
        if not eps:
            raise ConfigError(f"start: {path} has no episodes")
        obs = {k: np.concatenate([e[k] for e in eps]).astype(np.float32) for k in keys}
        act = np.concatenate([e["action"] for e in eps]).astype(np.float32)
        episode = np.concatenate([np.full(len(e["action"]), i) for i, e in enumerate(eps)])
        meta = dict(store.metadata)
        features = {k: store.features[k] for k in [*keys, "action"]}
    n = len(act)
    return Data(obs, act, np.zeros(n), np.zeros(n), np.zeros(n), episode), meta, features


class History:
    """Per step of the session store: observations, label, event, uncertainty, round. Each
    :meth:`update` reads only the episodes committed since the last one (the session reads its
    history at every round and, for ASkDAgger, after every episode)."""

    def __init__(self, observations: list[str]) -> None:
        self.keys = [*observations, "interactive.label", "interactive.event",
                     "interactive.uncertainty", "interactive.threshold", "action"]
        self._parts: dict[str, list[np.ndarray]] = {k: [] for k in [*self.keys, "round",
                                                                     "episode"]}
        self._read = 0  # episodes read so far
        self._arrays: dict[str, np.ndarray] = {}

    def update(self, store: EpisodeStore) -> dict[str, np.ndarray]:
        """The whole history ({} before the first episode), with the store's new episodes."""
        if len(store) == self._read:
            return self._arrays
        for i in range(self._read, len(store)):
            ep = store.episode(i, self.keys)
            for k in self.keys:
                self._parts[k].append(ep[k])
            self._parts["round"].append(np.full(len(ep["action"]),
                                                int(store.info(i).metadata.get("round", 0))))
            self._parts["episode"].append(np.full(len(ep["action"]), i))
        self._read = len(store)
        self._arrays = {k: np.concatenate(v) for k, v in self._parts.items()}
        return self._arrays


def aggregate(demos: Data, hist: dict[str, np.ndarray], horizon: int = 1) -> Data:
    """Demonstrations plus the session's labelled steps (validation demos carry the accepted
    plan, annotations and teacher control the teacher's action; a random-only rejection is a
    label for SAG, not a demonstration). ``horizon`` > 1: each step's action is the chunk of
    its own and the next steps' labels in its episode (``(N, horizon, A)``, NaN where a later
    step has none: a novice that plans chunks, ``plan=chunk``)."""
    ev = hist["interactive.event"] if hist else np.zeros(0, np.int8)
    if ev.size == 0:
        return demos if horizon == 1 else replace(
            demos, act=chunk_targets(demos.act, demos.episode, horizon))
    keep = np.isin(ev, (LABELLED, TAKEOVER, VALIDATED, ANNOTATED, PLANNED))
    label = np.where(keep[:, None], hist["interactive.label"], np.nan).astype(np.float32)
    episodes = np.concatenate([demos.episode,
                               hist["episode"] + int(demos.episode.max(initial=-1)) + 1])
    act = np.concatenate([demos.act, label])
    if horizon > 1:
        act = chunk_targets(act, episodes, horizon)
    at = np.concatenate([np.ones(len(demos.act), bool), keep])
    r = np.where(np.isin(ev, (VALIDATED, PLANNED)), 1.0,
                 np.where(ev == ANNOTATED, -1.0, 0.0))[keep]
    return Data({k: np.concatenate([v, hist[k][keep]]) for k, v in demos.obs.items()},
                act[at], np.concatenate([demos.u, hist["interactive.uncertainty"][keep]]),
                np.concatenate([demos.r, r]),
                np.concatenate([demos.age, hist["round"][keep] + 1.0]), episodes[at])


def before_round(hist: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """The history's steps from rounds before ``k`` ({} if none)."""
    keep = hist["round"] < k if hist else None
    if keep is None or keep.all():
        return hist
    return {key: v[keep] for key, v in hist.items()} if keep.any() else {}


def label_count(hist: dict[str, np.ndarray]) -> int:
    if not hist:
        return 0
    return int(np.isin(hist["interactive.event"], (LABELLED, TAKEOVER, VALIDATED, ANNOTATED,
                                                   REJECTED)).sum())


def obs_vector(obs: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    """The novice's observations as one vector per step (``(..., D)``)."""
    return np.concatenate([np.asarray(obs[k], np.float32).reshape(
        *np.shape(obs[k])[:np.ndim(obs[k]) - 1 if np.ndim(obs[k]) else 0], -1)
        for k in keys], -1)


def extra_features(action_dim: int) -> dict[str, Feature]:
    return {"interactive.event": Feature("int8", ()),
            "interactive.label": Feature("float32", (action_dim,)),
            "interactive.uncertainty": Feature("float32", ()),
            "interactive.threshold": Feature("float32", ()),
            # the novice's plan the teacher turned down by stepping in (a takeover's first
            # step, ThriftyDAgger's hand-over, an annotated or rejected query); NaN elsewhere
            "interactive.rejected": Feature("float32", (action_dim,))}


def sag_past(hist: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SAG's inputs from the session's history: uncertainty, outcome (+1 the plan was
    validated, -1 annotated or rejected, 0 not asked) and round, per decision (every step, or
    each plan's first with ``plan_steps`` > 1)."""
    if not hist:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    ev = hist["interactive.event"]
    at = ~np.isin(ev, (PLANNED, FOLLOWED))
    ev = ev[at]
    label = np.where(ev == VALIDATED, 1, np.where(np.isin(ev, (ANNOTATED, REJECTED)), -1, 0))
    return (hist["interactive.uncertainty"][at].astype(np.float64), label.astype(np.int64),
            hist["round"][at].astype(np.int64))


def success_transitions(demos_path: Path, store: EpisodeStore, keys: list[str],
                        before: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray,
                                   np.ndarray]:
    """Every step of the demonstrations and the session (robot and teacher steps alike) as
    ``(x, a, next observations, reward, done)`` for ThriftyDAgger's risk critic: reward 1 on
    the last step of a successful episode, ``done`` on every episode's last step; with
    ``before``, only the session's episodes of earlier rounds (a round resumed part-way)."""
    eps: list[tuple[dict[str, np.ndarray], np.ndarray, bool]] = []
    demos = EpisodeStore.open(demos_path, "r")
    try:
        for s in (demos, store):
            for i in range(len(s)):
                if s is store and before is not None and \
                        int(s.info(i).metadata.get("round", 0)) >= before:
                    continue
                ep = s.episode(i, [*keys, "action"])
                if len(ep["action"]):
                    eps.append(({k: np.asarray(ep[k], np.float32) for k in keys},
                                np.asarray(ep["action"], np.float32), bool(s.info(i).success)))
    finally:
        demos.close()
    nxt = {k: np.concatenate([np.concatenate([o[k][1:], o[k][-1:]]) for o, _, _ in eps])
           for k in keys}  # an episode's last step is terminal: its next is unused
    x = np.concatenate([obs_vector(o, keys) for o, _, _ in eps])
    a = np.concatenate([act for _, act, _ in eps])
    ends = np.cumsum([len(act) for _, act, _ in eps]) - 1
    done = np.zeros(len(a), np.float32)
    done[ends] = 1.0
    reward = np.zeros(len(a), np.float32)
    reward[ends[[ok for _, _, ok in eps]]] = 1.0  # success: reward 1 where it ends
    return x, a, nxt, reward, done
