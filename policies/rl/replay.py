"""Transition replay on the learner's device.

A :class:`ReplayBuffer` holds ``capacity`` transitions as preallocated tensors on the device
(camera frames stay uint8): ``obs/<key>``, ``next_obs/<key>``, ``action`` (robot units),
``reward``, ``done`` (1 where the episode terminated, so no bootstrap) and ``mc_return``
(discounted return-to-go, for Cal-QL; ``NO_MC`` for online data, whose return is not
known when it is added). Sampling is one
``randint`` and one gather per key on the device: no host round trip per batch.

:func:`load_transitions` turns the episodes of an episode store into transitions. A step's next
observation is the following step's; the last step of an episode is kept only when the episode
terminated (its next observation is never used), since a truncated episode has no next state to
bootstrap from. Whether an episode terminated is read from its metadata (``terminated``, which
the RL runner writes); stores without it (scripted demos) count a successful episode of a task
whose success ends the episode as terminated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from data.schema import Feature
from data.store import EpisodeStore

NO_MC = -1e9  # mc_return of a transition whose Monte-Carlo return is unknown (online data)


class ReplayBuffer:
    def __init__(self, features: Mapping[str, Feature], capacity: int,
                 device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, torch.device(device)
        self.obs_keys = sorted(k for k in features if k.startswith("observation."))
        act = features["action"]
        specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "action": (act.shape, torch.float32), "reward": ((), torch.float32),
            "done": ((), torch.float32), "mc_return": ((), torch.float32)}
        for k in self.obs_keys:
            f = features[k]
            dtype = torch.uint8 if f.image else torch.float32
            specs[f"obs/{k}"] = specs[f"next_obs/{k}"] = (f.shape, dtype)
        self.data = {k: torch.zeros((capacity, *shape), dtype=dt, device=self.device)
                     for k, (shape, dt) in specs.items()}
        self.size = 0  # transitions held
        self.pos = 0  # where the next one goes (oldest overwritten first)

    def __len__(self) -> int:
        return self.size

    def add(self, obs: Mapping[str, Any], action: Any, reward: float, next_obs: Mapping[str, Any],
            done: bool) -> None:
        """One transition (numpy or tensors, one step each)."""
        row = {f"obs/{k}": obs[k] for k in self.obs_keys}
        row.update({f"next_obs/{k}": next_obs[k] for k in self.obs_keys})
        row.update(action=action, reward=reward, done=float(done), mc_return=NO_MC)
        for k, v in row.items():
            self.data[k][self.pos] = torch.as_tensor(v, dtype=self.data[k].dtype)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def extend(self, batch: Mapping[str, np.ndarray | Tensor]) -> None:
        """Many transitions at once (``batch`` has every key of ``data``, leading dim N)."""
        n = len(batch["reward"])
        for start in range(0, n, self.capacity):  # more than capacity: only the last ones stay
            stop = min(n, start + self.capacity)
            rows = ((self.pos + torch.arange(stop - start)) % self.capacity).to(self.device)
            for k, buf in self.data.items():
                buf[rows] = torch.as_tensor(
                    np.asarray(batch[k][start:stop]), dtype=buf.dtype).to(self.device)
            self.pos = int((self.pos + stop - start) % self.capacity)
            self.size = min(self.size + stop - start, self.capacity)

    def set_returns(self, first: int, returns: np.ndarray) -> None:
        """Write the Monte-Carlo returns of the ``len(returns)`` transitions added from ring
        position ``first`` on (one finished episode; those already overwritten are skipped)."""
        n = len(returns)
        keep = min(n, self.capacity)  # an episode longer than the ring overwrote its own start
        rows = (first + (n - keep) + torch.arange(keep)) % self.capacity
        self.data["mc_return"][rows.to(self.device)] = torch.as_tensor(
            np.asarray(returns[n - keep:], np.float32)).to(self.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (n,), device=self.device, generator=generator)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        # a copy, not a view: torch.save writes a view's whole storage, here the preallocated
        # capacity (a 25,000-transition checkpoint of a 1,000,000 buffer weighed 240 MB)
        return {"data": {k: v[: self.size].to("cpu", copy=True) for k, v in self.data.items()},
                "size": self.size, "pos": self.pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpoint replay holds {size} transitions, more than this "
                             f"buffer's capacity {self.capacity}")
        pos, shift = int(state["pos"]), 0
        if size < self.capacity:  # into a larger buffer (a run continued with a larger budget):
            # oldest first (a no-op unless the ring had wrapped), the next transition after them
            shift, pos = -pos, size
        for k, v in self.data.items():
            v[:size] = state["data"][k].to(self.device).roll(shift, 0)
        self.size, self.pos = size, pos


def episode_terminated(info: Any, success_terminates: bool) -> bool:
    meta = info.metadata or {}
    if "terminated" in meta:
        return bool(meta["terminated"])
    return bool(info.success) and success_terminates and info.complete


def absorbing_reward(reward: float, gamma: float) -> float:
    """The reward of a step that ends the episode in success, with success treated as an
    absorbing state that keeps paying this step's reward: ``r / (1 - gamma)``. Without it an
    agent paid shaping terms per step learns to hover short of success (a lifted-but-not-
    quite cube pays more over 200 steps than the one-off success term)."""
    return reward / (1.0 - gamma)


def discounted_returns(rewards: Sequence[float] | np.ndarray, gamma: float) -> np.ndarray:
    """Return-to-go of each step of one episode: ``sum_k gamma^k r_{t+k}`` to its end (to the
    cut, for a truncated episode: Cal-QL's Monte-Carlo lower bound, offline and online alike)."""
    mc = np.zeros(len(rewards), np.float32)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        mc[t] = acc
    return mc


def mixed_batch(online: ReplayBuffer, offline: ReplayBuffer | None, utd: int, batch_size: int,
                offline_ratio: float, generator: torch.Generator | None = None
                ) -> dict[str, Tensor]:
    """``utd`` minibatches of ``batch_size``, each ``offline_ratio`` from ``offline`` (RLPD's
    symmetric sampling; marked ``offline`` = 1) and the rest from ``online``; ``offline`` None:
    all online."""
    n_off = round(batch_size * offline_ratio) if offline is not None else 0
    on = online.sample(utd * (batch_size - n_off), generator)
    if n_off == 0 or offline is None:
        return on
    off = offline.sample(utd * n_off, generator)
    off["offline"] = torch.ones(utd * n_off, device=online.device)
    on["offline"] = torch.zeros(utd * (batch_size - n_off), device=online.device)
    return {k: torch.cat([off[k].unflatten(0, (utd, n_off)),
                          on[k].unflatten(0, (utd, batch_size - n_off))], 1).flatten(0, 1)
            for k in on}


def learner_reward(reward: float, terminated: bool, step_info: dict[str, Any],
                   success_terminates: bool, gamma: float, absorbing_success: bool = True
                   ) -> float:
    """The reward the learner sees for one env step: :func:`absorbing_reward` when success is
    what ended the episode, the env's reward otherwise. Success alone is not enough: where it
    does not end episodes (the car: success is sticky once a lap is done), a termination is a
    failure (a flip), and paying it ``r / (1 - gamma)`` would reward flipping after a lap."""
    if (absorbing_success and terminated and success_terminates and step_info["success"]
            and not step_info.get("failure", False)):
        return absorbing_reward(reward, gamma)
    return reward


def load_transitions(store: EpisodeStore, obs_keys: Sequence[str], gamma: float,
                     success_terminates: bool, episodes: Sequence[int] | None = None,
                     reward_key: str = "next.reward", absorbing_success: bool = True
                     ) -> dict[str, np.ndarray]:
    """Transitions of ``episodes`` (default: all) of ``store``, keyed like :class:`ReplayBuffer`.
    ``absorbing_success``: the last reward of an episode that terminated in success becomes
    :func:`absorbing_reward` (the runner does the same online)."""
    if reward_key not in store.features:
        raise KeyError(f"{store.name}: no {reward_key!r} feature to learn from (the store has "
                       f"{sorted(store.features)}); record it through the control loop")
    parts: dict[str, list[np.ndarray]] = {}
    for i in (range(len(store)) if episodes is None else episodes):
        ep = store.episode(i, [*obs_keys, "action", reward_key])
        n = len(ep)
        if n == 0:
            continue
        done = episode_terminated(ep.info, success_terminates)
        keep = n if done else n - 1  # a truncated episode's last step has no next state
        if keep == 0:
            continue
        reward = ep[reward_key].astype(np.float32)
        dones = np.zeros(keep, np.float32)
        if done:
            dones[-1] = 1.0
            # success ended it only where success ends episodes (else it was a failure)
            if absorbing_success and ep.info.success and success_terminates:
                reward[n - 1] = absorbing_reward(float(reward[n - 1]), gamma)
        mc = discounted_returns(reward, gamma)
        row = {"action": ep["action"][:keep].astype(np.float32), "reward": reward[:keep],
               "done": dones, "mc_return": mc[:keep]}
        for k in obs_keys:
            x = ep[k]
            row[f"obs/{k}"] = x[:keep]
            row[f"next_obs/{k}"] = np.concatenate([x[1:], x[-1:]])[:keep]
        for k, v in row.items():
            parts.setdefault(k, []).append(v)
    if not parts:
        raise ValueError(f"{store.name}: no transitions in the selected episodes")
    return {k: np.concatenate(v) for k, v in parts.items()}
