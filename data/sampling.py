"""Training windows: past observations and future actions around any step of any episode.

A window around step ``t`` of an episode holds, for each key, the steps ``t + d`` for the key's
offsets ``d`` (``WindowSpec``: observations ``-obs_horizon+1 .. 0``, actions
``0 .. action_horizon-1``). Offsets outside the episode repeat the edge step and are flagged in
``<key>_is_pad`` (LeRobot's naming), so a loss can ignore them.

Batches have shape ``(B, len(offsets), *feature.shape)``; camera frames are ``(B, T, H, W, C)``
uint8 from :class:`WindowSampler` and ``(B, T, C, H, W)`` from the torch dataset.

Low-dim arrays are held in RAM (read once, extended on refresh); camera frames are decoded on
demand from the store's shards (one ``pread`` + JPEG decode each, in a thread pool), or all held
in RAM with ``cache_images=True`` for small stores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from data.layout import FrameReader
from data.schema import StoreCorruptError
from data.store import EpisodeStore


@dataclass(frozen=True)
class WindowSpec:
    """Which steps a training window holds, relative to its anchor step."""

    obs_horizon: int = 2  # past observations, the anchor step included
    action_horizon: int = 16  # future actions, starting at the anchor step
    obs_keys: tuple[str, ...] | None = None  # default: every "observation.*" feature
    action_keys: tuple[str, ...] = ("action",)
    extra: Mapping[str, Sequence[int]] = field(default_factory=dict)  # key -> offsets

    def __post_init__(self) -> None:
        if self.obs_horizon < 1 or self.action_horizon < 1:
            raise ValueError(f"obs_horizon and action_horizon must be >= 1, got "
                             f"{self.obs_horizon}, {self.action_horizon}")

    def offsets(self, store: EpisodeStore) -> dict[str, np.ndarray]:
        obs = self.obs_keys if self.obs_keys is not None else tuple(
            k for k in store.features if k.startswith("observation."))
        out: dict[str, np.ndarray] = {k: np.arange(-self.obs_horizon + 1, 1) for k in obs}
        out.update({k: np.arange(self.action_horizon) for k in self.action_keys})
        out.update({k: np.asarray(v, dtype=np.int64) for k, v in self.extra.items()})
        unknown = [k for k in out if k not in store.keys]
        if unknown:
            raise KeyError(f"{store.name}: window keys {unknown} are not in the store "
                           f"(features: {store.keys})")
        return out


def split_episodes(store: EpisodeStore, val_fraction: float = 0.1, seed: int = 0,
                   episodes: Iterable[int] | None = None) -> tuple[list[int], list[int]]:
    """Split episode indices into train and validation sets, by whole episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    idx = np.array(list(range(len(store)) if episodes is None else episodes), dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(idx)
    n_val = int(round(val_fraction * len(idx)))
    if val_fraction > 0 and n_val == 0 and len(idx) >= 2:
        n_val = 1
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


class WindowSampler:
    """Random access to every window of the chosen episodes of a store.

    ``episodes=None`` means all episodes, including those committed after a :meth:`refresh`.
    """

    def __init__(self, store: EpisodeStore, spec: WindowSpec | None = None,
                 episodes: Iterable[int] | None = None, *, cache_images: bool = False,
                 num_threads: int = 2) -> None:
        self.store = store
        self.spec = spec or WindowSpec()
        self.offsets = self.spec.offsets(store)
        self._episodes = None if episodes is None else list(episodes)
        self.cache_images = cache_images
        self._num_threads = num_threads
        self._pool = ThreadPoolExecutor(num_threads) if num_threads > 1 else None
        self._pool_pid = os.getpid()
        self._image_keys = [k for k in self.offsets if k in store.features
                            and store.features[k].image]
        self._readers = {k: FrameReader(str(store.path / "data" / k), store.shard_len,
                                        store.features[k].shape) for k in self._image_keys}
        self._cache: dict[str, np.ndarray] = {}
        self._cached_rows = 0
        self._load()

    def refresh(self) -> int:
        """Pick up newly committed episodes; returns how many appeared."""
        n = self.store.refresh()
        if n:
            self._load()
        return n

    def _load(self) -> None:
        store = self.store
        infos = store.infos()
        chosen = infos if self._episodes is None else [infos[i] for i in self._episodes]
        self.episode_index = np.array([i.index for i in chosen], dtype=np.int64)
        self.starts = np.array([i.start for i in chosen], dtype=np.int64)
        self.lengths = np.array([i.length for i in chosen], dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.lengths)])
        end = max((i.start + i.length for i in infos), default=0)
        if end > self._cached_rows:  # read only the rows committed since the last load
            for key in self.offsets:
                if key in self._image_keys and not self.cache_images:
                    continue
                new = store.read(key, self._cached_rows, end)
                old = self._cache.get(key)
                self._cache[key] = new if old is None else np.concatenate([old, new])
            self._cached_rows = end

    def __len__(self) -> int:
        return int(self.cum[-1])

    def locate(self, window_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window ids -> (position in the chosen episodes, step within the episode)."""
        ids = np.asarray(window_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"window id out of range [0, {len(self)})")
        ep = np.searchsorted(self.cum, ids, side="right") - 1
        return ep, ids - self.cum[ep]

    def get_batch(self, window_ids: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The windows with these ids: ``{key: (B, T, *shape), key_is_pad: (B, T)}``, plus
        ``episode_index`` and ``step`` of each window's anchor, shape ``(B,)``."""
        ep, t = self.locate(np.asarray(window_ids))
        length = self.lengths[ep][:, None]
        out: dict[str, np.ndarray] = {"episode_index": self.episode_index[ep], "step": t}
        done: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # keys with the same offsets
        for key, off in self.offsets.items():
            sig = off.tobytes()
            if sig not in done:
                raw = t[:, None] + off[None, :]
                done[sig] = ((raw < 0) | (raw >= length),
                             self.starts[ep][:, None] + np.clip(raw, 0, length - 1))
            out[f"{key}_is_pad"], rows = done[sig]
            if key in self._cache:
                out[key] = self._cache[key][rows]
            else:
                out[key] = self._read_frames(key, rows)
        return out

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` windows drawn uniformly over all steps of the chosen episodes."""
        if len(self) == 0:
            raise ValueError(f"{self.store.name}: no episodes to sample from")
        return self.get_batch(rng.integers(0, len(self), size=batch_size))

    def _read_frames(self, key: str, rows: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(rows, return_inverse=True)
        reader = self._readers[key]

        def read(row: int) -> np.ndarray:
            try:
                return reader.read(int(row))
            except (OSError, ValueError, RuntimeError) as exc:
                info = self._episode_of_row(int(row))
                raise StoreCorruptError(f"{self.store.name}: {info}, array data/{key}: {exc}") \
                    from None

        if self._pool is not None and self._pool_pid != os.getpid():
            # A forked child (a DataLoader worker) inherits the pool but not its threads: one
            # that had started threads in the parent would queue work that never runs.
            self._pool = ThreadPoolExecutor(self._num_threads)
            self._pool_pid = os.getpid()
        frames = list(self._pool.map(read, uniq)) if self._pool else [read(r) for r in uniq]
        return np.stack(frames)[inverse.reshape(rows.shape)]

    def _episode_of_row(self, row: int) -> str:
        for info in self.store.infos():
            if info.start <= row < info.start + info.length:
                return f"episode {info.index} (id {info.id}) step {row - info.start}"
        return f"row {row}"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for r in self._readers.values():
            r.close()
