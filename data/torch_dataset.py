"""A torch ``Dataset`` of training windows, safe with several DataLoader worker processes.

Each item is a dict of tensors: ``key -> (T, *shape)`` (camera frames ``(T, C, H, W)`` uint8),
``key_is_pad -> (T,)`` bool, and ``episode_index``/``step``. ``__getitems__`` reads a whole batch
at once (torch's DataLoader calls it when present), so camera frames are decoded in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.sampling import WindowSampler, WindowSpec
from data.store import EpisodeStore


class EpisodeDataset(Dataset):
    """Windows of a store on disk. The store is opened lazily in each process that reads it,
    so the dataset pickles cheaply into DataLoader workers (fork or spawn)."""

    def __init__(self, path: str | Path, spec: WindowSpec | None = None,
                 episodes: Iterable[int] | None = None, *, in_memory: bool = False,
                 num_threads: int = 2) -> None:
        self.path = str(path)
        self.spec = spec or WindowSpec()
        self.episodes = None if episodes is None else list(episodes)
        self.in_memory = in_memory
        self.num_threads = num_threads
        self._sampler: WindowSampler | None = None
        self._len = len(self.sampler)

    @property
    def sampler(self) -> WindowSampler:
        if self._sampler is None:
            store = EpisodeStore.open(self.path, "r")
            self._sampler = WindowSampler(store, self.spec, self.episodes,
                                          cache_images=self.in_memory,
                                          num_threads=self.num_threads)
        return self._sampler

    def refresh(self) -> int:
        """Pick up episodes committed since the dataset was made (only when episodes=None)."""
        n = self.sampler.refresh()
        self._len = len(self.sampler)
        return n

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if not self.in_memory:  # in-memory caches travel with the dataset; open files do not
            state["_sampler"] = None
        return state

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        tensors = self.get_batch(indices)
        return [{k: v[i] for k, v in tensors.items()} for i in range(len(indices))]

    def get_batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch as tensors ``(B, T, ...)``, without per-sample dicts or collation."""
        batch = self.sampler.get_batch(np.asarray(indices))
        tensors = {}
        for key, value in batch.items():
            t = torch.from_numpy(np.ascontiguousarray(value))
            if value.ndim == 5:  # (B, T, H, W, C) camera frames -> (B, T, C, H, W)
                t = t.permute(0, 1, 4, 2, 3)
            tensors[key] = t
        return tensors


class BatchDataset(Dataset):
    """Item = a whole batch: ``loader = DataLoader(BatchDataset(ds), sampler=<yields index
    lists>, batch_size=None)``. The fast path for training: one gather per key per batch."""

    def __init__(self, dataset: EpisodeDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.dataset.get_batch(indices)


def make_dataloader(dataset: EpisodeDataset, batch_size: int, *, shuffle: bool = True,
                    num_workers: int = 0, seed: int = 0, drop_last: bool = True,
                    **kwargs: Any) -> DataLoader:
    """A DataLoader with the settings that suit window datasets (persistent workers)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=gen, drop_last=drop_last,
                      persistent_workers=num_workers > 0, **kwargs)
