"""Every registered environment: gymnasium's checker, gymnasium.make by id, seeded resets,
its scripted expert, and vectorised collection across processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robolearn.env import ENVS, make_env
from robolearn.vector import collect_scripted, make_vector_env

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
HAVE_ROBOSUITE = importlib.util.find_spec("robosuite") is not None


def env_ids() -> list[object]:
    """Simulated envs; a real robot's env is checked against its emulator
    (tests/test_arm_drivers.py)."""
    from robolearn.arm_cmds import hardware_robots

    return [pytest.param(i, marks=pytest.mark.skipif(
        ENVS[i]["robot"] == "robosuite" and not HAVE_ROBOSUITE, reason="robosuite extra"))
        for i in ENVS if ENVS[i]["robot"] not in hardware_robots()]


@pytest.mark.parametrize("env_id", env_ids())
def test_registered_env_passes_gymnasium_checks_and_reproduces(env_id: str) -> None:
    env = gym.make(f"robolearn.envs:{env_id}")
    try:
        check_env(env.unwrapped, skip_render_check=True)
        rollouts = []
        for _ in range(2):
            obs, _ = env.reset(seed=123)
            env.action_space.seed(7)
            trace = [obs["observation.state"].copy()]
            for _ in range(5):
                obs, reward, *_ = env.step(env.action_space.sample())
                trace.append(obs["observation.state"].copy())
            rollouts.append(np.stack(trace))
        np.testing.assert_array_equal(rollouts[0], rollouts[1])
        other, _ = env.reset(seed=124)
        assert not np.array_equal(other["observation.state"], rollouts[0][0]) or \
            ENVS[env_id]["robot"] == "sim_arm"  # the arm starts at home; its objects move
    finally:
        env.close()


@pytest.mark.parametrize("env_id", ["robolearn/SimArmLift-v0", "robolearn/SimCar-v0"])
def test_scripted_expert_succeeds(env_id: str) -> None:
    env = make_env(**ENVS[env_id])
    try:
        successes = 0
        for seed in range(2):
            obs, _ = env.reset(seed=seed)
            done, info = False, {}
            while not done:
                obs, _, term, trunc, info = env.step(env.expert_action())
                done = term or trunc or info["success"]
            successes += info["success"]
        assert successes == 2
    finally:
        env.close()


def test_vector_env_matches_serial_runs() -> None:
    env_id = "robolearn/SimArmReach-v0"
    envs = make_vector_env(env_id, 2)
    try:
        obs, _ = envs.reset(seed=[5, 6])
        actions = np.stack([envs.single_action_space.sample() for _ in range(2)]) * 0.5
        vobs, *_ = envs.step(actions)
    finally:
        envs.close()
    for i, seed in enumerate((5, 6)):
        env = make_env(**ENVS[env_id])
        o, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(o["observation.state"], obs["observation.state"][i])
        o, *_ = env.step(actions[i])
        np.testing.assert_allclose(o["observation.state"], vobs["observation.state"][i],
                                   atol=1e-6)
        env.close()


def test_collect_scripted_in_parallel_processes(tmp_path: Path) -> None:
    store = collect_scripted("robolearn/SimArmReach-v0", str(tmp_path / "demos"), episodes=4,
                             num_envs=2, progress=False)
    try:
        assert len(store) == 4 and all(i.success for i in store.infos())
        assert store.verify() == []
        assert store.select(source="scripted") == [0, 1, 2, 3]
        assert store.metadata["env_id"] == "robolearn/SimArmReach-v0"
        assert all(i.metadata["terminated"] is True for i in store.infos())  # success ends it
    finally:
        store.close()
    with collect_scripted("robolearn/SimArmReach-v0", str(tmp_path / "cut"), episodes=2,
                          num_envs=2, progress=False, max_steps=3) as cut:  # the step limit
        assert [(i.length, i.metadata["terminated"]) for i in cut.infos()] == [(3, False)] * 2


def test_collect_scripted_is_the_same_for_any_number_of_workers(tmp_path: Path) -> None:
    """Each episode runs through the control loop with seed ``seed + i`` whichever worker
    runs it: two worker processes record the very store one process records."""
    stores = [collect_scripted("robolearn/SimCar-v0", str(tmp_path / f"w{n}"), episodes=3,
                               num_envs=n, seed=7, progress=False, max_steps=40)
              for n in (1, 2)]
    try:
        one, two = stores
        assert len(one) == len(two) == 3
        for i in range(3):
            a, b = one.episode(i), two.episode(i)
            assert one.info(i).metadata["seed"] == two.info(i).metadata["seed"] == 7 + i
            for k in ("observation.state", "action", "next.reward"):
                np.testing.assert_array_equal(a[k], b[k])
        # different seeds, different episodes (the test could fail)
        assert not np.array_equal(one.episode(0)["observation.state"],
                                  one.episode(1)["observation.state"])
    finally:
        for s in stores:
            s.close()


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(KeyError, match="sim_arm"):
        make_env(robot="sim_rocket", task="arm_lift")
    with pytest.raises(KeyError, match="robolearn/SimCar-v0"):
        make_vector_env("robolearn/Nope-v0", 1)
