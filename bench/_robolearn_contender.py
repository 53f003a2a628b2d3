"""Contender: robolearn's episode store, read by ``WindowSampler`` in-process (workers=0, the
way a training loop on one process uses it) or by ``EpisodeDataset`` through a torch DataLoader
(workers >= 1, batches assembled by ``__getitems__``)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from bench.baselines import ACTION, IMAGE, STATE, Baseline, Batch, Episode, WindowSpec
from data import EpisodeStore
from data.sampling import WindowSampler
from data.sampling import WindowSpec as StoreWindowSpec
from data.torch_dataset import EpisodeDataset, make_dataloader

FPS = 10


class Robolearn(Baseline):
    lossless_images = False  # JPEG q90

    def __init__(self, spec: WindowSpec | None = None, num_workers: int = 0) -> None:
        super().__init__(spec, "robolearn store", "zarr v3, JPEG q90 shards + blosc")
        self.num_workers = num_workers
        self.sampler: WindowSampler | None = None

    def build(self, episodes: Sequence[Episode], workdir: Path) -> None:
        self._register(episodes)
        self.path = workdir / "robolearn.zarr"
        first = episodes[0]
        features = {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:])}
                    for k, v in first.items() if k in (STATE, ACTION, IMAGE)}
        with EpisodeStore.create(self.path, features, fps=FPS) as store, \
                store.recorder(task="bench", source="teleop") as rec:
            for ep in episodes:
                for k in range(len(ep[ACTION])):
                    rec.add({key: ep[key][k] for key in features})
                rec.end_episode(success=True)
        self.store_spec = StoreWindowSpec(self.spec.obs_horizon, self.spec.action_horizon)
        self.sampler = WindowSampler(EpisodeStore.open(self.path), self.store_spec)

    def with_workers(self, n: int) -> Robolearn:
        other = copy.copy(self)
        other.num_workers = n
        other.name = f"robolearn {'sampler' if n == 0 else 'DataLoader'}"
        other.image_layout = "HWC" if n == 0 else "CHW"
        return other

    def windows(self, positions: np.ndarray) -> Batch:
        assert self.sampler is not None
        return self.sampler.get_batch(self.sampler.cum[positions[:, 0]] + positions[:, 1])

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[Batch]:
        if self.num_workers == 0:
            yield from super().batches(batch_size, seed)
            return
        ds = EpisodeDataset(self.path, self.store_spec)
        loader = make_dataloader(ds, batch_size, num_workers=self.num_workers, seed=seed,
                                 prefetch_factor=4)
        while True:
            yield from loader

    @property
    def warmup_batches(self) -> int:
        return max(1, self.num_workers)

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
