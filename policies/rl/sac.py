"""SAC with a batched critic ensemble, and RLPD (its offline-data recipe).

One gradient step of the critic (``update_critic``), of the actor and of the temperature
(``update_actor``) each read top to bottom on one screen; :meth:`SAC.update` runs ``utd``
critic steps on consecutive minibatches of one big sampled batch, then one actor step, as
RLPD's jitted update does. The ensemble is :class:`policies.rl.networks.EnsembleMLP` (one
batched matmul per layer), the target is the minimum over a random subset of its members, the
actor maximises the ensemble mean. Camera frames are augmented DrQ-style (random shifts) and
the conv encoder is trained by the critic only; the target uses the same encoder without
gradient (DrQ keeps a target encoder; sharing it saves a forward and made no difference here).

Everything stays on the learner's device: sampling noise comes from the agent's own
``torch.Generator`` and no step reads a value back to the host (metrics are returned as
tensors; the runner converts them only when it logs).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from data.schema import Feature
from policies.device import pick_device
from policies.normalize import Stats
from policies.rl.actor import ActorConfig, ActorPolicy
from policies.rl.networks import EnsembleMLP, LoopEnsembleMLP, random_shift
from robolearn_core.config import InvalidValue

Batch = dict[str, Tensor]


@dataclass
class SACConfig:
    """Soft actor-critic; the defaults are plain SAC (2 critics, UTD 1, no offline data)."""

    actor: ActorConfig = field(default_factory=ActorConfig)  # the policy network
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])  # critic MLP widths
    n_critics: int = 2  # ensemble size
    critic_subset: int = 2  # the target is the min over this many random members
    critic_layer_norm: bool = True  # LayerNorm in the critics (RLPD's key stabiliser)
    critic_impl: str = "batched"  # batched (one matmul per layer) | loop (benchmark baseline)
    utd: int = 1  # critic updates per environment step (update-to-data ratio)
    batch_size: int = 256  # transitions per critic update
    offline_ratio: float = 0.0  # share of each batch drawn from the offline store (RLPD: 0.5)
    gamma: float = 0.99  # discount per step
    tau: float = 0.005  # target network soft-update rate per critic update
    lr: float = 3e-4  # Adam learning rate of actor, critic and temperature
    init_temperature: float = 1.0  # initial entropy temperature alpha
    target_entropy: float | None = None  # None: -|A| / 2 (RLPD)
    backup_entropy: bool = True  # subtract alpha * log pi in the critic target
    bc_weight: float = 0.0  # actor: + weight * squared error to offline actions (0: pure RL)
    bc_q_filter: bool = True  # ... only where the critics rate the offline action higher
    drq_pad: int = 4  # pixels of random shift for camera frames (0: no augmentation)
    random_steps: int = 5000  # online steps with uniform random actions before learning
    offline_steps: int = 0  # gradient steps on the offline store before going online
    warmup_steps: int = 0  # WSRL: online steps of the pretrained policy before any update
    keep_offline: bool = True  # keep sampling the offline store online (WSRL: False)
    device: str = "auto"  # torch device; "auto": cuda when available
    seed: int = 0  # seeds initialisation and the agent's sampling noise

    def __post_init__(self) -> None:
        for name in ("n_critics", "critic_subset", "utd", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        if self.critic_impl not in ("batched", "loop"):
            raise InvalidValue("critic_impl", f"must be 'batched' or 'loop', got "
                                              f"{self.critic_impl!r}")
        if self.critic_subset > self.n_critics:
            raise InvalidValue("critic_subset", f"must be <= n_critics={self.n_critics}, "
                                                f"got {self.critic_subset}")
        if not 0.0 <= self.offline_ratio < 1.0:
            raise InvalidValue("offline_ratio", f"must be in [0, 1), got {self.offline_ratio}")
        if not 0 < self.gamma < 1 or not 0 < self.tau <= 1 or self.lr <= 0:
            raise InvalidValue("gamma", "need 0 < gamma < 1, 0 < tau <= 1 and lr > 0")
        for name in ("random_steps", "offline_steps", "warmup_steps", "drq_pad", "bc_weight"):
            if getattr(self, name) < 0:
                raise InvalidValue(name, f"must be >= 0, got {getattr(self, name)}")
        if self.init_temperature <= 0:
            raise InvalidValue("init_temperature", "must be > 0")

    @property
    def uses_offline_data(self) -> bool:
        return self.offline_ratio > 0 or self.offline_steps > 0


@dataclass
class RLPDConfig(SACConfig):
    """RLPD (Ball et al. 2023): SAC + symmetric sampling, 10 LayerNorm critics, UTD 20."""

    n_critics: int = 10
    utd: int = 20
    offline_ratio: float = 0.5


class SAC(nn.Module):
    config_class: ClassVar[type[SACConfig]] = SACConfig

    def __init__(self, config: SACConfig, features: Mapping[str, Feature],
                 stats: Stats) -> None:
        super().__init__()
        self.config = config
        torch.manual_seed(config.seed)
        device = pick_device(config.device)
        self.actor = ActorPolicy(config.actor, features, stats)
        self.obs_keys = self.actor.obs_keys
        self.image_keys = [k for k in self.obs_keys if features[k].image]
        a_dim = self.actor.action_dim
        critic_cls = EnsembleMLP if config.critic_impl == "batched" else LoopEnsembleMLP
        self.critic = critic_cls(config.n_critics, self.actor.encoder.out_dim + a_dim,
                                 list(config.critic_hidden), config.critic_layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature)))
        self.target_entropy = (-a_dim / 2 if config.target_entropy is None
                               else config.target_entropy)
        self.build_extra()
        self.to(device)
        self.generator = torch.Generator(device).manual_seed(config.seed)
        self.actor_opt = torch.optim.Adam(self.actor.head.parameters(), lr=config.lr)
        # the encoder (cameras) learns from the critic loss only, as in DrQ
        self.critic_opt = torch.optim.Adam(
            [*self.critic.parameters(), *self.actor.encoder.parameters(), *self.extra_params()],
            lr=config.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.lr)

    def build_extra(self) -> None:
        """Extra networks of a subclass, built before the move to the device."""

    def extra_params(self) -> list[nn.Parameter]:
        return []

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def explore(self, obs: Mapping[str, Any]) -> Tensor:
        """One stochastic action in robot units for one observation (numpy or tensors)."""
        batch = self._one(obs)
        action, _ = self.actor.sample(self.actor.encode(self._images_chw(batch)),
                                      self.generator)
        return self.actor.unnormalize_action(action, batch)[0]

    @torch.no_grad()
    def robot_action(self, action: Any, obs: Mapping[str, Any]) -> Tensor:
        """A network-unit action ``(A,)`` in [-1, 1] (e.g. uniform random) -> robot units,
        relative entries taken from ``obs``."""
        net = torch.as_tensor(action, dtype=torch.float32, device=self.device).unsqueeze(0)
        return self.actor.unnormalize_action(net, self._one(obs))[0]

    def _one(self, obs: Mapping[str, Any]) -> Batch:
        """One observation (numpy or tensors) -> a batch of one on the device."""
        return {k: torch.as_tensor(obs[k]).unsqueeze(0).to(self.device) for k in self.obs_keys}

    def _images_chw(self, obs: Batch) -> Batch:
        """Camera frames ``(..., H, W, C)`` (robots and the replay) -> ``(..., C, H, W)``."""
        return {k: (v.movedim(-1, -3) if k in self.image_keys else v) for k, v in obs.items()}

    # ------------------------------------------------------------------ learning
    def prepare(self, batch: Batch) -> Batch:
        """Replay rows -> network inputs: obs / next_obs dicts, DrQ-shifted frames, normalized
        actions."""
        out = dict(batch)
        for prefix in ("obs/", "next_obs/"):
            for k in self.image_keys:
                x = batch[prefix + k].movedim(-1, -3).float()
                if self.config.drq_pad:
                    x = random_shift(x, self.config.drq_pad, self.generator)
                out[prefix + k] = x  # float 0..255, the normalizer scales it
            for k in self.obs_keys:
                if k not in self.image_keys:
                    out[prefix + k] = batch[prefix + k]
        out["action"] = self.actor.normalize_action(
            batch["action"], {k: batch["obs/" + k] for k in self.obs_keys})
        return out

    def obs(self, batch: Batch, prefix: str = "obs/") -> Batch:
        return {k: batch[prefix + k] for k in self.obs_keys}

    def update(self, batch: Batch, offline: bool = False) -> dict[str, Tensor]:
        """``utd`` critic steps on consecutive ``batch_size`` slices of ``batch``, then one actor
        and temperature step on the last slice. ``offline``: a pretraining step."""
        batch = self.prepare(batch)
        b = self.config.batch_size
        n = len(batch["reward"]) // b
        info: dict[str, Tensor] = {}
        for i in range(n):
            mb = {k: v[i * b:(i + 1) * b] for k, v in batch.items()}
            info = self.update_critic(mb, offline)
        return {**info, **self.update_actor(mb)}

    def critic_target_value(self, mb: Batch) -> Tensor:
        """``r + gamma (1 - done) (min of a random target subset Q(s', a') - alpha log pi)``."""
        cfg = self.config
        with torch.no_grad():
            next_feat = self.actor.encode(self.obs(mb, "next_obs/"))
            next_a, next_logp = self.actor.sample(next_feat, self.generator)
            pick = torch.randperm(cfg.n_critics, device=self.device,
                                  generator=self.generator)[:cfg.critic_subset]
            q_next = self.critic_target(torch.cat([next_feat, next_a], -1), pick).min(0).values
            if cfg.backup_entropy:
                q_next = q_next - self.alpha * next_logp
            return mb["reward"] + cfg.gamma * (1.0 - mb["done"]) * q_next

    def update_critic(self, mb: Batch, offline: bool = False) -> dict[str, Tensor]:
        target = self.critic_target_value(mb)
        feat = self.actor.encode(self.obs(mb))
        q = self.critic(torch.cat([feat, mb["action"]], -1))  # (E, B)
        loss = (q - target).pow(2).mean(1).sum()  # each member's own mean squared error
        self._critic_step(loss)
        return {"critic_loss": loss.detach() / self.config.n_critics, "q": q.detach().mean()}

    def _critic_step(self, loss: Tensor) -> None:
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()),
                                 list(self.critic.parameters()), self.config.tau)

    def update_actor(self, mb: Batch) -> dict[str, Tensor]:
        feat = self.actor.encode(self.obs(mb)).detach()
        action, logp = self.actor.sample(feat, self.generator)
        self.critic.requires_grad_(False)
        q = self.critic(torch.cat([feat, action], -1)).mean(0)  # the ensemble mean (RLPD)
        self.critic.requires_grad_(True)
        actor_loss = (self.alpha.detach() * logp - q).mean()
        info: dict[str, Tensor] = {}
        if self.config.bc_weight > 0 and "offline" in mb:
            actor_loss = actor_loss + self.bc_term(mb, feat, q.detach(), info)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"actor_loss": actor_loss.detach(), "alpha": self.alpha.detach(),
                "entropy": -logp.detach().mean(), **info}

    def bc_term(self, mb: Batch, feat: Tensor, q_pi: Tensor, info: dict[str, Tensor]) -> Tensor:
        """``bc_weight`` x squared error between ``tanh(mean)`` and the offline rows' actions,
        scaled by the critics' magnitude (TD3+BC) so the weight does not depend on the reward's
        scale; with ``bc_q_filter``, only rows whose offline action the critics value above
        the actor's (Nair et al. 2018), so the actor may outgrow the demonstrations. Summed over
        the kept rows and divided by the whole batch, as the actor loss is: with
        ``offline_ratio`` 0.5 the demo rows' mean error weighs ``bc_weight / 2`` (the arm
        trials in the README used this convention)."""
        keep = mb["offline"]
        with torch.no_grad():
            if self.config.bc_q_filter:
                q_demo = self.critic(torch.cat([feat, mb["action"]], -1)).mean(0)
                keep = keep * (q_demo > q_pi).float()
            scale = q_pi.abs().mean().clamp(min=1.0)
        err = (torch.tanh(self.actor.dist(feat)[0]) - mb["action"]).pow(2).sum(-1)
        n_offline = mb["offline"].sum().clamp(min=1.0)
        info["bc_rows"] = keep.sum() / n_offline
        info["bc_error"] = (err.detach() * mb["offline"]).sum() / n_offline
        return self.config.bc_weight * scale * (err * keep).sum() / keep.numel()

    # ------------------------------------------------------------------ checkpoints
    def optim_state(self) -> dict[str, Any]:
        return {"actor": self.actor_opt.state_dict(), "critic": self.critic_opt.state_dict(),
                "alpha": self.alpha_opt.state_dict(), "generator": self.generator.get_state()}

    def load_optim_state(self, state: Mapping[str, Any]) -> None:
        self.actor_opt.load_state_dict(state["actor"])
        self.critic_opt.load_state_dict(state["critic"])
        self.alpha_opt.load_state_dict(state["alpha"])
        saved = state["generator"]
        if saved.numel() == self.generator.get_state().numel():
            self.generator.set_state(saved)
        else:  # saved on another kind of device (a CUDA generator's state is not a CPU one's):
            # the run goes on, but its sampling noise cannot continue the saved sequence
            warnings.warn(f"{type(self).__name__}: the checkpoint's random generator comes "
                          f"from another kind of device than {self.generator.device}; it is "
                          "reseeded, so this resume is not bit-exact", stacklevel=2)
            self.generator.manual_seed(self.config.seed + 1)


class RLPD(SAC):
    config_class = RLPDConfig
