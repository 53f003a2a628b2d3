"""Implicit Q-learning (Kostrikov et al. 2022): offline pretraining, then online fine-tuning.

IQL never queries the critic at actions outside the data: V(s) is fitted as an upper expectile
of Q(s, a) over the data's actions, Q(s, a) regresses onto r + gamma V(s'), and the actor is
advantage-weighted regression on the data's actions, weight ``exp(temperature * (Q - V))``.
Online fine-tuning keeps the same losses on a 50/50 mix of offline and online data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from policies.rl.networks import mlp
from policies.rl.sac import SAC, Batch, SACConfig
from robolearn_core.config import InvalidValue


@dataclass
class IQLConfig(SACConfig):
    expectile: float = 0.7  # tau of the value expectile (0.9 on antmaze)
    temperature: float = 3.0  # inverse temperature of the advantage weights (10 on antmaze)
    max_weight: float = 100.0  # advantage weights are clipped here
    offline_steps: int = 100_000  # pretraining gradient steps
    offline_ratio: float = 0.5  # online: half of each batch from the offline store
    random_steps: int = 0  # the pretrained policy explores from the first online step

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.5 <= self.expectile < 1:
            raise InvalidValue("expectile", f"must be in [0.5, 1), got {self.expectile}")
        if self.temperature <= 0 or self.max_weight <= 0:
            raise InvalidValue("temperature", "temperature and max_weight must be > 0")


class IQL(SAC):
    config_class = IQLConfig
    config: IQLConfig

    def build_extra(self) -> None:
        cfg = self.config
        self.value = mlp(self.actor.encoder.out_dim, list(cfg.critic_hidden), 1,
                         cfg.critic_layer_norm)

    def extra_params(self) -> list[Any]:
        return list(self.value.parameters())

    def update(self, batch: Batch, offline: bool = False) -> dict[str, Tensor]:
        batch = self.prepare(batch)
        b = self.config.batch_size
        info: dict[str, Tensor] = {}
        for i in range(len(batch["reward"]) // b):
            info = self.update_iql({k: v[i * b:(i + 1) * b] for k, v in batch.items()})
        return info

    def update_iql(self, mb: Batch) -> dict[str, Tensor]:
        cfg = self.config
        feat = self.actor.encode(self.obs(mb))
        sa = torch.cat([feat, mb["action"]], -1)
        with torch.no_grad():
            q_t = self.critic_target(sa).min(0).values  # (B,)
            next_v = self.value(self.actor.encode(self.obs(mb, "next_obs/"))).squeeze(-1)
            target = mb["reward"] + cfg.gamma * (1.0 - mb["done"]) * next_v
        # V: upper expectile of the target critics' Q over the data's actions
        v = self.value(feat.detach()).squeeze(-1)
        u = q_t - v
        value_loss = (torch.abs(cfg.expectile - (u < 0).float()) * u.pow(2)).mean()
        # Q: one-step TD onto V(s'), every member on its own
        q = self.critic(sa)
        critic_loss = (q - target).pow(2).mean(1).sum()
        # actor: advantage-weighted regression on the data's actions
        weight = torch.exp(cfg.temperature * (q_t - v.detach())).clamp(max=cfg.max_weight)
        actor_loss = -(weight * self.actor.log_prob(feat.detach(), mb["action"])).mean()
        self._critic_step(critic_loss + value_loss)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        return {"critic_loss": critic_loss.detach() / cfg.n_critics,
                "value_loss": value_loss.detach(), "actor_loss": actor_loss.detach(),
                "q": q.detach().mean(), "adv_weight": weight.mean()}
