"""Cal-QL offline pretraining (Nakamoto et al. 2023) and WSRL fine-tuning (Zhou et al. 2025).

Cal-QL is SAC whose critic loss adds CQL's conservative term: push down a soft maximum of Q over
random, current-policy and next-state-policy actions, push up Q of the data's actions. Its one
change to CQL: the Q-values of policy actions are clipped from below by the Monte-Carlo return
of the state (``mc_return`` in the replay), so the pretrained Q is calibrated and does not
collapse when fine-tuning starts. Online transitions get theirs when their episode ends (the
runner writes each finished episode's return-to-go, as Cal-QL's own online loop does), so the
clip keeps holding during fine-tuning; until then they carry ``NO_MC``, which disables it.

WSRL pretrains with Cal-QL, then rolls out the frozen pretrained policy for ``warmup_steps``
(no updates) to seed the online buffer, then fine-tunes with plain SAC on online data only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from policies.rl.sac import SAC, Batch, SACConfig
from robolearn_core.config import InvalidValue


@dataclass
class CalQLConfig(SACConfig):
    cql_alpha: float = 5.0  # weight of the conservative term
    cql_actions: int = 10  # actions sampled per state for each of random / pi(s) / pi(s')
    cql_temperature: float = 1.0  # of the soft maximum over sampled actions
    calibrate: bool = True  # Cal-QL's clip by the Monte-Carlo return (False: plain CQL)
    cql_online: bool = True  # keep the conservative term during online fine-tuning
    offline_steps: int = 100_000  # pretraining gradient steps
    offline_ratio: float = 0.5  # online: half of each batch from the offline store
    random_steps: int = 0  # the pretrained policy explores from the first online step
    # no entropy bonus in the critic's target: the Cal-QL reference code (JaxCQL's
    # ConservativeSAC) and WSRL's (SERL-based) both back up the plain TD target; RLPD's SAC keeps
    # it. The target entropy stays -|A|/2 (SERL's and RLPD's; JaxCQL uses -|A|)
    backup_entropy: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cql_alpha < 0 or self.cql_actions < 1 or self.cql_temperature <= 0:
            raise InvalidValue("cql_alpha", "need cql_alpha >= 0, cql_actions >= 1 and "
                                            "cql_temperature > 0")


@dataclass
class WSRLConfig(CalQLConfig):
    """WSRL: Cal-QL pretraining, a warm-up of policy rollouts, then online SAC without the
    offline data (10 LayerNorm critics, min over 2, UTD 4, batch 1024 in the paper)."""

    n_critics: int = 10
    utd: int = 4
    batch_size: int = 1024
    warmup_steps: int = 5000
    keep_offline: bool = False
    offline_ratio: float = 0.0
    cql_online: bool = False


class CalQL(SAC):
    config_class = CalQLConfig
    config: CalQLConfig

    def update_critic(self, mb: Batch, offline: bool = False) -> dict[str, Tensor]:
        cfg = self.config
        target = self.critic_target_value(mb)
        feat = self.actor.encode(self.obs(mb))
        q = self.critic(torch.cat([feat, mb["action"]], -1))  # (E, B)
        td = (q - target).pow(2).mean(1).sum()
        info = {"critic_loss": td.detach() / cfg.n_critics, "q": q.detach().mean()}
        loss = td
        if offline or cfg.cql_online:
            penalty = self.cql_penalty(mb, feat, q)
            loss = td + cfg.cql_alpha * penalty
            info["cql_penalty"] = penalty.detach() / cfg.n_critics
        self._critic_step(loss)
        return info

    def cql_penalty(self, mb: Batch, feat: Tensor, q_data: Tensor) -> Tensor:
        """Sum over members of mean_B [soft-max_a Q(s, a) - Q(s, a_data)]."""
        cfg = self.config
        b, n, a_dim = feat.shape[0], cfg.cql_actions, self.actor.action_dim
        feat_n = feat.unsqueeze(1).expand(b, n, feat.shape[1]).reshape(b * n, -1)
        with torch.no_grad():
            next_feat = self.actor.encode(self.obs(mb, "next_obs/"))
            next_n = next_feat.unsqueeze(1).expand(b, n, -1).reshape(b * n, -1)
            pi_a, pi_logp = self.actor.sample(feat_n.detach(), self.generator)
            next_a, next_logp = self.actor.sample(next_n, self.generator)
        rand_a = torch.rand(b * n, a_dim, device=self.device, generator=self.generator) * 2 - 1
        rand_logp = a_dim * math.log(0.5)  # uniform density on [-1, 1]^A

        def q_of(actions: Tensor) -> Tensor:  # (E, B, N)
            return self.critic(torch.cat([feat_n, actions], -1)).reshape(-1, b, n)

        q_pi, q_next = q_of(pi_a), q_of(next_a)
        if cfg.calibrate:  # Cal-QL: never push a policy action's Q below the data's return
            mc = mb["mc_return"].reshape(1, b, 1)
            q_pi, q_next = torch.maximum(q_pi, mc), torch.maximum(q_next, mc)
        cat = torch.cat([q_of(rand_a) - rand_logp,
                         q_pi - pi_logp.reshape(1, b, n),
                         q_next - next_logp.reshape(1, b, n)], dim=-1)
        soft_max = cfg.cql_temperature * torch.logsumexp(cat / cfg.cql_temperature, dim=-1)
        return (soft_max - q_data).mean(1).sum()


class WSRL(CalQL):
    config_class = WSRLConfig
