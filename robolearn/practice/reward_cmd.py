"""``robolearn reward train STORE``: HIL-SERL's reward classifier from labelled frames.

The labels are a per-step feature of the store (``labels=label.success``: 1 where a person
marked the frame a success, 0 elsewhere; ``bench.practice classifier`` records them with the
simulator's verdict standing in for the person). Episodes ``holdout`` (the last N) are kept out
of training and measured: precision and recall of ``P(success) > threshold``. The classifier is
saved in ``output`` and an actor uses it with ``reward_classifier=DIR``: its reward is then 1 on
a frame the classifier calls a success (which ends the episode), 0 otherwise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data import EpisodeStore, StoreError
from policies.reward_classifier import (
    ClassifierConfig,
    precision_recall,
    train_classifier,
)
from robolearn_core.config import ConfigError, InvalidValue

log = logging.getLogger("robolearn.reward")


@dataclass
class RewardTrainConfig:
    store: str = ""  # episode store with camera frames and a per-step label feature
    output: str = "outputs/reward_classifier"  # weights.safetensors, classifier.json, eval.json
    labels: str = "label.success"  # the per-step feature: 1 success, 0 failure
    holdout: int = 4  # last episodes kept out of training, measured
    # HIL-SERL's next round: stores of reviewed practice episodes (an actor's episodes.zarr;
    # success is the task's verdict, or a person's): every frame of a failed episode is a
    # failure (the policy's false positives among them), the last frame of a successful one (it
    # ended there) a success; episodes of unknown success are not used
    reviewed: list[str] = field(default_factory=list)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)  # model, training

    def __post_init__(self) -> None:
        if not self.store:
            raise InvalidValue("store", "name the store of labelled frames")
        if self.holdout < 0:
            raise InvalidValue("holdout", f"must be >= 0, got {self.holdout}")


def load_labelled(store_path: str, cameras: list[str], labels: str, episodes: range
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    try:
        with EpisodeStore.open(store_path, "r") as store:
            missing = [k for k in [*cameras, labels] if k not in store.features]
            if missing:
                raise ConfigError(f"store: {store_path} lacks {missing} (it has "
                                  f"{sorted(store.features)})")
            frames: dict[str, list[np.ndarray]] = {k: [] for k in cameras}
            ys = []
            for i in episodes:
                ep = store.episode(i, [*cameras, labels])
                for k in cameras:
                    frames[k].append(np.asarray(ep[k]))
                ys.append(np.asarray(ep[labels]).reshape(-1))
    except (StoreError, OSError) as exc:
        raise ConfigError(f"store: {store_path}: {exc}") from None
    return {k: np.concatenate(v) for k, v in frames.items()}, np.concatenate(ys)


def load_reviewed(store_path: str, cameras: list[str]
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Frames and labels from the reviewed episodes of ``store_path``: every frame of each
    failed episode (0), the last frame of each successful one (1)."""
    try:
        with EpisodeStore.open(store_path, "r") as store:
            missing = [k for k in cameras if k not in store.features]
            if missing:
                raise ConfigError(f"reviewed: {store_path} lacks {missing} (record the "
                                  f"practice with those cameras: robot.cameras=...)")
            verdicts = [(i, info.success) for i, info in enumerate(store.infos())
                        if info.success is not None]
            frames: dict[str, list[np.ndarray]] = {k: [] for k in cameras}
            ys = []
            for i, ok in verdicts:
                ep = store.episode(i, cameras)
                for k in cameras:
                    frames[k].append(np.asarray(ep[k])[-1:] if ok else np.asarray(ep[k]))
                ys.append(np.full(1 if ok else len(ep[cameras[0]]), float(ok), np.float32))
    except (StoreError, OSError) as exc:
        raise ConfigError(f"reviewed: {store_path}: {exc}") from None
    if not verdicts:
        raise ConfigError(f"reviewed: {store_path} has no episode with a success verdict")
    return {k: np.concatenate(v) for k, v in frames.items()}, np.concatenate(ys)


def train(cfg: RewardTrainConfig) -> int:
    out = Path(cfg.output)
    if (out / "classifier.json").exists():
        raise ConfigError(f"output: {out} already holds a classifier")
    with EpisodeStore.open(cfg.store, "r") as store:
        n = len(store)
    if n <= cfg.holdout:
        raise ConfigError(f"holdout: {cfg.store} has {n} episodes; keep fewer than that out")
    cams = cfg.classifier.cameras
    x, y = load_labelled(cfg.store, cams, cfg.labels, range(n - cfg.holdout))
    n_labelled = len(y)
    for path in cfg.reviewed:
        xr, yr = load_reviewed(path, cams)
        x = {k: np.concatenate([x[k], xr[k]]) for k in cams}
        y = np.concatenate([y, yr.astype(y.dtype)])
    try:
        model = train_classifier(x, y, cfg.classifier)
    except ValueError as exc:
        raise ConfigError(f"{cfg.labels}: {exc}") from None
    model.save(out)
    report: dict[str, Any] = {"train_frames": len(y), "train_positives": int(y.sum()),
                              "reviewed_frames": len(y) - n_labelled,
                              "reviewed_positives": int(y[n_labelled:].sum())}
    if cfg.holdout:
        xh, yh = load_labelled(cfg.store, cams, cfg.labels, range(n - cfg.holdout, n))
        report["heldout"] = precision_recall(model, xh, yh)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    log.info("reward classifier -> %s: %s", out, json.dumps(report))
    return 0
