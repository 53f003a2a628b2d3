"""Observation encoders: a small CNN per camera, low-dim features concatenated.

:class:`ObsEncoder` maps a batch of observation windows to per-step features::

    {"observation.state": (B, T, D), "observation.images.cam": (B, T, C, H, W) uint8}
        -> (B, T, out_dim)

Each camera has its own :class:`ImageEncoder` (conv stack -> spatial softmax keypoints ->
linear), trained from scratch or initialised from a local safetensors file (nothing downloads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from data.schema import Feature
from policies.normalize import Normalizer
from robolearn_core.config import InvalidValue


@dataclass
class EncoderConfig:
    """The camera encoder shared by every policy (unused when there is no camera)."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # conv widths
    keypoints: int = 32  # spatial-softmax keypoints per camera (features = 2 x keypoints)
    feature_dim: int = 64  # output features per camera per step
    weights: str | None = None  # local .safetensors of an ImageEncoder to start from
    random_shift: int = 0  # training only: shift each frame by up to this many pixels (0 = off)

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise InvalidValue("channels", f"need >= 1 positive widths, got {self.channels}")
        if self.keypoints < 1:
            raise InvalidValue("keypoints", f"must be >= 1, got {self.keypoints}")
        if self.feature_dim < 1:
            raise InvalidValue("feature_dim", f"must be >= 1, got {self.feature_dim}")
        if self.random_shift < 0:
            raise InvalidValue("random_shift", f"must be >= 0 pixels, got {self.random_shift}")


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2K): expected (x, y) in [-1, 1] of K learned keypoint maps."""

    def __init__(self, in_channels: int, keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, keypoints, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        b, k, h, w = x.shape
        attn = F.softmax(x.flatten(2), dim=-1)  # (B, K, H*W)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx.flatten(), gy.flatten()], -1)  # (H*W, 2)
        return (attn @ grid).flatten(1)  # (B, K*2)


def random_shift(x: Tensor, pad: int) -> Tensor:
    """(N, C, H, W) -> same shape, each frame shifted by a random whole number of pixels in
    [-pad, pad] per axis, edges replicated (DrQ's augmentation, Kostrikov et al. 2020)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    # base grid over the central h x w window of the padded frame, in grid_sample's [-1, 1] units
    hp, wp = h + 2 * pad, w + 2 * pad
    ys = torch.linspace(-1 + 1 / hp, 1 - 1 / hp, hp, device=x.device, dtype=x.dtype)[:h]
    xs = torch.linspace(-1 + 1 / wp, 1 - 1 / wp, wp, device=x.device, dtype=x.dtype)[:w]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], -1).unsqueeze(0)  # (1, h, w, 2), the top-left window
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=x.device).to(x.dtype)
    shift = shift * torch.tensor([2 / wp, 2 / hp], device=x.device, dtype=x.dtype)
    return F.grid_sample(padded, base + shift, mode="nearest", align_corners=False)


class ImageEncoder(nn.Module):
    """Normalized float frames (N, C, H, W) -> (N, feature_dim)."""

    def __init__(self, in_channels: int, cfg: EncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c in enumerate(cfg.channels):
            stride = 2 if i < 2 else 1  # two stride-2 convs: 64x64 -> 16x16, 24x24 -> 6x6
            layers += [nn.Conv2d(c_in, c, 3, stride=stride, padding=1),
                       nn.GroupNorm(min(8, c), c), nn.ReLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, cfg.keypoints)
        self.out = nn.Sequential(nn.Linear(2 * cfg.keypoints, cfg.feature_dim), nn.ReLU())
        self.shift = cfg.random_shift
        if cfg.weights:
            self.load_state_dict(load_file(cfg.weights))

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.shift:
            x = random_shift(x, self.shift)
        return self.out(self.pool(self.convs(x)))


class ObsEncoder(nn.Module):
    """Observation window -> per-step features; :meth:`parts` keeps each key separate."""

    def __init__(self, features: Mapping[str, Feature], cfg: EncoderConfig) -> None:
        super().__init__()
        self.keys = sorted(k for k in features if k.startswith("observation."))
        if not self.keys:
            raise ValueError(f"no observation.* features to encode; features: {sorted(features)}")
        self.image_keys = [k for k in self.keys if features[k].image]
        self.cameras = nn.ModuleDict({
            k.replace(".", "__"): ImageEncoder(features[k].shape[2], cfg)
            for k in self.image_keys})
        self.dims = [cfg.feature_dim if features[k].image else int(torch.Size(
            features[k].shape).numel()) for k in self.keys]
        self.out_dim = sum(self.dims)

    def parts(self, batch: Mapping[str, Tensor], norm: Normalizer) -> list[Tensor]:
        """One ``(B, T, d_i)`` tensor per observation key (raw values), in ``self.keys`` order."""
        out = []
        for key in self.keys:
            x = norm.normalize(key, batch[key])
            b, t = x.shape[:2]
            if key in self.image_keys:
                feats = self.cameras[key.replace(".", "__")](x.flatten(0, 1))
                out.append(feats.reshape(b, t, -1))
            else:
                out.append(x.reshape(b, t, -1))
        return out

    def forward(self, batch: Mapping[str, Tensor], norm: Normalizer) -> Tensor:
        return torch.cat(self.parts(batch, norm), dim=-1)
