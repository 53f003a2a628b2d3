"""The RL learners' actor as a regular policy: ``tanh(N(mean, std))`` over normalized actions.

It is a :class:`policies.base.Policy` like the behaviour-cloning ones, so a trained actor is
saved, loaded, evaluated (``robolearn eval``) and deployed exactly like them, and it never
needs to know whether it learned offline, online or by imitation. Registered as ``rl_actor``:
``robolearn train policy=rl_actor`` trains it by maximum likelihood on demonstrations.

Actions are normalized ``min_max`` to [-1, 1] (the RL runner gives the robot's action bounds as
the min/max statistics, so tanh covers exactly the actions the robot accepts). At inference it
acts with ``tanh(mean)`` (``deterministic``) or samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from data.schema import Feature
from policies.base import Policy, PolicyConfig
from policies.normalize import Stats
from policies.rl.networks import mlp, tanh_gaussian_log_prob, tanh_gaussian_sample
from robolearn.config import InvalidValue


@dataclass
class ActorConfig(PolicyConfig):
    obs_horizon: int = 1  # RL acts on the current observation (a Markov state)
    action_horizon: int = 1  # one action per step, no chunks
    n_action_steps: int = 1
    action_norm: str = "min_max"  # [-1, 1] <-> the action bounds given as min/max statistics
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # MLP widths
    layer_norm: bool = True  # LayerNorm after each hidden layer (WSRL: in actor and critic)
    log_std_min: float = -5.0  # log std range of the Gaussian before tanh
    log_std_max: float = 2.0
    deterministic: bool = True  # act with tanh(mean); False samples (exploration)
    bc_nll_weight: float = 0.01  # behaviour cloning: weight of the NLL beside the squared error

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.obs_horizon != 1 or self.action_horizon != 1:
            raise InvalidValue("obs_horizon", "the RL actor acts on one observation and "
                               "predicts one action (obs_horizon = action_horizon = 1)")
        if not self.log_std_min < self.log_std_max:
            raise InvalidValue("log_std_min", "must be < log_std_max")


class ActorPolicy(Policy):
    """Observation (one step) -> squashed Gaussian over the normalized action."""

    name = "rl_actor"
    config_class = ActorConfig
    config: ActorConfig

    def __init__(self, config: ActorConfig, features: Mapping[str, Feature],
                 stats: Stats) -> None:
        super().__init__(config, features, stats)
        self.head = mlp(self.encoder.out_dim, list(config.hidden), 2 * self.action_dim,
                        config.layer_norm)

    # ------------------------------------------------------------------ RL interface
    def encode(self, obs: Mapping[str, Tensor]) -> Tensor:
        """``{key: (B, *shape)}`` raw observations -> features ``(B, F)``. Camera frames may be
        float (already augmented) or uint8; the critic trains this encoder (DrQ)."""
        return self.encoder({k: obs[k].unsqueeze(1) for k in self.obs_keys},
                            self.normalizer)[:, 0]

    def dist(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.head(feat).chunk(2, dim=-1)
        lo, hi = self.config.log_std_min, self.config.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(log_std) + 1)

    def sample(self, feat: Tensor, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor]:
        """Normalized action ``(B, A)`` in (-1, 1) and its log-probability ``(B,)``."""
        return tanh_gaussian_sample(*self.dist(feat), generator=generator)

    def log_prob(self, feat: Tensor, action: Tensor) -> Tensor:
        return tanh_gaussian_log_prob(*self.dist(feat), action)

    def normalize_action(self, action: Tensor) -> Tensor:
        return self.normalizer.normalize("action", action)

    def unnormalize_action(self, action: Tensor) -> Tensor:
        return self.normalizer.unnormalize("action", action)

    # ------------------------------------------------------------------ Policy interface
    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Behaviour cloning: squared error of ``tanh(mean)`` (what the actor executes) plus a
        small negative log-likelihood that fits the spread. NLL alone fits slowly: demos full
        of saturated actions (steering at +-1) sit where tanh's inverse blows up, and the
        Gaussian first widens instead of moving its mean."""
        feat = self.encode({k: batch[k][:, -1] for k in self.obs_keys})
        target = self.normalize_action(batch["action"][:, 0]).clamp(-1, 1)
        mean, log_std = self.dist(feat)
        mse = (torch.tanh(mean) - target).pow(2).sum(-1).mean()
        nll = -tanh_gaussian_log_prob(mean, log_std, target).mean()
        return mse + self.config.bc_nll_weight * nll, {"mse": float(mse.detach()),
                                                       "nll": float(nll.detach())}

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        feat = self.encode({k: batch[k][:, -1] for k in self.obs_keys})
        if self.config.deterministic:
            action = torch.tanh(self.dist(feat)[0])
        else:
            action, _ = self.sample(feat, self._generator)
        return self.unnormalize_action(action).unsqueeze(1)
