"""The RL learners' parts: batched ensembles, squashed Gaussians, DrQ shifts, device replay,
transitions from a real episode store, and every registered learner's update."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bench.rl_update import HostSyncDetector, OpCounter, optimizer_steps
from data import EpisodeStore
from data.schema import Feature
from policies.rl import RL_ALGOS, agent_class
from policies.rl.actor import ActorConfig, ActorPolicy
from policies.rl.networks import (
    EnsembleMLP,
    LoopEnsembleMLP,
    random_shift,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)
from policies.rl.replay import (
    NO_MC,
    ReplayBuffer,
    absorbing_reward,
    discounted_returns,
    learner_reward,
    load_transitions,
)

OBS, ACT = 5, 2


def features(camera: bool = False) -> dict[str, Feature]:
    f = {"observation.state": Feature("float32", (OBS,)), "action": Feature("float32", (ACT,))}
    if camera:
        f["observation.images.front"] = Feature("uint8", (16, 16, 3), image=True)
    return f


def stats(camera: bool = False) -> dict[str, dict[str, np.ndarray]]:
    s = {"observation.state": {"mean": np.zeros(OBS, np.float32), "std": np.ones(OBS, np.float32)},
         "action": {"min": np.array([-1, -2], np.float32), "max": np.array([1, 2], np.float32),
                    "mean": np.zeros(ACT, np.float32), "std": np.array([1, 2], np.float32)}}
    if camera:
        s["observation.images.front"] = {"mean": np.full(3, 0.5, np.float32),
                                         "std": np.full(3, 0.5, np.float32)}
    return s


def test_batched_ensemble_matches_a_loop_of_separate_critics() -> None:
    torch.manual_seed(0)
    batched = EnsembleMLP(5, 7, [16, 16], layer_norm=True)
    loop = LoopEnsembleMLP(5, 7, [16, 16], layer_norm=True)
    with torch.no_grad():  # copy member i's weights into the i-th separate MLP
        for layer_b, i_layer in zip([batched.net[0], batched.net[3], batched.net[6]], [0, 3, 6],
                                    strict=True):
            for i, member in enumerate(loop.members):
                member[i_layer].weight.copy_(layer_b.weight[i].T)
                member[i_layer].bias.copy_(layer_b.bias[i, 0])
        for ln_b, i_ln in zip([batched.net[1], batched.net[4]], [1, 4], strict=True):
            ln_b.weight.uniform_(0.5, 1.5)
            ln_b.bias.uniform_(-0.1, 0.1)
            for i, member in enumerate(loop.members):
                member[i_ln].weight.copy_(ln_b.weight[i, 0])
                member[i_ln].bias.copy_(ln_b.bias[i, 0])
    x = torch.randn(9, 7)
    out = batched(x)
    assert out.shape == (5, 9)
    torch.testing.assert_close(out, loop(x), rtol=1e-5, atol=1e-5)
    pick = torch.tensor([3, 1])
    torch.testing.assert_close(batched(x, pick), out[pick])  # subset = those rows
    torch.testing.assert_close(loop(x, pick), out[pick], rtol=1e-5, atol=1e-5)
    # members are independent: a loss on member 2 moves only member 2's weights
    batched(x)[2].sum().backward()
    grad = batched.net[0].weight.grad
    assert grad is not None and grad[2].abs().sum() > 0
    assert grad[[0, 1, 3, 4]].abs().sum() == 0


def ops_of_a_critic_step(critic: torch.nn.Module, x: torch.Tensor) -> int:
    counter = OpCounter()  # the update benchmark's counter
    with counter:
        critic(x).pow(2).mean().backward()
    return counter.n


def test_the_ensemble_is_one_batched_operation_per_layer_whatever_its_size() -> None:
    """The issue asks for the ensemble as one batched operation, not a loop over critics: the
    operators a forward and backward pass dispatches do not grow with the number of critics
    (a loop's grow linearly)."""
    x = torch.randn(32, 7)
    batched = [ops_of_a_critic_step(EnsembleMLP(n, 7, [16, 16]), x) for n in (2, 10)]
    loop = [ops_of_a_critic_step(LoopEnsembleMLP(n, 7, [16, 16]), x) for n in (2, 10)]
    assert batched[0] == batched[1]
    assert loop[1] > 4 * loop[0] and loop[0] > batched[1]


def test_squashed_gaussian_log_prob_matches_the_samples_density() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3), torch.randn(64, 3) * 0.3 - 0.5
    action, logp = tanh_gaussian_sample(mean, log_std)
    assert action.abs().max() < 1
    torch.testing.assert_close(tanh_gaussian_log_prob(mean, log_std, action), logp,
                               rtol=1e-3, atol=1e-3)
    # a density: integrates to ~1 over (-1, 1) in one dimension
    grid = torch.linspace(-0.999, 0.999, 20001).unsqueeze(1)
    p = tanh_gaussian_log_prob(torch.full_like(grid, 0.3), torch.full_like(grid, -0.7),
                               grid).exp()
    assert abs(float(torch.trapezoid(p, grid[:, 0])) - 1.0) < 0.01


