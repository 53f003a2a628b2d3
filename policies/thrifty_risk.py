"""ThriftyDAgger's risk critic (Hoque et al. 2021): the learned Q that hands control to the
teacher when the novice's plan is unlikely to end in success (``robolearn improve
method=thrifty``). The interactive loop is the app's; nothing here imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RiskConfig:
    steps: int = 1000  # gradient steps per fit (each fit goes on from the previous one)
    hidden_dim: int = 256  # width of each critic's two hidden layers
    gamma: float = 0.9999  # discount (ThriftyDAgger's)
    batch_size: int = 256  # transitions per step
    lr: float = 1e-3  # Adam learning rate
    pos_fraction: float = 0.1  # share of each batch drawn from successful endings (Thrifty: 10%)
    tau: float = 0.005  # target critics' soft-update rate
    seed: int = 0  # seeds initialisation and sampling

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or not 0 < self.gamma < 1 \
                or not 0 <= self.pos_fraction < 1:
            raise ValueError("RiskConfig: steps >= 0, batch_size >= 1, 0 < gamma < 1, "
                             "0 <= pos_fraction < 1")


class RiskQ:
    """ThriftyDAgger's risk critic: twin Q-networks (the min of the two) estimating the
    discounted probability that the episode ends in success after action ``a`` in state ``s``
    and the novice from there on. Reward 1 on the last step of a successful episode (which
    ends there), 0 elsewhere; the target's next action is the novice's (given per fit, as the
    novice is refitted each round); a ``pos_fraction`` of each batch is drawn from the
    successful endings, as Thrifty forces 10% positives. Outputs are squashed to [0, 1] (a
    probability). Inputs: the observation vector (the novice's keys, concatenated) and the
    action, normalised by the first fit's statistics."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: RiskConfig | None = None) -> None:
        self.cfg = cfg or RiskConfig()
        torch.manual_seed(self.cfg.seed)
        d, h = obs_dim + act_dim, self.cfg.hidden_dim
        self.q = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, h),
                                torch.nn.ReLU(), torch.nn.Linear(h, 1)) for _ in range(2))
        self.q_target = self._copies()
        self.opt = torch.optim.Adam(self.q.parameters(), lr=self.cfg.lr)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.gen = np.random.default_rng(self.cfg.seed)
        self.updates = 0  # Bellman steps taken over all fits

    def state_dict(self) -> dict[str, Any]:
        """Everything a later fit depends on (weights, targets, optimiser, normalisation, the
        sampling generator), so a resumed session's critic goes on as an uninterrupted one's."""
        return {"q": self.q.state_dict(), "q_target": [t.state_dict() for t in self.q_target],
                "opt": self.opt.state_dict(), "mean": self.mean, "std": self.std,
                "gen": self.gen.bit_generator.state, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        for t, sd in zip(self.q_target, state["q_target"], strict=True):
            t.load_state_dict(sd)
        self.opt.load_state_dict(state["opt"])
        for group in self.opt.param_groups:  # the config's rate wins: a resume may change it
            group["lr"] = self.cfg.lr
        self.mean, self.std = state["mean"], state["std"]
        self.gen.bit_generator.state = state["gen"]
        self.updates = int(state["updates"])

    def _copies(self) -> list[torch.nn.Module]:
        import copy

        return [copy.deepcopy(net).requires_grad_(False) for net in self.q]

    def _x(self, x: np.ndarray | torch.Tensor, a: np.ndarray | torch.Tensor) -> torch.Tensor:
        xa = torch.cat([torch.as_tensor(x, dtype=torch.float32),
                        torch.as_tensor(a, dtype=torch.float32)], -1)
        assert self.mean is not None and self.std is not None
        return (xa - self.mean) / self.std

    def _value(self, nets: Any, xa: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.sigmoid(n(xa)[..., 0]) for n in nets]).min(0).values

    def fit(self, x: np.ndarray, a: np.ndarray, x_next: np.ndarray, a_next: np.ndarray,
            reward: np.ndarray, done: np.ndarray) -> float:
        """``steps`` Bellman steps on transitions ``(x, a, r, x', a')`` (``a'``: the novice's
        action at ``x'``); returns the last loss."""
        n = len(a)
        if n == 0:
            return 0.0
        if self.mean is None:
            xa = np.concatenate([x, a], -1)
            self.mean = torch.as_tensor(xa.mean(0), dtype=torch.float32)
            self.std = torch.as_tensor(xa.std(0) + 1e-3, dtype=torch.float32)
        cur, nxt = self._x(x, a), self._x(x_next, a_next)
        r = torch.as_tensor(reward, dtype=torch.float32)
        d = torch.as_tensor(done, dtype=torch.float32)
        pos = np.flatnonzero(np.asarray(reward) > 0)
        c = self.cfg
        n_pos = int(round(c.batch_size * c.pos_fraction)) if len(pos) else 0
        loss = torch.zeros(())
        for _ in range(c.steps):
            idx = np.concatenate([self.gen.integers(0, n, c.batch_size - n_pos),
                                  pos[self.gen.integers(0, len(pos), n_pos)] if n_pos else
                                  np.zeros(0, np.int64)])
            with torch.no_grad():
                target = r[idx] + c.gamma * (1 - d[idx]) * self._value(self.q_target, nxt[idx])
            loss = sum(((torch.sigmoid(net(cur[idx])[..., 0]) - target) ** 2).mean()
                       for net in self.q)  # type: ignore[assignment]
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                for net, tgt in zip(self.q, self.q_target, strict=True):
                    for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                        pt.lerp_(p, c.tau)
        self.updates += c.steps
        return float(loss.detach())

    @torch.no_grad()
    def value(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Q(s, a) for a batch (``x (B, D)``, ``a (B, A)``) or one (``(D,)``, ``(A,)``)."""
        return self._value(self.q, self._x(x, a)).numpy()
