"""Baseline (c): LeRobot 0.6 ``LeRobotDataset``, written with its recording API and read exactly
like ``lerobot-train`` reads it (``delta_timestamps``, ``return_uint8=True``, a torch DataLoader).

Everything stays local: the environment variables in ``OFFLINE_ENV`` are set (unless already set)
before lerobot / datasets / huggingface_hub are imported, and the dataset is always opened with a
``root`` that already holds a complete dataset, so LeRobot never asks the Hub for anything.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no requests at all (raise instead of downloading)
    "HF_DATASETS_OFFLINE": "1",  # datasets: never look a builder/script up online
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # save_episode's per-episode "Map" bars
    "SVT_LOG": "1",  # SVT-AV1 encoder: errors only (it prints its config per episode otherwise)
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from lerobot.datasets import LeRobotDataset  # noqa: E402
from torch.utils.data import DataLoader, default_collate  # noqa: E402

from bench.baselines import (  # noqa: E402
    ACTION,
    ACTION_DIM,
    IMAGE,
    IMAGE_SIZE,
    STATE,
    STATE_DIM,
    Baseline,
    Batch,
    Episode,
    WindowSpec,
)

# lerobot re-enables datasets' progress bars after each load, which warns under the env var above
warnings.filterwarnings("ignore", message="Cannot enable progress bars")

FPS = 10
TASK = "bench"


class LeRobot(Baseline):
    """``use_videos=True``: the camera as an MP4 (lerobot's default encoder, libsvtav1 AV1),
    decoded per sample with lerobot's default backend (torchcodec if it loads, else pyav).
    ``use_videos=False``: the camera as PNG bytes inside the parquet files.
    Episodes without a camera give a low-dim dataset (``use_videos`` then changes nothing)."""

    image_layout = "CHW"

    def __init__(self, spec: WindowSpec | None = None, *, use_videos: bool = True,
                 num_workers: int = 0, fps: int = FPS,
                 repo_id: str = "robolearn/bench-baseline") -> None:
        super().__init__(spec, "LeRobot", "")
        self.use_videos, self.num_workers, self.fps, self.repo_id = (use_videos, num_workers,
                                                                     fps, repo_id)
        self.dataset: LeRobotDataset | None = None

    @property
    def lossless_images(self) -> bool:  # type: ignore[override]
        return not self.use_videos

    def features(self) -> dict[str, dict[str, Any]]:
        feats: dict[str, dict[str, Any]] = {
            STATE: {"dtype": "float32", "shape": (STATE_DIM,), "names": None},
            ACTION: {"dtype": "float32", "shape": (ACTION_DIM,), "names": None}}
        if self.with_images:
            feats[IMAGE] = {"dtype": "video" if self.use_videos else "image",
                            "shape": (IMAGE_SIZE, IMAGE_SIZE, 3),
                            "names": ["height", "width", "channels"]}
        return feats

    def delta_timestamps(self) -> dict[str, list[float]]:
        keys = [STATE, ACTION] + ([IMAGE] if self.with_images else [])
        return {k: [float(d) / self.fps for d in self.spec.offsets(k)] for k in keys}

    def build(self, episodes: Sequence[Episode], workdir: Path) -> None:
        self._register(episodes)
        kind = ("video" if self.use_videos else "images") if self.with_images else "lowdim"
        self.path = workdir / f"lerobot_{kind}"
        shutil.rmtree(self.path, ignore_errors=True)
        writer = LeRobotDataset.create(
            repo_id=self.repo_id, root=self.path, fps=self.fps, features=self.features(),
            use_videos=self.use_videos,
            # lerobot-record's default: 4 PNG-writer threads per camera
            image_writer_threads=4 if self.with_images else 0)
        keys = list(self.features())
        for ep in episodes:
            for t in range(len(ep[ACTION])):
                writer.add_frame({**{k: ep[k][t] for k in keys}, "task": TASK})
            writer.save_episode()
        writer.finalize()
        self._open()

    def _open(self) -> None:
        self.dataset = LeRobotDataset(self.repo_id, root=self.path,
                                      delta_timestamps=self.delta_timestamps(),
                                      return_uint8=True)  # what lerobot-train passes
        meta = self.dataset.meta
        assert list(meta.episodes["dataset_from_index"]) == self.starts.tolist()
        codec = ""
        if self.with_images and self.use_videos:
            info = meta.features[IMAGE]["info"]
            codec = (f"{info['video.codec']} crf {info['video.crf']} g {info['video.g']}, "
                     f"decode {self.dataset._video_backend}")
        elif self.with_images:
            codec = "PNG in parquet"
        self.storage = "parquet" + (f" + {codec}" if codec else "")
        self.name = "LeRobot " + (("video" if self.use_videos else "images")
                                  if self.with_images else "low-dim")

    def windows(self, positions: np.ndarray) -> Batch:
        assert self.dataset is not None, "build() first"
        rows = self.starts[positions[:, 0]] + positions[:, 1]
        return default_collate([self.dataset[int(i)] for i in rows])

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        """lerobot-train's DataLoader (shuffled frames; with workers: prefetch 4, persistent
        workers, spawn context), cycled over epochs like lerobot's ``cycle``."""
        assert self.dataset is not None, "build() first"
        workers: dict[str, Any] = {}
        if self.num_workers > 0:
            workers = {"prefetch_factor": 4, "persistent_workers": True,
                       "multiprocessing_context": "spawn"}
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed),
                            num_workers=self.num_workers, drop_last=False, pin_memory=False,
                            **workers)
        return self._cycle(loader)

    @staticmethod
    def _cycle(loader: DataLoader) -> Iterator[Batch]:
        while True:
            yield from loader

    @property
    def warmup_batches(self) -> int:
        # each worker's first batch carries its start-up (spawn + imports); skip one per worker
        return max(1, self.num_workers)

    def with_workers(self, num_workers: int) -> LeRobot:
        """The same (already built) dataset, read by a DataLoader with ``num_workers`` workers."""
        twin = copy.copy(self)
        twin.num_workers = num_workers
        return twin

    def close(self) -> None:
        self.dataset = None
