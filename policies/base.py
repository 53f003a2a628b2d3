"""The interface every behaviour-cloning policy implements, and what they share.

A policy is built from its config, the store's features (observations + ``"action"``) and the
dataset statistics (:func:`policies.normalize.compute_stats`)::

    policy = make_policy("mlp", features, stats, obs_horizon=2)
    spec = policy.window_spec()                      # the windows it trains on
    loss, info = policy.compute_loss(batch)          # batch: {key: (B, T, *shape), key_is_pad}
    policy.reset(); action = policy.select_action(obs)   # obs: one step, action: float32 (A,)
    policy.save("ckpt/"); same = Policy.load("ckpt/")

Everything in network units (normalization, chunks, queues, observation history) stays inside
the policy; ``select_action`` takes what the robot observes and returns the robot's action units.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from data.sampling import WindowSpec
from data.schema import Feature
from policies.checksums import CheckpointError, verify, write_sums
from policies.encoders import EncoderConfig, ObsEncoder
from policies.normalize import NORM_MODES, Normalizer, Stats
from robolearn_core.config import ConfigError, InvalidValue, load_config, to_yaml

WEIGHTS, CONFIG, META = "model.safetensors", "config.yaml", "policy.json"
FILES = (WEIGHTS, CONFIG, META)  # a saved policy; SHA256SUMS records their checksums


@dataclass
class PolicyConfig:
    """Fields every policy has; each policy's config extends it."""

    obs_horizon: int = 2  # past observation steps fed to the network, the current one included
    action_horizon: int = 16  # actions predicted per chunk, starting at the current step
    n_action_steps: int = 8  # actions executed from each chunk before predicting again
    action_norm: str = "mean_std"  # action units in the network: mean_std | min_max
    obs_clip: float | None = None  # bound on low-dim observations in network units (stds)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # camera encoder
    device: str = "auto"  # torch device; "auto" = cuda when available, else cpu
    seed: int = 0  # seeds sampling noise at inference (reset() restarts it)

    def __post_init__(self) -> None:
        if self.obs_horizon < 1:
            raise InvalidValue("obs_horizon", f"must be >= 1, got {self.obs_horizon}")
        if self.action_horizon < 1:
            raise InvalidValue("action_horizon", f"must be >= 1, got {self.action_horizon}")
        if not 1 <= self.n_action_steps <= self.action_horizon:
            raise InvalidValue("n_action_steps", f"must be in [1, action_horizon="
                               f"{self.action_horizon}], got {self.n_action_steps}")
        if self.obs_clip is not None and self.obs_clip <= 0:
            raise InvalidValue("obs_clip", f"must be > 0 or null, got {self.obs_clip}")
        if self.action_norm not in NORM_MODES[:2]:
            raise InvalidValue("action_norm", f"{self.action_norm!r} not one of {NORM_MODES[:2]}")


def masked_mean(err: Tensor, is_pad: Tensor) -> Tensor:
    """Mean of ``err`` (B, T, A) over the steps that are not padding (``is_pad``: (B, T))."""
    keep = (~is_pad).unsqueeze(-1).to(err.dtype)
    return (err * keep).sum() / (keep.sum() * err.shape[-1]).clamp(min=1.0)


