"""RLIF (``robolearn improve method=rlif``): its transitions (-1 into each takeover and on
each plan turned down, the teacher's steps kept), its learner (the demonstrations' statistics,
a learner of other shapes refused), and a session on the simulated car that learns from the
takeovers and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.schema import Feature
from data.store import EpisodeStore
from policies.interactive import rejected_transitions, rlif_transitions
from robolearn.cli import main
from tests.improve_util import SETTING, rounds


def test_rlif_rewards_the_step_into_each_takeover_and_keeps_the_teacher_s_steps() -> None:
    obs = {"observation.state": np.arange(8, dtype=np.float32)[:, None]}
    act = np.arange(8, dtype=np.float32)[:, None] * 10
    takeover = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    tr = rlif_transitions(obs, act, takeover, failed=False)
    assert len(tr["reward"]) == 7  # truncated: the last step has no next state
    assert tr["reward"].tolist() == [0, -1, 0, 0, 0, -1, 0]  # steps 1 and 5 led into takeovers
    assert tr["teacher"].tolist() == [0, 0, 1, 1, 0, 0, 1]  # every teacher step kept
    assert tr["done"].sum() == 0
    assert tr["next_obs/observation.state"][:, 0].tolist() == list(range(1, 8))
    assert tr["action"][2, 0] == 20  # the teacher's executed action, not the novice's
    failed = rlif_transitions(obs, act, takeover, failed=True)
    assert len(failed["reward"]) == 8 and failed["reward"][-1] == -1 and failed["done"][-1] == 1
    first = rlif_transitions(obs, act, np.ones(8, bool), failed=False)
    assert first["reward"].sum() == 0  # a takeover from the first step has no step before it
    with pytest.raises(ValueError, match="takeover flags"):
        rlif_transitions(obs, act, takeover[:5], failed=False)
    plans = np.full((8, 1), np.nan, np.float32)
    plans[[2, 6, 7]] = [[0.5], [-0.5], [0.1]]  # the novice's plans the teacher turned down
    turned = rejected_transitions(obs, plans)
    assert turned["action"][:, 0].tolist() == [0.5, -0.5]  # the plans, not what was executed
    assert turned["reward"].tolist() == [-1, -1] and turned["done"].tolist() == [0, 0]
    assert turned["obs/observation.state"][:, 0].tolist() == [2, 6]
    # on to where the teacher took the robot; the last step has no next state
    assert turned["next_obs/observation.state"][:, 0].tolist() == [3, 7]
    assert len(rejected_transitions(obs, np.full((8, 1), np.nan))["reward"]) == 0


def test_rlif_keeps_demonstrations_apart() -> None:
    """Two demonstrations in one array: no transition runs from the first into the second."""
    from robolearn.rlif import RLIFConfig, RLIFNovice

    feats = {"observation.state": Feature("float32", (2,)), "action": Feature("float32", (1,))}
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    novice = RLIFNovice(feats, np.array([-1.0]), np.array([1.0]), RLIFConfig(bc_steps=5), 0,
                        {"observation.state": x})
    # its observations in the demonstrations' units, as the other novices'
    norm = novice.agent.actor.normalizer
    assert np.allclose(norm.normalize("observation.state", torch.as_tensor(x)).mean(0), 0,
                       atol=1e-5)
    with pytest.raises(ValueError, match="needs the demonstrations"):
        RLIFNovice(feats, np.array([-1.0]), np.array([1.0]), RLIFConfig(), 0)
    novice.pretrain({"observation.state": x}, np.zeros((5, 1), np.float32), [3, 2])
    n = novice.online.size
    assert n == 3  # 2 + 1: each demonstration's last step dropped
    nxt = novice.online.data["next_obs/observation.state"][:n, 0].tolist()
    assert nxt == [2.0, 4.0, 8.0]  # 0 -> 1 -> 2 in the first, 3 -> 4 in the second
    with pytest.raises(ValueError, match="do not add up"):
        novice.pretrain({"observation.state": x}, np.zeros((5, 1), np.float32), [3, 3])


def test_an_rlif_learner_saved_with_other_networks_is_refused_in_one_line(tmp_path: Path
                                                                          ) -> None:
    """Resuming a session whose saved learner has other network shapes than the config now
    gives (an older robolearn's actor) names the file instead of a torch traceback."""
    import dataclasses

    from policies.rl.actor import ActorConfig
    from robolearn.rlif import RLIFConfig, RLIFNovice, _rlif_agent
    from robolearn_core.config import ConfigError

    feats = {"observation.state": Feature("float32", (2,)), "action": Feature("float32", (1,))}
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    bounds = np.array([-1.0]), np.array([1.0])
    RLIFNovice(feats, *bounds, RLIFConfig(bc_steps=1), 0, {"observation.state": x}).save(
        tmp_path)
    assert RLIFNovice(feats, *bounds, RLIFConfig(), 0, {"observation.state": x}).restore(
        tmp_path)
    old = dataclasses.replace(_rlif_agent(), actor=ActorConfig(layer_norm=True))
    with pytest.raises(ConfigError, match="learner.pt: this RLIF learner was saved"):
        RLIFNovice(feats, *bounds, RLIFConfig(agent=old), 0,
                   {"observation.state": x}).restore(tmp_path)


def test_rlif_learns_from_the_takeovers_and_resumes(tiny_demo: Path, tmp_path: Path) -> None:
    """An RLIF session: the teacher's takeovers are recorded, every step (the teacher's
    included) goes into the learner's replay with -1 on each step that led into a takeover,
    the learner is updated after each round, checkpointed, and picked up on resume; the final
    actor is a robolearn policy."""
    import torch

    from policies.base import Policy

    out = tmp_path / "rlif"
    base = ["improve", str(tiny_demo), "method=rlif", "episodes=1", f"output={out}",
            "rlif.bc_steps=200", "rlif.critic_warmup=20", "max_steps=120", *SETTING[:1],
            *SETTING[2:]]
    assert main([*base, "rounds=1"]) == 0
    first = torch.load(out / "rlif" / "learner.pt", weights_only=False)
    assert first["round"] == 1 and first["episodes_read"] == 1
    assert main([*base, "rounds=2"]) == 0  # the same session, one more round
    assert [r["round"] for r in rounds(out)] == [0, 1, 1, 2]
    state = torch.load(out / "rlif" / "learner.pt", weights_only=False)
    assert state["round"] == 2 and state["episodes_read"] == 2
    with EpisodeStore.open(out / "session.zarr") as store:
        eps = [store.episode(i) for i in range(len(store))]
    events = [e["interactive.event"] for e in eps]
    steps = sum(len(e) for e in events)
    assert state["updates_done"] == steps  # rlif.updates = 1 per collected step
    takeover = [e == 2 for e in events]
    starts = sum(int((t[1:] & ~t[:-1]).sum()) for t in takeover)
    assert starts > 0 and sum(int(t.sum()) for t in takeover) > starts
    # the plans turned down: each takeover's first step, and each gate firing again after a
    # hold ran out (back-to-back takeovers: one start, several rejected plans)
    turned = [np.isfinite(e["interactive.rejected"][:-1]).all(-1) for e in eps]
    rejected = sum(int(t.sum()) for t in turned)
    assert all((t <= k[:-1]).all() for t, k in zip(turned, takeover, strict=True))
    assert rejected >= starts
    online = state["online"]["data"]
    n_demo = 39  # the 40-step demonstration, its last step dropped
    size = state["online"]["size"]
    assert size == n_demo + steps - len(events) + rejected
    # -1 on each step into a takeover, and on each rejected plan (none terminal)
    assert float(online["reward"][:size].sum()) == -starts - rejected
    assert float(online["done"][:size].sum()) == 0
    policy = Policy.load(out / "novice" / "actor")
    with EpisodeStore.open(tiny_demo) as demo:
        obs = {k: demo.episode(0)[k][0] for k in policy.obs_keys}
    assert np.isfinite(policy.select_action(obs)).all()


def test_rlif_s_conservative_critics_value_untried_actions_below_the_replay_s() -> None:
    """``rlif.conservative`` > 0 adds CQL's term: on a replay whose rewards are all 0, plain
    critics value every action alike (about 0), conservative ones put the replay's actions
    above random ones, so an actor climbing them stays near what was tried."""
    import dataclasses

    from policies.rl.calql import CalQL
    from robolearn.rlif import RLIFConfig, RLIFNovice, _rlif_agent

    feats = {"observation.state": Feature("float32", (2,)), "action": Feature("float32", (1,))}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    act = np.clip(0.5 * x[:, :1], -0.9, 0.9).astype(np.float32)
    gaps = []
    for weight in (0.0, 1.0):
        cfg = RLIFConfig(agent=dataclasses.replace(_rlif_agent(), batch_size=64, utd=1),
                         bc_steps=0, critic_warmup=10_000, conservative=weight)
        novice = RLIFNovice(feats, np.array([-1.0]), np.array([1.0]), cfg, 0,
                            {"observation.state": x})
        assert isinstance(novice.agent, CalQL) == (weight > 0)
        novice.pretrain({"observation.state": x}, act, [300])
        novice.learn(150)
        agent = novice.agent
        with torch.no_grad():
            obs = {"observation.state": torch.as_tensor(x)}
            feat = agent.actor.encode(obs)
            data = agent.actor.normalize_action(torch.as_tensor(act), obs)
            rand = torch.rand(len(x), 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
            q_data = agent.critic(torch.cat([feat, data], -1)).mean()
            q_rand = agent.critic(torch.cat([feat, rand], -1)).mean()
        gaps.append(float(q_data - q_rand))
    assert abs(gaps[0]) < 0.05, gaps  # rewards all 0: no action preferred
    assert gaps[1] > 0.2, gaps
    with pytest.raises(ValueError, match="conservative"):
        RLIFConfig(conservative=-1.0)
