"""The RL learners' actor as a regular policy: ``tanh(N(mean, std))`` over normalized actions.

It is a :class:`policies.base.Policy` like the behaviour-cloning ones, so a trained actor is
saved, loaded, evaluated (``robolearn eval``) and deployed exactly like them, and it never
needs to know whether it learned offline, online or by imitation. Registered as ``rl_actor``:
``robolearn train policy=rl_actor`` trains it by maximum likelihood on demonstrations.

Actions are normalized ``min_max`` to [-1, 1] (the RL runner gives the robot's action bounds as
the min/max statistics, so tanh covers exactly the actions the robot accepts). At inference it
acts with ``tanh(mean)`` (``deterministic``) or samples.

``relative_actions`` names action entries the network outputs as *offsets* from the current
state entry of the same name (``<name>`` or ``<name>.pos`` in ``relative_state``): the robot still
receives absolute targets (``state + relative_step * a``, inside the action bounds), so stores,
evaluation and deployment see the same actions as ever. Why: an arm driven by absolute joint
targets explores by jumping across its whole range every step (tanh noise spans the bounds), and
RL from demonstrations on the arm learned no lift in 10,000 steps; offsets explore as a smooth
random walk around where the arm is. Demonstrated (absolute) actions are converted on the way
into the learner, clipped to the largest offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from data.schema import Feature
from policies.base import Policy, PolicyConfig
from policies.normalize import Stats
from policies.rl.networks import mlp, tanh_gaussian_log_prob, tanh_gaussian_sample
from robolearn_core.config import InvalidValue


@dataclass
class ActorConfig(PolicyConfig):
    obs_horizon: int = 1  # RL acts on the current observation (a Markov state)
    action_horizon: int = 1  # one action per step, no chunks
    n_action_steps: int = 1
    action_norm: str = "min_max"  # [-1, 1] <-> the action bounds given as min/max statistics
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # MLP widths
    layer_norm: bool = True  # LayerNorm after each hidden layer (WSRL: in actor and critic)
    log_std_min: float = -5.0  # lowest log std of the Gaussian before tanh
    log_std_max: float = 2.0  # highest log std of the Gaussian before tanh
    deterministic: bool = True  # act with tanh(mean); False samples (exploration)
    bc_nll_weight: float = 0.01  # behaviour cloning: weight of the NLL beside the squared error
    relative_actions: list[str] = field(default_factory=list)  # action names output as offsets
    relative_state: str = "observation.state"  # the feature holding the offsets' origins
    relative_step: float = 0.1  # largest offset per step, action units (rad for joints)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.obs_horizon != 1 or self.action_horizon != 1:
            raise InvalidValue("obs_horizon", "the RL actor acts on one observation and "
                               "predicts one action (obs_horizon = action_horizon = 1)")
        if not self.log_std_min < self.log_std_max:
            raise InvalidValue("log_std_min", "must be < log_std_max")
        if self.relative_step <= 0:
            raise InvalidValue("relative_step", f"must be > 0, got {self.relative_step}")
        self.relative_actions = list(self.relative_actions)


class ActorPolicy(Policy):
    """Observation (one step) -> squashed Gaussian over the normalized action."""

    name = "rl_actor"
    config_class = ActorConfig
    config: ActorConfig
    rel_mask: Tensor  # (A,) bool: entries output as offsets from the state
    rel_src: Tensor  # (A,) index of each offset's origin in the relative_state feature
    act_low: Tensor  # (A,) action bounds, in robot units (the min/max statistics)
    act_high: Tensor

    def __init__(self, config: ActorConfig, features: Mapping[str, Feature],
                 stats: Stats) -> None:
        super().__init__(config, features, stats)
        self.head = mlp(self.encoder.out_dim, list(config.hidden), 2 * self.action_dim,
                        config.layer_norm)
        mask, src = self._relative_layout(config, features)
        # derived from the config and statistics, so not saved: checkpoints stay as they were
        self.register_buffer("rel_mask", torch.tensor(mask), persistent=False)
        self.register_buffer("rel_src", torch.tensor(src, dtype=torch.long), persistent=False)
        low = np.asarray(self.stats["action"].get("min", np.full(self.action_dim, -np.inf)))
        high = np.asarray(self.stats["action"].get("max", np.full(self.action_dim, np.inf)))
        self.register_buffer("act_low", torch.as_tensor(low, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("act_high", torch.as_tensor(high, dtype=torch.float32),
                             persistent=False)

    @staticmethod
    def _relative_layout(config: ActorConfig, features: Mapping[str, Feature]
                         ) -> tuple[list[bool], list[int]]:
        """Which action entries are offsets, and the index of each one's origin in the state."""
        names = list(features["action"].names or [])
        n = features["action"].shape[0]
        mask, src = [False] * n, [0] * n
        if not config.relative_actions:
            return mask, src
        state = features.get(config.relative_state)
        if state is None or len(state.shape) != 1 or not state.names:
            raise InvalidValue("relative_state", f"{config.relative_state!r} must be a 1-D "
                               f"observation feature with names; features: {sorted(features)}")
        state_names = list(state.names)
        for name in config.relative_actions:
            if name not in names:
                raise InvalidValue("relative_actions", f"{name!r} is not an action entry; the "
                                   f"actions are {names}")
            origin = next((n for n in (name, f"{name}.pos") if n in state_names), None)
            if origin is None:
                raise InvalidValue("relative_actions", f"no {name!r} or '{name}.pos' in "
                                   f"{config.relative_state} {state_names}")
            mask[names.index(name)], src[names.index(name)] = True, state_names.index(origin)
        return mask, src

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

    def normalize_action(self, action: Tensor, obs: Mapping[str, Tensor]) -> Tensor:
        """Robot actions ``(B, A)`` -> network units, in [-1, 1] (``obs``: the raw observations
        ``(B, ...)`` they were taken in, the origins of relative entries)."""
        out = self.normalizer.normalize("action", action)
        if self.config.relative_actions:
            origin = obs[self.config.relative_state][..., self.rel_src].to(action.dtype)
            out = torch.where(self.rel_mask, (action - origin) / self.config.relative_step, out)
        return out.clamp(-1, 1)

    def unnormalize_action(self, action: Tensor, obs: Mapping[str, Tensor]) -> Tensor:
        """Network units ``(B, A)`` -> robot actions, relative entries added to their origins
        and kept inside the action bounds."""
        out = self.normalizer.unnormalize("action", action)
        if self.config.relative_actions:
            origin = obs[self.config.relative_state][..., self.rel_src].to(action.dtype)
            rel = origin + self.config.relative_step * action
            out = torch.where(self.rel_mask, torch.clamp(rel, self.act_low, self.act_high), out)
        return out

    # ------------------------------------------------------------------ Policy interface
    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Behaviour cloning: squared error of ``tanh(mean)`` (what the actor executes) plus a
        small negative log-likelihood that fits the spread. NLL alone fits slowly: demos full
        of saturated actions (steering at +-1) sit where tanh's inverse blows up, and the
        Gaussian first widens instead of moving its mean."""
        obs = {k: batch[k][:, -1] for k in self.obs_keys}
        feat = self.encode(obs)
        target = self.normalize_action(batch["action"][:, 0], obs)
        mean, log_std = self.dist(feat)
        mse = (torch.tanh(mean) - target).pow(2).sum(-1).mean()
        nll = -tanh_gaussian_log_prob(mean, log_std, target).mean()
        return mse + self.config.bc_nll_weight * nll, {"mse": float(mse.detach()),
                                                       "nll": float(nll.detach())}

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        obs = {k: batch[k][:, -1] for k in self.obs_keys}
        feat = self.encode(obs)
        if self.config.deterministic:
            action = torch.tanh(self.dist(feat)[0])
        else:
            action, _ = self.sample(feat, self._generator)
        return self.unnormalize_action(action, obs).unsqueeze(1)