class Policy(nn.Module):
    """Base class: normalization, observation encoder, history, action queue, save/load."""

    name: ClassVar[str] = "policy"  # registry name
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig, features: Mapping[str, Feature],
                 stats: Stats) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                            f"got {type(config).__name__}")
        if "action" not in features or len(features["action"].shape) != 1:
            raise ValueError(f"features need a 1-D 'action'; got {sorted(features)}")
        self.config = config
        self.features = dict(features)
        self.stats = {k: {s: np.asarray(v, np.float32) for s, v in d.items()}
                      for k, d in stats.items() if k in features}
        self.action_dim = features["action"].shape[0]
        self.obs_keys = sorted(k for k in features if k.startswith("observation."))
        modes = {k: "mean_std" for k in self.obs_keys}
        modes["action"] = config.action_norm
        clip = {k: config.obs_clip for k in self.obs_keys
                if config.obs_clip is not None and not features[k].image}
        self.normalizer = Normalizer(self.features, self.stats, modes, clip)
        self.encoder = ObsEncoder(self.features, config.encoder)
        self._history: deque[dict[str, Tensor]] = deque(maxlen=config.obs_horizon)
        self._queue: deque[Tensor] = deque()
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ training
    def window_spec(self) -> WindowSpec:
        return WindowSpec(obs_horizon=self.config.obs_horizon,
                          action_horizon=self.config.action_horizon,
                          obs_keys=tuple(self.obs_keys))

    def compute_loss(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Scalar training loss of a batch of windows, and numbers worth logging."""
        raise NotImplementedError

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Observation windows ``(B, obs_horizon, ...)`` -> actions ``(B, action_horizon, A)``
        in the robot's units."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(iter(self.buffers())).device

    def to_device(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()
                if isinstance(v, Tensor)}

    # ------------------------------------------------------------------ control
    def reset(self, seed: int | None = None) -> None:
        """Forget history, queued actions and sampling noise: call at each episode start.
        ``seed`` (the episode's) seeds the sampling noise with the policy's own seed, so each
        episode draws its own noise and the same episode seed always draws the same: episodes
        are reproducible one by one, and no two share a noise sequence."""
        self._history.clear()
        self._queue.clear()
        noise_seed = self.config.seed if seed is None else self.config.seed * 1_000_003 + seed
        self._generator = torch.Generator(self.device).manual_seed(noise_seed % 2**63)

    def _obs_tensor(self, key: str, value: Any) -> Tensor:
        feat = self.features[key]
        x = torch.as_tensor(np.asarray(value, dtype=feat.dtype))
        if feat.image and tuple(x.shape) == feat.shape:  # (H, W, C) as robots give -> (C, H, W)
            x = x.permute(2, 0, 1)
        return x.unsqueeze(0).to(self.device)

    def _next_action(self, window: dict[str, Tensor]) -> Tensor:
        """Action ``(A,)`` for this step: the next one of the queued chunk, re-planned every
        ``n_action_steps`` steps. ACT overrides this with temporal ensembling."""
        if not self._queue:
            chunk = self.predict_chunk(window)[0]
            self._queue.extend(chunk[: self.config.n_action_steps])
        return self._queue.popleft()

    @property
    def queued(self) -> int:
        """Actions left of the current chunk: 0 means the next :meth:`select_action` plans."""
        return len(self._queue)

    def observe(self, obs: Mapping[str, Any]) -> dict[str, Tensor]:
        """Add one step's observation to the history; returns the window that ends with it,
        ``{key: (1, obs_horizon, *shape)}`` (an episode's first step is repeated to fill it,
        as padded training windows are)."""
        frame = {k: self._obs_tensor(k, obs[k]) for k in self.obs_keys}
        while len(self._history) < self.config.obs_horizon - 1:
            self._history.append(frame)
        self._history.append(frame)
        return {k: torch.stack([h[k] for h in self._history], dim=1) for k in self.obs_keys}

    @torch.no_grad()
    def plan(self, window: Mapping[str, Tensor]) -> Tensor:
        """The action chunk ``(action_horizon, A)`` (float32, CPU, robot units) for a window
        from :meth:`observe`: what :meth:`select_action` queues, for a caller that executes
        chunks itself (:class:`policies.async_inference.AsyncChunks`, in another thread).
        The policy must be in eval mode (:meth:`load` returns it so)."""
        return self.predict_chunk(window)[0].float().cpu()

    @torch.no_grad()
    def select_action(self, obs: Mapping[str, Any]) -> np.ndarray:
        """One control step: ``obs`` holds one value per observation key (camera frames
        ``(H, W, C)`` or ``(C, H, W)`` uint8); returns float32 ``(A,)``.

        A non-finite output is returned as it is, never replaced: the safety filter between
        every policy and the robot (:class:`robolearn.safety.SafetyFilter`) holds or stops the
        robot and counts it, so an evaluation reports a broken network instead of hiding it.
        The rest of a chunk that held one is dropped: the next step plans again."""
        if self._generator is None:
            self.reset()
        was_training = self.training
        self.eval()
        try:
            window = self.observe(obs)
            action = self._next_action(window).float().cpu().numpy().astype(np.float32)
        finally:
            self.train(was_training)
        if not np.isfinite(action).all():
            self._queue.clear()
        return action.copy()

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path) -> Path:
        """Weights (safetensors), config (YAML), features and stats (JSON) in ``directory``,
        with their SHA-256 checksums (``SHA256SUMS``, verified by :meth:`load`)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self, str(path / WEIGHTS))
        (path / CONFIG).write_text(to_yaml(self.config))
        meta = {"policy": self.name,
                "features": {k: f.to_json() for k, f in self.features.items()},
                "stats": {k: {s: v.tolist() for s, v in d.items()} for k, d in self.stats.items()}}
        (path / META).write_text(json.dumps(meta, indent=1))
        write_sums(path, FILES)
        return path

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Policy:
        """A policy saved by :meth:`save`; ``device`` overrides the saved config's. A missing,
        damaged or unreadable file is a :class:`CheckpointError` naming it."""
        from policies import make_policy, policy_class

        path = Path(directory)
        verify(path, FILES)
        try:
            meta = json.loads((path / META).read_text())
            name = meta["policy"]
            config_class = policy_class(name).config_class
            features = {k: Feature.from_spec(k, v) for k, v in meta["features"].items()}
            stats = {k: {s: np.asarray(v, np.float32) for s, v in d.items()}
                     for k, d in meta["stats"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path / META}: not a policy description "
                                  f"({type(exc).__name__}: {exc})") from None
        try:
            config = load_config(config_class, path / CONFIG,
                                 [f"device={device}"] if device else [])
        except ConfigError as exc:
            raise CheckpointError(str(exc)) from None
        policy = make_policy(name, features, stats, config=config)
        try:
            load_model(policy, str(path / WEIGHTS), strict=True, device=str(policy.device))
        except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path / WEIGHTS}: cannot load the weights of this {name} "
                                  f"policy ({str(exc).splitlines()[0]})") from None
        return policy.eval()
