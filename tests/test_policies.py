"""Every registered policy trains, saves, loads, acts and learns, on a real store on disk.

The task: a point at ``pos`` reaches a goal; ``observation.state = [pos, goal]`` (4,), the action
is ``clip(1.5 (goal - pos), -1, 1)`` (2,) and ``pos += 0.3 action``; a 24x24 camera shows the
point. Every action is a function of the state, so a policy can be scored on held-out episodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from data import EpisodeStore
from data.sampling import split_episodes
from data.torch_dataset import EpisodeDataset
from policies import POLICIES, make_policy, policy_config_class
from policies.base import Policy
from policies.normalize import Normalizer, compute_stats
from robolearn_core.config import InvalidValue, load_config

CAM = "observation.images.cam"
FEATURES: dict[str, dict[str, Any]] = {
    "observation.state": {"dtype": "float32", "shape": [4]},
    CAM: {"dtype": "uint8", "shape": [24, 24, 3]},
    "action": {"dtype": "float32", "shape": [2]},
}
# small networks, so every test runs in seconds on two CPU cores
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_dim": 128, "n_layers": 2},
    "act": {"d_model": 64, "ff_dim": 128, "n_encoder_layers": 1, "n_decoder_layers": 1,
            "action_horizon": 8},
    "diffusion": {"down_dims": [32, 64], "action_horizon": 8, "n_action_steps": 4,
                  "inference_steps": 8},
    "rl_actor": {"hidden": [64, 64]},
}
ENCODER = {"channels": [8, 16], "keypoints": 8, "feature_dim": 16}
LEARN = {"mlp": (300, 1e-3), "act": (300, 1e-3), "diffusion": (600, 3e-3),  # steps, lr
         "rl_actor": (300, 1e-3)}


def render(pos: np.ndarray) -> np.ndarray:
    img = np.zeros((24, 24, 3), np.uint8)
    r, c = (np.clip((pos + 1.5) / 3.0, 0, 0.999) * 24).astype(int)
    img[max(r - 2, 0):r + 2, max(c - 2, 0):c + 2] = (255, 128, 0)
    return img


def record(path: Path, episodes: int = 24, length: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with EpisodeStore.create(path, FEATURES, fps=10.0) as store, store.recorder() as rec:
        for _ in range(episodes):
            pos, goal = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
            rec.start_episode()
            for _ in range(length):
                action = np.clip(1.5 * (goal - pos), -1, 1)
                rec.add({"observation.state": np.concatenate([pos, goal]).astype(np.float32),
                         CAM: render(pos), "action": action.astype(np.float32)})
                pos = pos + 0.3 * action
            rec.end_episode(success=True)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """These networks are tiny: intra-op threads cost far more than they save (50x on a busy
    2-core machine), so the module runs torch on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("policies") / "reach")


def build(name: str, store_path: Path, camera: bool = True, **overrides: Any) -> Policy:
    with EpisodeStore.open(store_path) as store:
        features = {k: f for k, f in store.features.items() if camera or k != CAM}
        stats = compute_stats(store, features)
    torch.manual_seed(0)
    return make_policy(name, features, stats, **{**SMALL[name], "encoder": ENCODER, **overrides})


