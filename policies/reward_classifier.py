"""HIL-SERL's learned reward: a binary success classifier on camera frames.

A person labels frames as success or failure (HIL-SERL holds the space bar while the robot
shows success: ``examples/record_success_fail.py``); the classifier learns them, and during
practice ``reward = 1`` when ``sigmoid(logit) > threshold`` (HIL-SERL: 0.85), which also ends
the episode. No task reward is needed, so this works on a real arm.

Model: robolearn's camera encoder (:class:`policies.encoders.ImageEncoder`: convs, spatial
softmax) on each chosen camera, an MLP head, one logit. Training: class-balanced batches (HIL-SERL
advises 2-3x more negatives than positives; balancing keeps the rarer class from being ignored),
random-shift augmentation, Adam. Saved as ``weights.safetensors`` + ``classifier.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from policies.encoders import EncoderConfig, ImageEncoder


@dataclass
class ClassifierConfig:
    cameras: list[str] = field(default_factory=lambda: ["observation.images.front"])  # seen
    threshold: float = 0.85  # success when sigmoid(logit) > threshold (HIL-SERL's)
    hidden: int = 128  # width of the head's hidden layer
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        channels=[16, 32, 32], keypoints=16, feature_dim=64, random_shift=4))  # per camera
    steps: int = 1500  # gradient steps
    batch_size: int = 64  # half positives, half negatives
    lr: float = 1e-3  # Adam's learning rate
    seed: int = 0  # initialisation and batch sampling


class RewardClassifier(nn.Module):
    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders = nn.ModuleList([ImageEncoder(3, cfg.encoder) for _ in cfg.cameras])
        self.head = nn.Sequential(
            nn.Linear(cfg.encoder.feature_dim * len(cfg.cameras), cfg.hidden), nn.ReLU(),
            nn.Linear(cfg.hidden, 1))

    def forward(self, frames: list[Tensor]) -> Tensor:
        """uint8 frames ``(N, H, W, 3)``, one per camera -> logits ``(N,)``."""
        feats = [enc(f.permute(0, 3, 1, 2).float() / 127.5 - 1.0)
                 for enc, f in zip(self.encoders, frames, strict=True)]
        return self.head(torch.cat(feats, -1)).squeeze(-1)

    @torch.no_grad()
    def prob(self, obs: dict[str, Any]) -> float:
        """P(success) of one observation (numpy frames ``(H, W, 3)``)."""
        self.eval()
        frames = [torch.as_tensor(np.asarray(obs[k])).unsqueeze(0) for k in self.cfg.cameras]
        return float(torch.sigmoid(self(frames))[0])

    def reward(self, obs: dict[str, Any]) -> float:
        return float(self.prob(obs) > self.cfg.threshold)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()},
                  str(d / "weights.safetensors"))
        (d / "classifier.json").write_text(json.dumps(asdict(self.cfg), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> RewardClassifier:
        d = Path(directory)
        try:
            raw = json.loads((d / "classifier.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"reward classifier {d}: cannot read classifier.json ({exc})") \
                from None
        raw["encoder"] = EncoderConfig(**{**raw["encoder"], "weights": None})
        model = cls(ClassifierConfig(**raw))
        model.load_state_dict(load_file(str(d / "weights.safetensors")))
        model.eval()
        return model


def train_classifier(frames: dict[str, np.ndarray], labels: np.ndarray,
                     cfg: ClassifierConfig) -> RewardClassifier:
    """Fit on ``frames[camera] (N, H, W, 3)`` uint8 with ``labels (N,)`` in {0, 1}."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"labels: need both success and failure frames, got {len(pos)} "
                         f"success and {len(neg)} failure")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = RewardClassifier(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = {k: torch.as_tensor(frames[k]) for k in cfg.cameras}
    half = cfg.batch_size // 2
    target = torch.cat([torch.ones(half), torch.zeros(half)])
    model.train()
    for _ in range(cfg.steps):
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, half)])
        logits = model([data[k][idx] for k in cfg.cameras])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@torch.no_grad()
def precision_recall(model: RewardClassifier, frames: dict[str, np.ndarray],
                     labels: np.ndarray, batch: int = 256) -> dict[str, float]:
    """Precision and recall of ``prob > threshold`` against ``labels`` (success = positive)."""
    model.eval()
    n = len(labels)
    probs = np.concatenate([torch.sigmoid(model([torch.as_tensor(frames[k][i:i + batch])
                                                 for k in model.cfg.cameras])).numpy()
                            for i in range(0, n, batch)])
    pred, truth = probs > model.cfg.threshold, np.asarray(labels).astype(bool)
    tp = int((pred & truth).sum())
    return {"precision": tp / max(int(pred.sum()), 1), "recall": tp / max(int(truth.sum()), 1),
            "positives": int(truth.sum()), "negatives": int((~truth).sum()),
            "false_positives": int((pred & ~truth).sum())}
