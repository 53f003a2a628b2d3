"""The robosuite robot (optional extra): gymnasium checks, seeding, action limits, the Lift
expert, camera images. Skipped where robosuite is not installed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

# CPU-only headless rendering; must be set before anything imports mujoco (robosuite picks EGL).
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("robosuite")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from robolearn.env import RobotEnv, make_env  # noqa: E402
from sim.robosuite_expert import LiftExpert, run_episode  # noqa: E402
from sim.robosuite_robot import RobosuiteConfig, RobosuiteRobot, import_robosuite  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*Box observation space:UserWarning")
ENV_NAMES = ["Lift", "PickPlaceCan", "NutAssemblySquare"]


@pytest.fixture(scope="module")
def lift() -> Iterator[RobotEnv]:
    env = make_env(robot="robosuite", task="robosuite", robot_kwargs={"env_name": "Lift"})
    yield env
    env.close()


@pytest.mark.parametrize("env_name", ENV_NAMES)
def test_gymnasium_check_env(env_name: str) -> None:
    env = make_env(robot="robosuite", task="robosuite", robot_kwargs={"env_name": env_name})
    try:
        check_env(env.unwrapped, skip_render_check=True)
        obs, _ = env.reset(seed=0)
        assert obs["observation.state"].shape == (32,)
        assert obs["observation.environment_state"].shape[0] >= 10  # object pos + quat + ...
        assert env.robot.action_feature.names == ("dx", "dy", "dz", "dax", "day", "daz",
                                                  "gripper")
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        assert reward == info["reward_terms"]["env_reward"] == env.robot.state()["reward"]
        assert not terminated and not info["success"]
    finally:
        env.close()


def test_simulator_access(lift: RobotEnv) -> None:
    import mujoco

    robot = lift.robot
    assert isinstance(robot, RobosuiteRobot)
    assert isinstance(robot.model, mujoco.MjModel) and isinstance(robot.data, mujoco.MjData)
    assert robot.n_substeps == 25  # 20 Hz control, 2 ms physics
    assert robot.fps == 20.0
    lift.reset(seed=0)
    before = robot.data.time
    lift.step(np.zeros(7, np.float32))
    assert robot.data.time == pytest.approx(before + 0.05)


def test_seeded_reset_is_reproducible(lift: RobotEnv) -> None:
    def rollout(seed: int) -> list[dict[str, np.ndarray]]:
        obs = [lift.reset(seed=seed)[0]]
        actions = np.random.default_rng(0).uniform(-1, 1, (5, 7))
        obs += [lift.step(a)[0] for a in actions]
        return obs

    a, b, c = rollout(3), rollout(3), rollout(4)
    for oa, ob in zip(a, b, strict=True):
        for key in oa:
            np.testing.assert_array_equal(oa[key], ob[key], err_msg=key)
    cube_a = a[0]["observation.environment_state"][:3]
    cube_c = c[0]["observation.environment_state"][:3]
    assert np.abs(cube_a - cube_c).max() > 1e-3  # another seed places the cube elsewhere


def test_clipping_and_nan(lift: RobotEnv) -> None:
    robot = lift.robot
    lift.reset(seed=1)
    sent = robot.act(np.array([5.0, -5.0, np.nan, 0.3, np.nan, -0.2, 2.0]))
    np.testing.assert_array_equal(sent, [1.0, -1.0, 0.0, 0.3, 0.0, -0.2, 1.0])
    lift.reset(seed=1)
    start = robot.state()["eef_pos"]
    for _ in range(5):
        sent = robot.act(np.full(7, np.nan))
    np.testing.assert_array_equal(sent, np.zeros(7))
    still = np.linalg.norm(robot.state()["eef_pos"] - start)
    for _ in range(5):
        robot.act(np.array([0, 0, 1.0, 0, 0, 0, 0]))
    moved = robot.state()["eef_pos"] - start
    assert still < 0.01  # NaN -> zero delta: the arm holds still
    assert moved[2] > 0.05  # a full +z delta lifts the hand ~5 cm per step (minus lag)
    with pytest.raises(Exception, match="shape"):
        robot.act(np.zeros(3))


def test_expert_lifts_and_zero_policy_does_not(lift: RobotEnv) -> None:
    robot = lift.robot
    for seed in (0, 1, 2):
        expert = LiftExpert()
        ok, steps = run_episode(robot, expert, seed, max_steps=150)
        assert ok, f"expert failed on seed {seed}"
        assert lift.task.success(robot) and steps < 100
        for _ in range(30):  # keep lifting: the cube stays in the hand
            robot.act(expert.act(robot.state()))
        assert robot.state()["objects"]["cube"][2] > 0.9  # resting cube centre: ~0.82 m
    ok, _ = run_episode(robot, None, seed=0, max_steps=60)
    assert not ok and not lift.task.success(robot)


def test_config_validation_and_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="env_name"):
        RobosuiteConfig(env_name="Lfit")
    with pytest.raises(ValueError, match="positive"):
        RobosuiteConfig(control_freq=0)
    monkeypatch.setitem(sys.modules, "robosuite", None)  # import robosuite -> ImportError
    with pytest.raises(ImportError, match=r"robolearn\[robosuite\]"):
        import_robosuite()


def test_camera_images_are_upright() -> None:
    try:
        robot = RobosuiteRobot(env_name="Lift", cameras=["agentview"], render_size=64)
    except Exception as e:  # no GL backend on this machine
        pytest.skip(f"offscreen rendering unavailable: {e}")
    try:
        with robot:
            obs = robot.reset(seed=0)
            img = obs["observation.images.agentview"]
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
            ref = robot.render("agentview")  # mujoco.Renderer frames are upright
            assert ref is not None and ref.shape == img.shape
            upright = np.abs(img.astype(int) - ref).mean()
            flipped = np.abs(img[::-1].astype(int) - ref).mean()
            assert upright < flipped / 2, (upright, flipped)
    finally:
        robot.close()