def test_random_shift_is_an_integer_translation_within_the_pad() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.arange(3 * 12 * 12, dtype=torch.float32).reshape(1, 3, 12, 12).repeat(16, 1, 1, 1)
    out = random_shift(img, 2, g)
    assert out.shape == img.shape
    found = set()
    for k in range(16):  # each output is the (replicate-)padded input cropped at some (dy, dx)
        padded = torch.nn.functional.pad(img[k:k + 1], (2, 2, 2, 2), mode="replicate")[0]
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.allclose(out[k], padded[:, dy:dy + 12, dx:dx + 12], atol=1e-3)]
        assert len(hits) == 1, f"image {k} is not a pure shift"
        found.add(hits[0])
    assert len(found) > 3  # different images get different shifts
    torch.testing.assert_close(random_shift(img, 0, g), img)


def test_replay_adds_overwrites_oldest_samples_and_round_trips() -> None:
    buf = ReplayBuffer(features(camera=True), capacity=4)
    for i in range(6):
        obs = {"observation.state": np.full(OBS, i, np.float32),
               "observation.images.front": np.full((16, 16, 3), i, np.uint8)}
        nxt = {k: v + 1 for k, v in obs.items()}
        buf.add(obs, np.array([i, -i], np.float32), float(i), nxt, done=i == 5)
    assert len(buf) == 4
    held = sorted(buf.data["reward"].tolist())
    assert held == [2.0, 3.0, 4.0, 5.0]  # 0 and 1 were overwritten
    assert buf.data["obs/observation.images.front"].dtype == torch.uint8
    b = buf.sample(256, torch.Generator().manual_seed(0))
    r = b["reward"]
    torch.testing.assert_close(b["obs/observation.state"][:, 0], r)
    torch.testing.assert_close(b["next_obs/observation.state"][:, 0], r + 1)
    torch.testing.assert_close(b["done"], (r == 5).float())
    assert (b["mc_return"] == NO_MC).all()
    assert set(r.tolist()) == {2.0, 3.0, 4.0, 5.0}
    other = ReplayBuffer(features(camera=True), capacity=4)
    other.load_state_dict(buf.state_dict())
    for k in buf.data:
        torch.testing.assert_close(other.data[k], buf.data[k])
    assert (other.size, other.pos) == (buf.size, buf.pos)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(features(), capacity=2).load_state_dict(buf.state_dict())
    # into a larger buffer (a run resumed with a larger budget): the next transition appends
    # after those held, oldest first, whether the smaller ring had wrapped (4) or not (8)
    frame = {"observation.state": np.zeros(OBS, np.float32),
             "observation.images.front": np.zeros((16, 16, 3), np.uint8)}
    for cap, held_first in ((4, [2.0, 3.0, 4.0, 5.0]), (8, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])):
        src = ReplayBuffer(features(camera=True), capacity=cap)
        for i in range(6):
            src.add(frame, np.zeros(ACT, np.float32), float(i), frame, done=False)
        wide = ReplayBuffer(features(camera=True), capacity=cap + 2)
        wide.load_state_dict(src.state_dict())
        wide.add(frame, np.zeros(ACT, np.float32), 6.0, frame, done=False)
        assert wide.data["reward"][: len(wide)].tolist() == [*held_first, 6.0]


