"""ACT (Zhao et al. 2023) without the CVAE: a transformer encoder-decoder over observation tokens
that predicts an action chunk, L1 loss, temporal ensembling at inference.

Tokens: one per observation key per history step (state vector, each camera's keypoint
features), each projected to ``d_model`` with a learned position/type embedding. The decoder's
``action_horizon`` learned queries attend to them and each becomes one action.

Why no CVAE: at inference ACT sets the latent to the prior mean (z = 0), so the CVAE only shapes
training on multi-modal human demonstrations; the chunking + L1 + ensembling that carries most
of ACT's gain is kept, and the update stays one short function. Use ``diffusion`` or the
``mlp`` GMM head for strongly multi-modal data.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from data.schema import Feature
from policies.base import Policy, PolicyConfig, masked_mean
from policies.normalize import Stats
from robolearn_core.config import InvalidValue


@dataclass
class ACTConfig(PolicyConfig):
    """ACT policy: transformer encoder-decoder -> action chunk, temporal ensembling."""

    obs_horizon: int = 1  # past observation steps (ACT uses the current one only)
    action_horizon: int = 16  # chunk size k
    n_action_steps: int = 1  # steps per chunk when temporal_ensemble_coeff is None
    d_model: int = 128  # transformer width
    n_heads: int = 4  # attention heads
    n_encoder_layers: int = 2  # encoder layers over observation tokens
    n_decoder_layers: int = 2  # decoder layers over action queries
    ff_dim: int = 512  # feed-forward width
    dropout: float = 0.1  # dropout in the transformer, during training
    temporal_ensemble_coeff: float | None = 0.01  # m in w_i = exp(-m i); None = plain chunks

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "ff_dim"):
            if getattr(self, name) < 1:
                raise InvalidValue(name, f"must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise InvalidValue("n_heads", f"must divide d_model={self.d_model}, got "
                                          f"{self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidValue("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.temporal_ensemble_coeff is not None and self.temporal_ensemble_coeff < 0:
            raise InvalidValue("temporal_ensemble_coeff",
                               f"must be >= 0 or None, got {self.temporal_ensemble_coeff}")


class ACTPolicy(Policy):
    name = "act"
    config_class = ACTConfig
    config: ACTConfig

    def __init__(self, config: ACTConfig, features: Mapping[str, Feature], stats: Stats) -> None:
        super().__init__(config, features, stats)
        c = config
        self.token_proj = nn.ModuleList(nn.Linear(d, c.d_model) for d in self.encoder.dims)
        n_tokens = len(self.encoder.dims) * c.obs_horizon
        self.obs_pos = nn.Parameter(torch.randn(n_tokens, c.d_model) * 0.02)
        self.queries = nn.Parameter(torch.randn(c.action_horizon, c.d_model) * 0.02)
        layer: dict[str, Any] = dict(d_model=c.d_model, nhead=c.n_heads, dim_feedforward=c.ff_dim,
                     dropout=c.dropout, batch_first=True, norm_first=True)
        self.obs_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer), c.n_encoder_layers, nn.LayerNorm(c.d_model),
            enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer), c.n_decoder_layers, nn.LayerNorm(c.d_model))
        self.head = nn.Linear(c.d_model, self.action_dim)
        self._chunks: deque[Tensor] = deque(maxlen=c.action_horizon)

    def _forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Observation windows -> normalized chunk (B, H, A)."""
        parts = self.encoder.parts(batch, self.normalizer)  # each (B, T, d_i)
        tokens = torch.cat([p(x) for p, x in zip(self.token_proj, parts, strict=True)], dim=1)
        tokens = tokens + self.obs_pos
        queries = self.queries.expand(len(tokens), -1, -1)
        return self.head(self.decoder(queries, self.obs_encoder(tokens)))

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        batch = self.to_device(batch)
        target = self.normalizer.normalize("action", batch["action"])  # (B, H, A)
        pred = self._forward(batch)
        loss = masked_mean((pred - target).abs(), batch["action_is_pad"])
        return loss, {"loss": loss.item(), "l1": loss.item()}

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.normalizer.unnormalize("action", self._forward(batch))

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._chunks.clear()

    def _next_action(self, window: dict[str, Tensor]) -> Tensor:
        """Temporal ensembling: every step predicts a chunk; the action for now averages what
        each stored chunk predicted for this step, oldest weighted most (w_i = exp(-m i))."""
        m = self.config.temporal_ensemble_coeff
        if m is None:
            return super()._next_action(window)
        self._chunks.append(self.predict_chunk(window)[0])  # (H, A); oldest first
        n = len(self._chunks)
        # the chunk predicted i steps after the oldest one is n - 1 - i steps old
        preds = torch.stack([chunk[n - 1 - i] for i, chunk in enumerate(self._chunks)])
        w = torch.exp(-m * torch.arange(n, device=preds.device, dtype=preds.dtype))
        return (w[:, None] * preds).sum(0) / w.sum()
