"""Training windows (data.sampling) and the torch dataset, checked against a naive reference
built from whole episodes read back from a real store."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from data import EpisodeStore
from data.sampling import WindowSampler, WindowSpec, split_episodes
from data.torch_dataset import EpisodeDataset, make_dataloader
from tests.conftest import CAM, FEATURES, make_frame, record_store

LENGTHS = (12, 7, 20, 1, 5)
Batch = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_store(tmp_path_factory.mktemp("sampling") / "store", LENGTHS)


@pytest.fixture(scope="module")
def episodes(store_path: Path) -> list[dict[str, np.ndarray]]:
    """Every episode's arrays, read whole (the reference's input)."""
    store = EpisodeStore.open(store_path, "r")
    return [dict(store.episode(i).data) for i in range(len(store))]


def reference_offsets(spec: WindowSpec, keys: Sequence[str]) -> dict[str, list[int]]:
    """The offsets WindowSpec documents: past observations, future actions, extras."""
    obs = spec.obs_keys if spec.obs_keys is not None else [
        k for k in keys if k.startswith("observation.")]
    out = {k: list(range(-spec.obs_horizon + 1, 1)) for k in obs}
    out.update({k: list(range(spec.action_horizon)) for k in spec.action_keys})
    out.update({k: list(v) for k, v in spec.extra.items()})
    return out


def reference_batch(episodes: list[dict[str, np.ndarray]], chosen: Sequence[int],
                    spec: WindowSpec, window_ids: Sequence[int]) -> Batch:
    """Windows by brute force: walk the chosen episodes step by step, clamp, flag padding."""
    offsets = reference_offsets(spec, list(FEATURES))
    anchors = [(e, t) for e in chosen for t in range(len(episodes[e]["action"]))]
    out: dict[str, list[np.ndarray]] = {"episode_index": [], "step": []}
    for wid in window_ids:
        e, t = anchors[wid]
        data, n = episodes[e], len(episodes[e]["action"])
        out["episode_index"].append(np.array(e, np.int64))
        out["step"].append(np.array(t, np.int64))
        for key, offs in offsets.items():
            rows, pad = [], []
            for d in offs:
                s = t + d
                pad.append(s < 0 or s >= n)
                rows.append(data[key][min(max(s, 0), n - 1)])
            out.setdefault(key, []).append(np.stack(rows))
            out.setdefault(f"{key}_is_pad", []).append(np.array(pad))
    return {k: np.stack(v) for k, v in out.items()}


def assert_batches_equal(got: Batch, want: Batch) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


SPECS = [
    WindowSpec(obs_horizon=1, action_horizon=1),
    WindowSpec(obs_horizon=2, action_horizon=4),
    WindowSpec(obs_horizon=3, action_horizon=8, extra={"source": (-2, 0, 5),
                                                       "timestamp": (1,)}),
    WindowSpec(obs_horizon=4, action_horizon=2, obs_keys=(CAM,)),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"obs{s.obs_horizon}-act{s.action_horizon}")
@pytest.mark.parametrize("chosen", [None, [4, 2, 0], [3]], ids=["all", "subset", "one-step"])
def test_windows_match_reference(store_path: Path, episodes: list[dict[str, np.ndarray]],
                                 spec: WindowSpec, chosen: list[int] | None) -> None:
    sampler = WindowSampler(EpisodeStore.open(store_path, "r"), spec, chosen)
    try:
        eps = list(range(len(LENGTHS))) if chosen is None else chosen
        total = sum(LENGTHS[e] for e in eps)
        assert len(sampler) == total
        rng = np.random.default_rng(0)
        # every window (edges included), in random order, plus repeats
        ids = np.concatenate([rng.permutation(total), rng.integers(0, total, 5)])
        got = sampler.get_batch(ids)
        want = reference_batch(episodes, eps, spec, ids.tolist())
        assert_batches_equal(got, want)
        assert got[CAM].dtype == np.uint8 and got[CAM].ndim == 5
        for key in reference_offsets(spec, list(FEATURES)):
            assert got[f"{key}_is_pad"].dtype == bool
        with pytest.raises(IndexError):
            sampler.get_batch([total])
    finally:
        sampler.close()


def test_pad_masks_are_true_exactly_outside_the_episode(
        store_path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    spec = WindowSpec(obs_horizon=3, action_horizon=6)
    sampler = WindowSampler(EpisodeStore.open(store_path, "r"), spec, [2])  # 20 steps
    try:
        batch = sampler.get_batch(np.arange(20))
        steps = batch["step"][:, None]
        obs_t = steps + np.arange(-2, 1)[None, :]
        act_t = steps + np.arange(6)[None, :]
        np.testing.assert_array_equal(batch["observation.state_is_pad"], obs_t < 0)
        np.testing.assert_array_equal(batch["action_is_pad"], act_t >= 20)
        assert batch["observation.state_is_pad"].sum() == 2 + 1  # steps 0 and 1
        assert batch["action_is_pad"].sum() == sum(range(1, 6))  # steps 15..19
        # padded entries repeat the edge step
        actions = episodes[2]["action"]
        np.testing.assert_array_equal(batch["action"][19], np.repeat(actions[-1:], 6, axis=0))
        np.testing.assert_array_equal(batch[CAM][0, :2], batch[CAM][0, 2:].repeat(2, axis=0))
    finally:
        sampler.close()


def test_sample_draws_valid_windows(store_path: Path,
                                    episodes: list[dict[str, np.ndarray]]) -> None:
    spec = WindowSpec(obs_horizon=2, action_horizon=3)
    sampler = WindowSampler(EpisodeStore.open(store_path, "r"), spec, cache_images=True)
    try:
        batch = sampler.sample(64, np.random.default_rng(1))
        assert batch["action"].shape == (64, 3, 2)
        assert batch[CAM].shape == (64, 2, 32, 32, 3)
        cum = np.concatenate([[0], np.cumsum(LENGTHS)])
        ids = cum[batch["episode_index"]] + batch["step"]
        assert_batches_equal(batch, reference_batch(episodes, range(len(LENGTHS)), spec,
                                                    ids.tolist()))
        again = sampler.sample(64, np.random.default_rng(1))
        assert_batches_equal(again, batch)  # same seed, same windows
    finally:
        sampler.close()


def test_cached_images_equal_decoded_on_demand(store_path: Path) -> None:
    spec = WindowSpec(obs_horizon=2, action_horizon=2)
    ids = np.arange(sum(LENGTHS))
    a = WindowSampler(EpisodeStore.open(store_path, "r"), spec, cache_images=True)
    b = WindowSampler(EpisodeStore.open(store_path, "r"), spec, num_threads=1)
    try:
        assert_batches_equal(a.get_batch(ids), b.get_batch(ids))
    finally:
        a.close()
        b.close()


def test_bad_specs_are_rejected(store_path: Path) -> None:
    with pytest.raises(ValueError, match="horizon"):
        WindowSpec(obs_horizon=0)
    store = EpisodeStore.open(store_path, "r")
    with pytest.raises(KeyError, match="reward"):
        WindowSampler(store, WindowSpec(action_keys=("reward",)))


def test_refresh_sees_a_newly_committed_episode(
        tmp_path: Path, episodes: list[dict[str, np.ndarray]]) -> None:
    path = record_store(tmp_path / "store", LENGTHS[:2])
    spec = WindowSpec(obs_horizon=2, action_horizon=4)
    sampler = WindowSampler(EpisodeStore.open(path, "r"), spec)
    try:
        assert len(sampler) == sum(LENGTHS[:2])
        with EpisodeStore.open(path, "a") as writer, writer.recorder() as rec:
            for t in range(LENGTHS[2]):  # the same steps as episode 2 of the module store
                rec.add(make_frame(FEATURES, 2, t), source="teleop" if t % 2 else "policy")
            assert sampler.refresh() == 0
            rec.end_episode(success=True)
        assert sampler.refresh() == 1
        assert len(sampler) == sum(LENGTHS[:3])
        ids = np.arange(sum(LENGTHS[:3]))
        want = reference_batch(episodes, [0, 1, 2], spec, ids.tolist())
        assert_batches_equal(sampler.get_batch(ids), want)
    finally:
        sampler.close()


# ----------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def ten_episodes(tmp_path_factory: pytest.TempPathFactory) -> EpisodeStore:
    feats = {k: v for k, v in FEATURES.items() if k != CAM}
    path = record_store(tmp_path_factory.mktemp("split") / "s", [2] * 10, features=feats)
    return EpisodeStore.open(path, "r")


@pytest.mark.parametrize("val_fraction", [0.0, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_episodes_is_a_deterministic_partition(ten_episodes: EpisodeStore,
                                                     val_fraction: float, seed: int) -> None:
    train, val = split_episodes(ten_episodes, val_fraction, seed)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == list(range(10))
    expected_val = max(1, round(10 * val_fraction)) if val_fraction > 0 else 0
    assert len(val) == expected_val
    assert split_episodes(ten_episodes, val_fraction, seed) == (train, val)


def test_split_depends_on_seed_and_respects_subset(ten_episodes: EpisodeStore) -> None:
    vals = {tuple(split_episodes(ten_episodes, 0.3, seed)[1]) for seed in range(10)}
    assert len(vals) > 1
    train, val = split_episodes(ten_episodes, 0.5, 3, episodes=[1, 3, 5, 7])
    assert sorted(train + val) == [1, 3, 5, 7] and len(val) == 2
    with pytest.raises(ValueError, match="val_fraction"):
        split_episodes(ten_episodes, 1.0)


# ----------------------------------------------------------------------------- torch


def to_numpy_batch(batch: dict[str, torch.Tensor]) -> Batch:
    out = {}
    for key, t in batch.items():
        if t.ndim == 5:  # (B, T, C, H, W) -> (B, T, H, W, C)
            t = t.permute(0, 1, 3, 4, 2)
        out[key] = t.numpy()
    return out


TORCH_SPEC = WindowSpec(obs_horizon=2, action_horizon=4)


def test_dataloader_with_workers_matches_sampler(store_path: Path) -> None:
    ds = EpisodeDataset(store_path, TORCH_SPEC, episodes=[0, 2, 4])
    n = LENGTHS[0] + LENGTHS[2] + LENGTHS[4]
    assert len(ds) == n
    sampler = WindowSampler(EpisodeStore.open(store_path, "r"), TORCH_SPEC, [0, 2, 4])
    try:
        loader = make_dataloader(ds, batch_size=4, shuffle=False, num_workers=2)
        batches = list(loader)
        assert len(batches) == n // 4  # drop_last
        for k, batch in enumerate(batches):
            assert batch[CAM].shape == (4, 2, 3, 32, 32) and batch[CAM].dtype == torch.uint8
            assert batch["action"].shape == (4, 4, 2) and batch["action"].dtype == torch.float32
            assert batch["action_is_pad"].dtype == torch.bool
            assert_batches_equal(to_numpy_batch(batch),
                                 sampler.get_batch(np.arange(4 * k, 4 * k + 4)))
    finally:
        sampler.close()


def test_shuffled_epoch_visits_every_window_once(store_path: Path) -> None:
    ds = EpisodeDataset(store_path, TORCH_SPEC)
    loader = make_dataloader(ds, batch_size=8, num_workers=2, drop_last=False, seed=3)
    seen = [(int(e), int(s)) for b in loader for e, s in zip(b["episode_index"], b["step"],
                                                                strict=True)]
    assert sorted(seen) == [(e, t) for e, n in enumerate(LENGTHS) for t in range(n)]
    assert seen != sorted(seen)  # shuffled


@pytest.mark.timeout(60)
def test_dataloader_workers_after_the_parent_read_frames(store_path: Path) -> None:
    """Reading through the dataset before the loader forks its workers (e.g. to look at one
    item) must not leave the workers with a thread pool whose threads did not survive fork."""
    ds = EpisodeDataset(store_path, TORCH_SPEC)
    first = ds.__getitems__(list(range(len(ds))))  # the parent's pool starts its threads
    loader = make_dataloader(ds, batch_size=len(ds), shuffle=False, num_workers=2,
                             drop_last=False)
    (batch,) = list(loader)
    for key in batch:
        torch.testing.assert_close(batch[key], torch.stack([item[key] for item in first]),
                                   rtol=0, atol=0)


def test_in_memory_dataset_equals_on_disk(store_path: Path) -> None:
    on_disk = EpisodeDataset(store_path, TORCH_SPEC)
    in_mem = EpisodeDataset(store_path, TORCH_SPEC, in_memory=True)
    idx = list(range(len(on_disk)))
    a, b = on_disk.__getitems__(idx), in_mem.__getitems__(idx)
    assert len(a) == len(b) == sum(LENGTHS)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert a[5][CAM].shape == (2, 3, 32, 32)
    # pickling (spawned workers): the on-disk dataset reopens the store, same values
    clone = pickle.loads(pickle.dumps(on_disk))
    assert clone._sampler is None
    for key, value in clone[7].items():
        assert torch.equal(value, a[7][key]), key