def test_episode_returns_land_on_the_episodes_rows_across_the_ring() -> None:
    frame = {"observation.state": np.zeros(OBS, np.float32)}
    buf = ReplayBuffer(features(), capacity=5)
    for _ in range(3):  # an earlier episode
        buf.add(frame, np.zeros(ACT, np.float32), 0.0, frame, done=False)
    first = buf.pos
    for i in range(4):  # this one wraps: rows 3, 4, 0, 1
        buf.add(frame, np.zeros(ACT, np.float32), 1.0, frame, done=i == 3)
    buf.set_returns(first, discounted_returns([1.0] * 4, 0.5))
    mc = buf.data["mc_return"].tolist()
    assert mc[3:] + mc[:2] == [1.875, 1.75, 1.5, 1.0] and mc[2] == NO_MC
    # an episode longer than the ring overwrote its own start: its last 5 rows get theirs
    first = buf.pos
    for _ in range(7):
        buf.add(frame, np.zeros(ACT, np.float32), 1.0, frame, done=False)
    returns = discounted_returns([1.0] * 7, 0.5)
    buf.set_returns(first, returns)
    assert sorted(buf.data["mc_return"].tolist()) == sorted(returns[2:].tolist())


def test_a_checkpointed_replay_weighs_what_it_holds_not_its_capacity(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = []
    for capacity in (100, 100_000):
        buf = ReplayBuffer(features(camera=True), capacity=capacity)
        for _ in range(10):
            obs = {"observation.state": rng.normal(size=OBS).astype(np.float32),
                   "observation.images.front": rng.integers(0, 255, (16, 16, 3), np.uint8)}
            buf.add(obs, rng.normal(size=ACT).astype(np.float32), 1.0, obs, done=False)
        torch.save(buf.state_dict(), tmp_path / f"{capacity}.pt")
        sizes.append((tmp_path / f"{capacity}.pt").stat().st_size)
    # 10 transitions with two 16x16 frames each (the archive names its records after the file)
    assert sizes[0] < 40_000 and abs(sizes[1] - sizes[0]) < 1_000


def _store(path: Path) -> Path:
    """Two real episodes: #0 terminated in success after 4 steps, #1 truncated after 5."""
    store = EpisodeStore.create(path, {
        "observation.state": {"dtype": "float32", "shape": [OBS]},
        "action": {"dtype": "float32", "shape": [ACT]},
        "next.reward": {"dtype": "float32", "shape": []}}, fps=10)
    with store, store.recorder() as rec:
        for ep, (n, success) in enumerate([(4, True), (5, False)]):
            for t in range(n):
                rec.add({"observation.state": np.full(OBS, 10 * ep + t, np.float32),
                         "action": np.array([t, ep], np.float32),
                         "next.reward": np.float32(1.0)})
            rec.end_episode(success=success, terminated=success)
    return path


def test_transitions_from_a_store_align_next_states_dones_and_returns(tmp_path: Path) -> None:
    with EpisodeStore.open(_store(tmp_path / "s.zarr")) as store:
        tr = load_transitions(store, ["observation.state"], gamma=0.5, success_terminates=True,
                              absorbing_success=False)
        with_abs = load_transitions(store, ["observation.state"], gamma=0.5,
                                    success_terminates=True)
    s, nxt = tr["obs/observation.state"][:, 0], tr["next_obs/observation.state"][:, 0]
    # episode 0 keeps all 4 steps (terminated), episode 1 drops its last (truncated): 4 + 4
    assert s.tolist() == [0, 1, 2, 3, 10, 11, 12, 13]
    assert nxt[:3].tolist() == [1, 2, 3] and nxt[4:].tolist() == [11, 12, 13, 14]
    assert tr["done"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(tr["mc_return"][:4], [1.875, 1.75, 1.5, 1.0])
    np.testing.assert_allclose(tr["mc_return"][4], 1 + 0.5 + 0.25 + 0.125 + 0.0625)
    # success as an absorbing state: the terminal reward becomes r / (1 - gamma)
    assert with_abs["reward"][3] == absorbing_reward(1.0, 0.5) == 2.0
    assert with_abs["reward"][[0, 1, 2, 4]].tolist() == [1, 1, 1, 1]
    # where success does not end episodes (the car), a terminated successful episode ended in a
    # failure (a flip after a lap): its last reward stays the env's
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        sticky = load_transitions(store, ["observation.state"], gamma=0.5,
                                  success_terminates=False)
    assert sticky["done"][3] == 1.0 and sticky["reward"][3] == 1.0


def test_only_a_success_that_ends_the_episode_is_absorbing() -> None:
    ok, flip = {"success": True, "failure": False}, {"success": True, "failure": True}
    assert learner_reward(1.0, True, ok, True, 0.9) == absorbing_reward(1.0, 0.9)
    assert learner_reward(1.0, True, ok, True, 0.9, absorbing_success=False) == 1.0
    assert learner_reward(1.0, False, ok, True, 0.9) == 1.0  # success, not terminal
    assert learner_reward(1.0, True, ok, False, 0.9) == 1.0  # sticky success: a failure ended it
    assert learner_reward(1.0, True, flip, True, 0.9) == 1.0  # failed while succeeding


def small_learner(name: str, camera: bool, **config: Any) -> tuple[Any, ReplayBuffer]:
    """A tiny ``name`` learner (4 critics, UTD 2, batch 8) and a 64-transition random replay."""
    cls = agent_class(name)
    cfg = cls.config_class(n_critics=4, critic_subset=2, utd=2, batch_size=8,
                           critic_hidden=[16, 16], device="cpu")
    cfg.actor.hidden = [16, 16]
    if hasattr(cfg, "cql_actions"):
        cfg.cql_actions = 3
    for k, v in config.items():
        if hasattr(cfg, k):
            setattr(cfg, k, v)
    agent = cls(cfg, features(camera), stats(camera))
    buf = ReplayBuffer(features(camera), 64)
    rng = np.random.default_rng(0)
    n = 64
    data = {"obs/observation.state": rng.normal(size=(n, OBS)).astype(np.float32),
            "next_obs/observation.state": rng.normal(size=(n, OBS)).astype(np.float32),
            "action": rng.uniform(-1, 1, (n, ACT)).astype(np.float32) * [1, 2],
            "reward": rng.normal(size=n).astype(np.float32),
            "done": (rng.random(n) < 0.1).astype(np.float32),
            "mc_return": rng.normal(size=n).astype(np.float32)}
    if camera:
        for p in ("obs/", "next_obs/"):
            data[p + "observation.images.front"] = rng.integers(0, 255, (n, 16, 16, 3), np.uint8)
    buf.extend(data)
    return agent, buf


@pytest.mark.parametrize("name", sorted(RL_ALGOS))
@pytest.mark.parametrize("camera", [False, True])
def test_every_learner_updates_its_critic_and_actor(name: str, camera: bool) -> None:
    agent, buf = small_learner(name, camera)
    cfg = agent.config
    before = copy.deepcopy(agent.state_dict())
    info = agent.update(buf.sample(cfg.utd * cfg.batch_size, agent.generator), offline=True)
    assert info and all(torch.isfinite(v).all() for v in info.values())
    after = agent.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("critic.") for k in moved)
    assert any(k.startswith("actor.head") for k in moved)
    if camera:  # DrQ: the camera encoder learns (from the critic)
        assert any("cameras" in k for k in moved)
    action = agent.explore({k: v[0] for k, v in buf.sample(1).items() if k.startswith("obs/")}
                           | {k.removeprefix("obs/"): v[0] for k, v in buf.data.items()
                              if k.startswith("obs/")})
    assert action.shape == (ACT,) and torch.isfinite(action).all()
    assert (action.abs() <= torch.tensor([1.0, 2.0])).all()  # the robot's bounds


@pytest.mark.parametrize("name", sorted(RL_ALGOS))
@pytest.mark.parametrize("camera", [False, True])
def test_an_update_never_makes_the_host_wait_for_the_device(name: str, camera: bool) -> None:
    """The issue: replay on the device, no per-step host syncs. No operator of an update, offline
    or online, with DrQ and the BC term, reads a value back to the host (``.item()``, a tensor
    in an ``if``) or produces a value-dependent shape (boolean masks, ``nonzero``): on a GPU each
    would stall the loop until the queued kernels finish."""
    agent, buf = small_learner(name, camera, bc_weight=0.5)  # the Q-filtered BC term too
    cfg = agent.config

    def batch() -> dict[str, torch.Tensor]:
        mb = buf.sample(cfg.utd * cfg.batch_size, agent.generator)
        return {**mb, "offline": (torch.arange(len(mb["reward"])) % 2).float()}

    for offline in (True, False):
        agent.update(batch(), offline=offline)  # creates the optimisers' step counters
        detector = HostSyncDetector(optimizer_steps(agent))
        with detector:
            mb = batch()
            info = agent.update(mb, offline=offline)
        assert detector.found == [], (offline, detector.found)
    assert all(isinstance(v, torch.Tensor) for v in info.values())  # metrics stay on device
    # the detector sees what it must: a scalar read, a boolean mask, an optimiser's counter
    with HostSyncDetector() as detector:
        float(info["critic_loss"])
        _ = mb["reward"][mb["reward"] > 0]
        agent.update(batch())
    assert detector.found[:2] == ["aten::_local_scalar_dense", "aten::index"]
    assert "aten::_local_scalar_dense" in detector.found[2:]


def test_config_checks_name_the_field() -> None:
    from policies.rl.sac import SACConfig
    from robolearn_core.config import InvalidValue

    with pytest.raises(InvalidValue, match="critic_subset"):
        SACConfig(n_critics=2, critic_subset=3)
    with pytest.raises(InvalidValue, match="offline_ratio"):
        SACConfig(offline_ratio=1.0)
    with pytest.raises(InvalidValue, match="critic_impl"):
        SACConfig(critic_impl="vmapp")


@pytest.mark.parametrize("name", sorted(RL_ALGOS))
def test_every_learner_learns_a_contextual_bandit_from_noisy_offline_data(name: str) -> None:
    """One-step episodes, reward ``-|a - a*(s)|^2`` with ``a*(s) = (s_0, -s_1)``; the data's
    actions are ``a*`` plus noise (std 0.4). After a few hundred updates each learner's
    deterministic action must be far closer to ``a*`` than the untrained actor's, and closer
    than the data itself."""
    torch.manual_seed(0)
    cls = agent_class(name)
    cfg = cls.config_class(n_critics=2, critic_subset=2, utd=1, batch_size=128,
                           critic_hidden=[64, 64], device="cpu", lr=1e-3)
    cfg.actor.hidden = [64, 64]
    if hasattr(cfg, "cql_actions"):
        cfg.cql_actions, cfg.cql_alpha = 4, 1.0
    st = stats()
    st["action"] = {k: np.array([-1, -1], np.float32) if k == "min" else
                    np.array([1, 1], np.float32) if k in ("max", "std") else
                    np.zeros(2, np.float32) for k in ("min", "max", "mean", "std")}
    agent = cls(cfg, features(), st)
    rng = np.random.default_rng(0)
    n = 4000
    s = rng.uniform(-0.8, 0.8, (n, OBS)).astype(np.float32)
    best = np.stack([s[:, 0], -s[:, 1]], 1)
    a = np.clip(best + rng.normal(0, 0.4, best.shape), -1, 1).astype(np.float32)
    r = -np.square(a - best).sum(1).astype(np.float32)
    buf = ReplayBuffer(features(), n)
    buf.extend({"obs/observation.state": s, "next_obs/observation.state": s, "action": a,
                "reward": r, "done": np.ones(n, np.float32), "mc_return": r})
    test_s = torch.as_tensor(rng.uniform(-0.8, 0.8, (256, OBS)).astype(np.float32))
    test_best = torch.stack([test_s[:, 0], -test_s[:, 1]], 1)

    def error() -> float:
        with torch.no_grad():
            act = torch.tanh(agent.actor.dist(agent.actor.encode(
                {"observation.state": test_s}))[0])
        return float((act - test_best).norm(dim=1).mean())

    before = error()
    for _ in range(600):
        agent.update(buf.sample(cfg.batch_size, agent.generator), offline=True)
    after = error()
    data_error = float(np.linalg.norm(a - best, axis=1).mean())
    assert after < 0.5 * before, (before, after)
    assert after < data_error, (after, data_error)


def _arm_like(**kw: object) -> ActorPolicy:

    names = ("pan", "lift", "gripper")
    feats = {"observation.state": Feature("float32", (4,), names=("pan.pos", "lift.pos",
                                                                   "gripper.pos", "pan.vel")),
             "action": Feature("float32", (3,), names=names)}
    st = {"observation.state": {"mean": np.zeros(4, np.float32), "std": np.ones(4, np.float32)},
          "action": {"min": np.array([-2, -1, 0], np.float32),
                     "max": np.array([2, 1, 1.5], np.float32),
                     "mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32)}}
    return ActorPolicy(ActorConfig(**kw), feats, st)  # type: ignore[arg-type]


def test_relative_actions_are_offsets_from_the_state_and_stay_in_bounds() -> None:
    actor = _arm_like(relative_actions=["pan", "lift"], relative_step=0.2)
    obs = {"observation.state": torch.tensor([[0.5, 0.9, 0.3, 7.0], [-1.0, 0.0, 1.0, 0.0]])}
    net = torch.tensor([[0.5, 1.0, -1.0], [-1.0, 0.25, 1.0]])
    robot = actor.unnormalize_action(net, obs)
    # pan/lift: origin + 0.2 * a (lift 0.9 + 0.2 clamped to its bound 1); gripper absolute
    expected = torch.tensor([[0.6, 1.0, 0.0], [-1.2, 0.05, 1.5]])
    assert torch.allclose(robot, expected, atol=1e-6)
    back = actor.normalize_action(robot, obs)
    assert torch.allclose(back[1], net[1], atol=1e-6)  # inside the bounds: exact round trip
    assert back[0, 1] == pytest.approx(0.5)  # the clamped lift: what was really executed
    far = actor.normalize_action(torch.tensor([[2.0, -1.0, 0.75]]), obs)  # demo jump: clipped
    assert torch.allclose(far, torch.tensor([[1.0, -1.0, 0.0]]))


def test_relative_actions_must_name_actions_with_a_state_origin() -> None:
    from robolearn_core.config import InvalidValue

    with pytest.raises(InvalidValue, match="relative_actions.*'wrist' is not an action"):
        _arm_like(relative_actions=["wrist"])
    with pytest.raises(InvalidValue, match="relative_step"):
        _arm_like(relative_actions=["pan"], relative_step=0.0)
    with pytest.raises(InvalidValue, match="relative_state.*observation.goal"):
        _arm_like(relative_actions=["pan"], relative_state="observation.goal")


@pytest.mark.parametrize("q_filter", [False, True])
def test_bc_term_follows_offline_actions_unless_the_critics_rate_them_lower(
        q_filter: bool) -> None:
    """Bandit ``r = -|a - a*(s)|^2``: online rows are noisy around ``a*``, offline rows are a bad
    demonstrator's ``-a*``. Unfiltered, a heavy BC term drags the actor to the bad demos; the Q
    filter drops those rows once the critics know better, and the actor finds ``a*``."""
    torch.manual_seed(0)
    cfg = agent_class("sac").config_class(n_critics=2, utd=1, batch_size=128, device="cpu",
                                          critic_hidden=[64, 64], lr=1e-3, bc_weight=5.0,
                                          bc_q_filter=q_filter)
    cfg.actor.hidden = [64, 64]
    st = stats()
    st["action"] = {k: np.full(2, -1.0 if k == "min" else 0.0 if k == "mean" else 1.0,
                               np.float32) for k in ("min", "max", "mean", "std")}
    agent = agent_class("sac")(cfg, features(), st)
    rng = np.random.default_rng(0)
    n = 4000
    s = rng.uniform(-0.8, 0.8, (n, OBS)).astype(np.float32)
    best = np.stack([s[:, 0], -s[:, 1]], 1)
    offline = rng.random(n) < 0.5
    a = np.where(offline[:, None], -best, np.clip(best + rng.normal(0, 0.4, best.shape), -1, 1))
    a = a.astype(np.float32)
    r = -np.square(a - best).sum(1).astype(np.float32)
    data = {"obs/observation.state": s, "next_obs/observation.state": s, "action": a,
            "reward": r, "done": np.ones(n, np.float32)}
    idx = torch.as_tensor(rng.integers(0, n, (600, cfg.batch_size)))
    for rows in idx:
        batch = {k: torch.as_tensor(v)[rows] for k, v in data.items()}
        info = agent.update({**batch, "offline": torch.as_tensor(offline[rows.numpy()],
                                                                 dtype=torch.float32)})
    with torch.no_grad():
        test_s = torch.as_tensor(s[:256])
        act = torch.tanh(agent.actor.dist(agent.actor.encode({"observation.state": test_s}))[0])
    err = float((act - torch.as_tensor(best[:256])).norm(dim=1).mean())
    if q_filter:
        assert err < 0.35 and float(info["bc_rows"]) < 0.5, (err, info["bc_rows"])
    else:
        assert err > 0.6 and float(info["bc_rows"]) == 1.0, err


def test_resuming_on_another_kind_of_device_reseeds_with_a_warning() -> None:
    """A checkpoint written on a GPU holds a CUDA generator's state (16 bytes, not a CPU one's
    5,056): resumed on a CPU the run goes on, reseeded and saying so, instead of crashing."""
    agent, buf = small_learner("rlpd", camera=False)
    state = agent.optim_state()
    same = small_learner("rlpd", camera=False)[0]
    same.load_optim_state(state)  # same kind of device: the sequence continues exactly
    assert torch.equal(same.generator.get_state(), agent.generator.get_state())
    cuda_like = {**state, "generator": torch.zeros(16, dtype=torch.uint8)}
    with pytest.warns(UserWarning, match="reseeded, so this resume is not bit-exact"):
        same.load_optim_state(cuda_like)
    assert all(torch.isfinite(v).all() for v in same.update(buf.sample(8, None)).values()
               if isinstance(v, torch.Tensor))
