"""Critic ensembles and the squashed-Gaussian head of the RL learners.

:class:`EnsembleMLP` is ``n`` MLPs evaluated as one batched operation: every layer holds its
weights as ``(n, d_in, d_out)`` and runs one ``baddbmm`` for all members (the first layer, whose
input every member shares, is a single ``(B, d_in) @ (d_in, n * d_out)`` matmul). This is what
RLPD's JAX code gets from ``vmap``; a Python loop over critics (:class:`LoopEnsembleMLP`, kept as
the benchmark's baseline) launches ``n`` times as many kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers: ``(B, d_in)`` (shared) or ``(n, B, d_in)``
    -> ``(n, B, d_out)``."""

    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.n, self.d_in, self.d_out = n, d_in, d_out
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per member
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``members``: indices of the members to evaluate (default: all)."""
        weight, bias = (self.weight, self.bias) if members is None else \
            (self.weight[members], self.bias[members])
        n = weight.shape[0]
        if x.dim() == 2:  # one input for every member: a single wide matmul
            w = weight.permute(1, 0, 2).reshape(self.d_in, n * self.d_out)
            y = (x @ w).reshape(x.shape[0], n, self.d_out).transpose(0, 1)
            return y + bias
        return torch.baddbmm(bias, x, weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine transform per member."""

    def __init__(self, n: int, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, 1, d))
        self.bias = nn.Parameter(torch.zeros(n, 1, d))

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        w, b = (self.weight, self.bias) if members is None else \
            (self.weight[members], self.bias[members])
        return torch.addcmul(b, F.layer_norm(x, x.shape[-1:]), w)  # one pass for the affine


class EnsembleMLP(nn.Module):
    """``n`` MLPs (Linear -> [LayerNorm] -> ReLU)* -> Linear(1): ``(B, d_in)`` -> ``(n, B)``."""

    def __init__(self, n: int, d_in: int, hidden: list[int], layer_norm: bool = True) -> None:
        super().__init__()
        self.n = n
        layers: list[nn.Module] = []
        d = d_in
        for h in hidden:
            layers += [EnsembleLinear(n, d, h), *([EnsembleLayerNorm(n, h)] if layer_norm else []),
                       nn.ReLU(inplace=True)]
            d = h
        layers.append(EnsembleLinear(n, d, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``(B, d_in)`` -> ``(n, B)``, or ``(len(members), B)`` for a subset (a target that
        needs 2 of 10 members computes only those 2)."""
        for layer in self.net:
            x = layer(x, members) if isinstance(layer, (EnsembleLinear, EnsembleLayerNorm)) \
                else layer(x)
        return x.squeeze(-1)


class LoopEnsembleMLP(nn.Module):
    """The same ensemble as separate ``nn.Sequential`` members run in a Python loop (what
    LeRobot's SAC does); only the update benchmark uses it, as its baseline."""

    def __init__(self, n: int, d_in: int, hidden: list[int], layer_norm: bool = True) -> None:
        super().__init__()
        self.n = n
        self.members = nn.ModuleList([mlp(d_in, hidden, 1, layer_norm) for _ in range(n)])

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        picked = range(self.n) if members is None else members.tolist()
        return torch.stack([self.members[i](x).squeeze(-1) for i in picked])


def mlp(d_in: int, hidden: list[int], d_out: int, layer_norm: bool = False) -> nn.Sequential:
    """(Linear -> [LayerNorm] -> ReLU)* -> Linear."""
    layers: list[nn.Module] = []
    d = d_in
    for h in hidden:
        layers += [nn.Linear(d, h), *([nn.LayerNorm(h)] if layer_norm else []), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


def tanh_gaussian_sample(mean: Tensor, log_std: Tensor, generator: torch.Generator | None = None
                         ) -> tuple[Tensor, Tensor]:
    """Reparameterised sample of ``tanh(N(mean, std))`` and its log-probability ``(B,)``."""
    eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    u = mean + log_std.exp() * eps
    return torch.tanh(u), _squashed_log_prob(u, eps, log_std)


def tanh_gaussian_log_prob(mean: Tensor, log_std: Tensor, action: Tensor,
                           eps: float = 1e-3) -> Tensor:
    """Log-probability ``(B,)`` of given squashed actions in (-1, 1) (clipped by ``eps``)."""
    u = torch.atanh(action.clamp(-1 + eps, 1 - eps))
    return _squashed_log_prob(u, (u - mean) / log_std.exp(), log_std)


def _squashed_log_prob(u: Tensor, z: Tensor, log_std: Tensor) -> Tensor:
    gauss = -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    # log |d tanh(u) / du| = log(1 - tanh(u)^2), in a numerically stable form
    jac = 2 * (math.log(2) - u - F.softplus(-2 * u))
    return (gauss - jac).sum(-1)


def random_shift(images: Tensor, pad: int, generator: torch.Generator | None = None) -> Tensor:
    """DrQ's augmentation: pad by replicating edges, crop back at a random integer offset, one
    offset per image. ``images``: float ``(N, C, H, W)``; one ``grid_sample`` for the batch."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    eps_h, eps_w = 1.0 / (h + 2 * pad), 1.0 / (w + 2 * pad)
    ys = torch.linspace(-1 + eps_h, 1 - eps_h, h + 2 * pad, device=images.device)[:h]
    xs = torch.linspace(-1 + eps_w, 1 - eps_w, w + 2 * pad, device=images.device)[:w]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], -1).unsqueeze(0).expand(n, h, w, 2)
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=images.device,
                          generator=generator).to(images.dtype)
    shift = shift * torch.tensor([2 * eps_w, 2 * eps_h], device=images.device)
    return F.grid_sample(padded, base + shift, padding_mode="zeros", align_corners=False)
