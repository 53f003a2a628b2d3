"""Dataset statistics and the module that normalizes with them.

``compute_stats(store, keys)`` streams over a store's episodes (one episode's rows of one key at a
time) and returns, per key, ``{"mean", "std", "min", "max"}`` arrays:

- low-dim features: element-wise over every step, shape ``feature.shape``;
- camera frames: per channel, in ``[0, 1]`` units (pixel / 255), shape ``(C,)``, from a
  subsample of at most ``image_frames_per_episode`` evenly spaced frames per episode.

:class:`Normalizer` holds those statistics as buffers (saved with the weights) and maps a key's
values to network units: ``"mean_std"`` -> zero mean, unit std; ``"min_max"`` -> ``[-1, 1]``;
camera frames (uint8) -> ``(x / 255 - mean) / std`` per channel. ``clip`` bounds chosen keys in
network units (``|x| <= clip[key]``), so an observation far outside the training data (a cube
tilted in a sloppy grasp: 40 std away for a component that is flat in every demonstration) reaches
the network as the edge of what it saw rather than as an input it never learned to handle.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from data.schema import Feature, StoreError
from data.store import EpisodeInfo, EpisodeStore

Stats = dict[str, dict[str, np.ndarray]]
EPS = 1e-6
NORM_MODES = ("mean_std", "min_max", "identity")


def compute_stats(store: EpisodeStore, keys: Iterable[str], *,
                  image_frames_per_episode: int = 16,
                  episodes: Iterable[int] | None = None) -> Stats:
    """Per-key mean, std, min and max over every episode of ``store``, or over the episode
    indices ``episodes`` (see module doc). A NaN or infinite value is a :class:`StoreError`
    naming its episode, key and step: statistics of it would make every weight NaN."""
    out: Stats = {}
    infos = store.infos()
    if episodes is not None:
        infos = [infos[i] for i in episodes]
    if not infos:
        raise ValueError(f"{store.name}: no episodes to compute statistics from")
    for key in keys:
        feat = store.features[key]
        count, total, total_sq = 0, None, None
        lo, hi = None, None
        for info in infos:
            if feat.image:
                n = min(info.length, image_frames_per_episode)
                steps = np.unique(np.linspace(0, info.length - 1, n).round().astype(np.int64))
                frames = np.stack([store.read(key, info.start + s, info.start + s + 1, info)[0]
                                   for s in steps])  # (n, H, W, C)
                x = frames.reshape(-1, frames.shape[-1]).astype(np.float64) / 255.0  # (N, C)
            else:
                x = store.read(key, info.start, info.start + info.length, info)
                _check_finite(store, info, key, x)
                x = x.astype(np.float64).reshape(len(x), *feat.shape)
            s, sq = x.sum(0), np.square(x).sum(0)
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            lo = x.min(0) if lo is None else np.minimum(lo, x.min(0))
            hi = x.max(0) if hi is None else np.maximum(hi, x.max(0))
            count += len(x)
        assert total is not None and total_sq is not None and lo is not None and hi is not None
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
        out[key] = {"mean": mean.astype(np.float32), "std": std.astype(np.float32),
                    "min": lo.astype(np.float32), "max": hi.astype(np.float32)}
    return out


def offset_stats(store: EpisodeStore, ref: str, episodes: Iterable[int]) -> dict[str, np.ndarray]:
    """Mean, std, min and max of ``action`` minus the first A entries of observation ``ref``
    over ``episodes``: the statistics of a policy that predicts offsets
    (``MLPConfig.action_offset``)."""
    infos = store.infos()
    dim = store.features["action"].shape[0]
    diffs = []
    for i in episodes:
        info = infos[i]
        a = store.read("action", info.start, info.start + info.length, info)
        r = store.read(ref, info.start, info.start + info.length, info)
        diffs.append(a.astype(np.float64) - r.reshape(len(r), -1)[:, :dim])
    d = np.concatenate(diffs)
    return {"mean": d.mean(0).astype(np.float32), "std": d.std(0).astype(np.float32),
            "min": d.min(0).astype(np.float32), "max": d.max(0).astype(np.float32)}


def check_finite(store: EpisodeStore, keys: Iterable[str], episodes: Iterable[int]) -> None:
    """Raise a :class:`StoreError` naming the first NaN or infinite value of the low-dim
    ``keys`` in ``episodes`` (its episode, key and step); camera frames are integers."""
    infos = store.infos()
    low_dim = [k for k in keys if not store.features[k].image]
    for i in episodes:
        info = infos[i]
        for key in low_dim:
            _check_finite(store, info, key, store.read(key, info.start,
                                                       info.start + info.length, info))


def _check_finite(store: EpisodeStore, info: EpisodeInfo, key: str, x: np.ndarray) -> None:
    if not np.issubdtype(x.dtype, np.floating):
        return
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        step = int(bad.any(axis=1).argmax())
        value = x.reshape(len(x), -1)[step][bad[step]][0]
        raise StoreError(f"{store.name}: episode {info.index} (id {info.id}), {key}, step "
                         f"{step}: {value} is not a finite number; training on it would make "
                         "every weight NaN (delete the episode or fix the recording)")


def _buffer_name(key: str, what: str) -> str:
    return f"{key.replace('.', '__')}__{what}"


class Normalizer(nn.Module):
    """Maps each key to network units and back; ``modes`` gives each low-dim key's mode."""

    def __init__(self, features: Mapping[str, Feature], stats: Stats,
                 modes: Mapping[str, str], clip: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.features = dict(features)
        self.modes = dict(modes)
        self.clip = dict(clip or {})
        for key, mode in self.modes.items():
            if mode not in NORM_MODES:
                raise ValueError(f"normalization of {key!r}: {mode!r} not one of {NORM_MODES}")
            if key not in stats:
                raise KeyError(f"no statistics for {key!r}; stats have {sorted(stats)}")
            st = {k: np.asarray(v, dtype=np.float32) for k, v in stats[key].items()}
            offset: np.ndarray
            scale: np.ndarray
            if self.features[key].image or mode == "mean_std":
                offset, scale = st["mean"], np.maximum(st["std"], EPS)
            elif mode == "min_max":
                offset = (st["max"] + st["min"]) / 2
                scale = np.maximum((st["max"] - st["min"]) / 2, EPS)
            else:
                offset, scale = np.zeros_like(st["mean"]), np.ones_like(st["mean"])
            if self.features[key].image:  # per channel, broadcast over (..., C, H, W)
                offset, scale = offset.reshape(-1, 1, 1), scale.reshape(-1, 1, 1)
            self.register_buffer(_buffer_name(key, "offset"), torch.from_numpy(offset.copy()))
            self.register_buffer(_buffer_name(key, "scale"), torch.from_numpy(scale.copy()))

    def _get(self, key: str) -> tuple[Tensor, Tensor]:
        return (getattr(self, _buffer_name(key, "offset")),
                getattr(self, _buffer_name(key, "scale")))

    def normalize(self, key: str, x: Tensor) -> Tensor:
        """Raw values (uint8 frames ``(..., C, H, W)`` or low-dim ``(..., *shape)``) -> float."""
        offset, scale = self._get(key)
        if self.features[key].image:
            x = x.float() / 255.0
        y = (x.float() - offset) / scale
        bound = self.clip.get(key)
        return y if bound is None else y.clamp(-bound, bound)

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        offset, scale = self._get(key)
        return x * scale + offset