def all_windows(policy: Policy, path: Path, episodes: list[int]) -> dict[str, torch.Tensor]:
    """Every window of these episodes, stacked: {key: (N, T, ...)}."""
    ds = EpisodeDataset(path, policy.window_spec(), episodes, in_memory=True)
    items = ds.__getitems__(list(range(len(ds))))
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def train(policy: Policy, data: dict[str, torch.Tensor], steps: int, lr: float = 1e-3,
          batch_size: int = 64) -> None:
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(0)
    policy.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data["action"]), (batch_size,), generator=gen)
        loss, _ = policy.compute_loss({k: v[idx] for k, v in data.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def fixed_loss(policy: Policy, batch: dict[str, torch.Tensor]) -> float:
    torch.manual_seed(123)  # the same diffusion noise and noise levels each time
    policy.eval()
    with torch.no_grad():
        return policy.compute_loss(batch)[0].item()


def rollout_actions(policy: Policy, path: Path, episode: int) -> tuple[np.ndarray, np.ndarray]:
    """select_action over a recorded episode's observations; returns (predicted, recorded)."""
    with EpisodeStore.open(path) as store:
        ep = store.episode(episode)
    policy.reset()
    out = [policy.select_action({k: ep[k][t] for k in policy.obs_keys}) for t in range(len(ep))]
    return np.stack(out), ep["action"]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_train_save_load_act(name: str, store_path: Path, tmp_path: Path) -> None:
    policy = build(name, store_path)
    data = all_windows(policy, store_path, list(range(4)))
    assert data[CAM].dtype == torch.uint8 and data[CAM].shape[2:] == (3, 24, 24)
    batch = {k: v[:16] for k, v in data.items()}  # camera CNNs are slow on 2 CPU cores
    before = fixed_loss(policy, batch)
    train(policy, batch, steps=20, lr=3e-3, batch_size=16)
    after = fixed_loss(policy, batch)
    assert np.isfinite(before) and after < 0.8 * before, (before, after)

    first, recorded = rollout_actions(policy, store_path, 5)
    assert first.dtype == np.float32 and first.shape == recorded.shape
    assert np.isfinite(first).all()
    policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    again, _ = rollout_actions(loaded, store_path, 5)
    np.testing.assert_array_equal(first, again)
    same, _ = rollout_actions(policy, store_path, 5)  # reset() makes acting repeatable
    np.testing.assert_array_equal(first, same)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_loss_ignores_padded_actions(name: str, store_path: Path) -> None:
    policy = build(name, store_path, camera=False)
    if policy.config.action_horizon == 1:
        pytest.skip(f"{name} predicts the current step's action only: it is never padding")
    data = all_windows(policy, store_path, [0])
    pad = data["action_is_pad"]
    assert pad.any() and not pad.all()  # the episode's last windows run past its end
    garbage = {**data, "action": torch.where(pad[..., None], 1e3, data["action"])}
    torch.testing.assert_close(fixed_loss(policy, garbage), fixed_loss(policy, data))
    changed = {**data, "action": torch.where(pad[..., None], data["action"], 1e3)}
    assert abs(fixed_loss(policy, changed) - fixed_loss(policy, data)) > 1e-2  # real ones count


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_nonfinite_output_reaches_the_safety_filter(name: str, store_path: Path) -> None:
    """A network that outputs NaN returns NaN: the safety filter between every policy and the
    robot holds or stops the robot and counts it (select_action used to replace it with the
    last or the mean action, so evaluations reported 0 non-finite actions)."""
    policy = build(name, store_path, camera=False, n_action_steps=1)  # re-plan every step
    with EpisodeStore.open(store_path) as store:
        ep = store.episode(0)
    policy.reset()
    obs = {"observation.state": ep["observation.state"][0]}
    assert np.isfinite(policy.select_action(obs)).all()
    with torch.no_grad():  # a network that blows up: every output NaN from now on
        for p in policy.parameters():
            p.fill_(float("nan"))
    for _ in range(3):
        action = policy.select_action(obs)
        assert action.shape == (policy.action_dim,) and not np.isfinite(action).any()


def test_each_episode_draws_its_own_sampling_noise(store_path: Path) -> None:
    """Diffusion samples: reset with an episode's seed gives that episode its own noise (an
    evaluation whose every episode drew the same noise scored 89% where its episodes with
    their own noise score 94%), and the same seed the same noise (episodes reproduce alone)."""
    policy = build("diffusion", store_path, camera=False)
    with EpisodeStore.open(store_path) as store:
        obs = {"observation.state": store.episode(0)["observation.state"][0]}

    def first_action(seed: int) -> np.ndarray:
        policy.reset(seed=seed)
        return policy.select_action(obs)

    a, b, again = first_action(100_000), first_action(100_001), first_action(100_000)
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_config_errors_name_the_field(name: str, store_path: Path, tmp_path: Path) -> None:
    cls = policy_config_class(name)
    with pytest.raises(InvalidValue) as err:
        cls(n_action_steps=0)
    assert err.value.field == "n_action_steps"
    with pytest.raises(InvalidValue) as err:
        build(name, store_path, obs_horizon=0)
    assert err.value.field == "obs_horizon"
    path = tmp_path / "policy.yaml"
    path.write_text("action_horizon: 0\n")
    with pytest.raises(Exception, match="action_horizon"):
        load_config(cls, path)
    with pytest.raises(KeyError, match="known: act, diffusion, mlp"):
        policy_config_class("bc_transformer")


def test_stats_and_normalizer(store_path: Path) -> None:
    with EpisodeStore.open(store_path) as store:
        stats = compute_stats(store, [CAM, "action"])
        actions = np.concatenate([store.episode(i)["action"] for i in range(len(store))])
        features = dict(store.features)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(0), atol=1e-5)
    assert stats[CAM]["mean"].shape == (3,) and 0 < stats[CAM]["mean"][0] < 0.2
    norm = Normalizer(features, stats, {"action": "min_max", CAM: "mean_std"})
    a = torch.from_numpy(actions)
    scaled = norm.normalize("action", a)
    assert scaled.min() >= -1 - 1e-5 and scaled.max() <= 1 + 1e-5
    torch.testing.assert_close(norm.unnormalize("action", scaled), a)
    assert any("scale" in k for k in norm.state_dict())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_obs_clip_bounds_far_observations(name: str, store_path: Path, tmp_path: Path) -> None:
    """With ``obs_clip``, a state 1000 std away reaches the network as one at the clip bound and
    acts the same; without it, it reaches the network unchanged. The bound survives save/load."""
    policy = build(name, store_path, camera=False, obs_clip=2.0)
    mean, std = (policy.stats["observation.state"][s] for s in ("mean", "std"))
    at_bound = {"observation.state": mean + 2.0 * std}
    far = {"observation.state": mean + 1000.0 * std}
    norm = policy.normalizer.normalize("observation.state",
                                       torch.from_numpy(far["observation.state"]))
    torch.testing.assert_close(norm, torch.full_like(norm, 2.0))

    def act(p: Policy, obs: dict[str, np.ndarray]) -> np.ndarray:
        p.reset()
        return p.select_action(obs)

    np.testing.assert_allclose(act(policy, far), act(policy, at_bound), rtol=1e-5, atol=1e-5)
    loaded = Policy.load(policy.save(tmp_path / name))
    np.testing.assert_allclose(act(loaded, far), act(policy, far), rtol=1e-5, atol=1e-5)
    free = build(name, store_path, camera=False, obs_clip=None)
    unclipped = free.normalizer.normalize("observation.state",
                                          torch.from_numpy(far["observation.state"]))
    torch.testing.assert_close(unclipped, torch.full_like(unclipped, 1000.0), rtol=1e-3, atol=0)
    with pytest.raises(InvalidValue, match="obs_clip"):
        policy_config_class(name)(obs_clip=0.0)


@pytest.mark.parametrize(("name", "overrides", "steps"),
                         [(n, {}, 0) for n in sorted(POLICIES)]
                         + [("mlp", {"head": "gmm", "n_modes": 3}, 600)], ids=str)
def test_learns_the_task(name: str, overrides: dict[str, Any], steps: int,
                         store_path: Path) -> None:
    """On held-out episodes, select_action's error is well below predicting the mean action."""
    policy = build(name, store_path, camera=False, **overrides)
    with EpisodeStore.open(store_path) as store:
        train_eps, val_eps = split_episodes(store, val_fraction=0.2, seed=0)
    start = time.perf_counter()
    default_steps, lr = LEARN[name]
    train(policy, all_windows(policy, store_path, train_eps), steps or default_steps, lr=lr)
    errors, baseline = [], []
    mean_action = policy.stats["action"]["mean"]
    for ep in val_eps:
        pred, recorded = rollout_actions(policy, store_path, ep)
        errors.append(np.square(pred - recorded).mean())
        baseline.append(np.square(mean_action - recorded).mean())
    ratio = float(np.mean(errors) / np.mean(baseline))
    print(f"{name}: held-out MSE / mean-action MSE = {ratio:.3f} "
          f"({time.perf_counter() - start:.1f} s)")
    assert ratio < 0.2, ratio
