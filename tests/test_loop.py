"""The safety filter, the watchdog and the control loop, on the real simulated arm."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data import EpisodeStore
from robolearn.env import RobotEnv, make_env
from robolearn.experts import make_expert
from robolearn.loop import ActionError, ControlLoop, LoopConfig, step_features
from robolearn.safety import SafetyConfig, SafetyFilter, Watchdog
from robolearn_core.config import ConfigError, load_config


def test_filter_rejects_nonfinite_clips_and_rate_limits() -> None:
    f = SafetyFilter(np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                     SafetyConfig(max_delta=0.2))
    np.testing.assert_allclose(f(np.array([5.0, -0.1])), [0.2, -0.1])  # clip then rate limit
    np.testing.assert_allclose(f(np.array([np.nan, 0.0])), [0.2, -0.1])  # NaN: hold last
    np.testing.assert_allclose(f(np.array([np.inf, -np.inf])), [0.2, -0.1])
    out = [f(np.array([1.0, 1.0])) for _ in range(10)]
    assert np.all(np.abs(np.diff(np.stack(out), axis=0)) <= 0.2 + 1e-12)
    np.testing.assert_allclose(out[-1], [1.0, 1.0])
    assert f.stats.nonfinite == 2 and f.stats.clipped >= 1 and f.stats.rate_limited >= 1


def test_hold_rides_out_a_glitch_but_stops_a_policy_that_stays_nonfinite() -> None:
    """A policy that stays NaN used to have its last action replayed for the whole episode (a
    car kept its throttle); now "hold" holds ``nonfinite_hold_steps`` actions, then stops."""
    f = SafetyFilter(np.array([-1.0, -1.0]), np.array([1.0, 1.0]),
                     SafetyConfig(nonfinite_hold_steps=3), stop_action=lambda: np.zeros(2))
    f(np.array([0.2, 0.5]))
    for _ in range(3):
        np.testing.assert_allclose(f(np.array([0.0, np.nan])), [0.2, 0.5])
        assert not f.stop_requested
    np.testing.assert_allclose(f(np.array([0.0, np.nan])), [0.0, 0.0])
    assert f.stop_requested and f.stats.nonfinite == 4
    f(np.array([0.1, 0.1]))  # a finite action starts the count again
    np.testing.assert_allclose(f(np.array([np.inf, 0.0])), [0.1, 0.1])
    assert not f.stop_requested


def test_filter_stop_mode_sends_neutral_and_requests_stop() -> None:
    f = SafetyFilter(np.array([0.0, -1.0]), np.array([2.0, 1.0]),
                     SafetyConfig(on_nonfinite="stop"))
    f(np.array([1.5, 0.5]))
    out = f(np.array([1.0, np.nan]))
    assert f.stop_requested
    np.testing.assert_allclose(out, [0.0, 0.0])  # the neutral action, inside the bounds
    assert np.all(np.isfinite(out))
    # with the robot's own stop action (an arm: hold where it is), sent at once: a rate limit
    # does not slow a stop down
    pose = np.array([1.2, -0.4])
    g = SafetyFilter(np.array([0.0, -1.0]), np.array([2.0, 1.0]),
                     SafetyConfig(on_nonfinite="stop", max_delta=0.1), stop_action=pose.copy)
    g.reset(last=np.array([0.1, 0.9]))
    np.testing.assert_allclose(g(np.array([np.nan, 0.0])), pose)
    assert g.stop_requested
    np.testing.assert_allclose(g(np.array([1.2, -0.3])), [1.2, -0.3])  # rate limit from there


def test_safety_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"safety\.max_delta"):
        load_config(LoopConfig, overrides=["safety.max_delta=-1"])
    with pytest.raises(ConfigError, match=r"safety\.on_nonfinite"):
        load_config(LoopConfig, overrides=["safety.on_nonfinite=explode"])


def test_watchdog_stops_when_feeding_stops() -> None:
    stopped = threading.Event()
    with Watchdog(0.1, stopped.set) as dog:
        for _ in range(10):  # fed in time: never trips
            dog.feed()
            time.sleep(0.02)
        assert not stopped.is_set()
        assert stopped.wait(1.0), "watchdog did not stop the robot after commands stopped"
        assert dog.trips == 1


@pytest.fixture
def arm_env() -> RobotEnv:
    env = make_env(robot="sim_arm", task="arm_lift", max_steps=80)
    yield env
    env.close()


def test_loop_records_policy_steps_and_human_takeover(arm_env: RobotEnv, tmp_path: Path) -> None:
    expert = make_expert(arm_env)
    store = EpisodeStore.create(tmp_path / "s", {k: f.to_json() for k, f in
                                                 step_features(arm_env).items()}, fps=30)

    class Human:  # takes over for steps 10..19 with the expert's own action
        def __init__(self) -> None:
            self.t = 0

        def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
            self.t += 1
            return expert(obs) if 10 < self.t <= 20 else None

    loop = ControlLoop(arm_env, LoopConfig(realtime=False))
    with store.recorder(task="lift") as rec:
        loop.recorder = rec
        result = loop.run_episode(expert, Human(), seed=3, source="autonomous")
    assert result.sources == {"autonomous": result.steps - 10, "intervention": 10}
    ep = store.episode(0)
    assert ep.info.sources == result.sources
    assert list(ep["source"][10:20]) == [3] * 10  # Source.INTERVENTION
    assert result.success and ep.info.success
    assert result.terminated and ep.info.metadata["terminated"] is True  # success ends a lift
    with store.recorder(task="lift") as rec:  # cut by the step limit: not terminated
        loop.recorder = rec
        loop.cfg.max_steps = 5
        cut = loop.run_episode(expert, seed=4)
    assert not cut.terminated and store.episode(1).info.metadata["terminated"] is False
    # the recorded action is the one the robot received, within its bounds
    low, high = arm_env.robot.action_bounds
    assert np.all(ep["action"] >= low - 1e-6) and np.all(ep["action"] <= high + 1e-6)
    np.testing.assert_allclose(ep["next.reward"].sum(), result.ret, rtol=1e-5)


def calls(obj: Any, name: str) -> list[Any]:
    """Wrap ``obj.<name>`` so each call is recorded: its first argument (a copy), or its result
    when it takes none."""
    seen: list[Any] = []
    method = getattr(obj, name)

    def recorded(*args: Any) -> Any:
        out = method(*args)
        seen.append(np.array(args[0]) if args else out)
        return out

    setattr(obj, name, recorded)
    return seen


def test_loop_never_sends_nan_and_holds_rate(arm_env: RobotEnv) -> None:
    sent = calls(arm_env.robot, "act")
    rng = np.random.default_rng(0)

    def bad_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        a = rng.normal(0, 3, 6)
        a[rng.random(6) < 0.3] = np.nan
        return a

    loop = ControlLoop(arm_env, LoopConfig(fps=50, max_steps=20))
    t0 = time.perf_counter()
    result = loop.run_episode(bad_policy, seed=0)
    elapsed = time.perf_counter() - t0
    assert result.steps == 20 and len(sent) == 20
    assert all(np.all(np.isfinite(a)) for a in sent)
    assert result.safety.nonfinite > 0
    assert elapsed >= 19 / 50  # the loop never runs faster than its rate
    first = result.safety.nonfinite
    again = loop.run_episode(bad_policy, seed=1)  # each episode counts its own steps
    assert result.safety.nonfinite == first and result.safety.steps == 20
    assert again.safety.steps == 20 and 0 < again.safety.nonfinite <= 20
    assert set(result.timing) >= {"mean_late_ms", "p99_late_ms", "overruns"}


def test_loop_needs_something_to_run(arm_env: RobotEnv) -> None:
    with pytest.raises(ValueError, match="policy, a teleop device"):
        ControlLoop(arm_env).run_episode()


def test_a_nan_stop_holds_the_arm_where_it_is(arm_env: RobotEnv) -> None:
    """on_nonfinite=stop sends the arm its current joint positions (its hold action), not the
    all-zero action that would swing it to its zero pose."""
    sent, held = calls(arm_env.robot, "act"), calls(arm_env.robot, "hold_action")
    loop = ControlLoop(arm_env, LoopConfig(realtime=False, max_steps=5,
                                           safety=SafetyConfig(on_nonfinite="stop")))
    result = loop.run_episode(lambda obs: np.full(6, np.nan), seed=0, record=False)
    assert result.safety.nonfinite == 5
    stops = sent[-5:]
    np.testing.assert_allclose(stops, held[-5:])
    assert np.abs(stops[0]).max() > 0.1  # a real pose, not the zero action


@pytest.mark.parametrize("realtime", [False, True])
def test_the_watchdog_guards_a_robot_that_moves_while_the_loop_waits(
        arm_env: RobotEnv, realtime: bool) -> None:
    """A slow policy (0.15 s a step, watchdog 0.05 s): a loop keeping real time stops the robot
    during the silence; a simulated robot stepped as fast as it goes cannot move while it
    waits, so no stop comes from another thread in the middle of its episode."""
    stops = calls(arm_env.robot, "stop")
    expert = make_expert(arm_env)

    def slow(obs: dict[str, np.ndarray]) -> np.ndarray:
        time.sleep(0.15)
        return expert(obs)

    loop = ControlLoop(arm_env, LoopConfig(realtime=realtime, fps=50, max_steps=3,
                                           safety=SafetyConfig(watchdog_s=0.05)))
    loop.run_episode(slow, seed=0, record=False)
    during = len(stops) - 1  # the loop stops the robot once at the episode's end
    assert (during >= 2) if realtime else (during == 0)


def test_the_loop_starts_a_policy_afresh_with_the_episode_seed(arm_env: RobotEnv) -> None:
    """Given a policy's bound method (as evaluation does), the loop still resets the policy, and
    hands it the episode's seed for its sampling noise; a scripted expert takes the same call."""
    expert = make_expert(arm_env)

    class Learned:  # the Policy contract: select_action, reset(seed=...)
        def __init__(self) -> None:
            self.seeds: list[int | None] = []

        def reset(self, seed: int | None = None) -> None:
            self.seeds.append(seed)

        def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
            return expert(obs)

    learned = Learned()
    loop = ControlLoop(arm_env, LoopConfig(realtime=False, max_steps=2))
    for seed in (7, 8):
        loop.run_episode(learned.select_action, seed=seed, record=False)
    assert learned.seeds == [7, 8]
    loop.run_episode(expert, seed=9, record=False)  # the expert's reset ignores the seed


@pytest.fixture
def car_env() -> RobotEnv:
    # the car's own change-per-step limit off: what reaches it is what the loop's filter let by
    env = make_env(robot="sim_car", task="car_laps", max_steps=50,
                   robot_kwargs={"max_action_delta": 0})
    yield env
    env.close()


class Fails(Exception):
    pass


@pytest.mark.parametrize("failure, error, message", [
    (Fails("no GPU"), ActionError, r"step 4 of the episode of seed 3: the policy raised Fails: "
     r"no GPU; sim_car stopped; the 4 steps recorded kept as interrupted episode 0"),
    (np.zeros(3), ActionError, r"step 4 of the episode of seed 3: the policy's action has shape "
     r"\(3,\); sim_car takes actions of shape \(2,\); sim_car stopped; the 4 steps"),
    (KeyboardInterrupt(), KeyboardInterrupt, None),  # Ctrl-C goes on up as it is
])
def test_an_episode_ended_by_an_error_stops_the_robot_and_keeps_its_steps(
        car_env: RobotEnv, tmp_path: Path, failure: Any, error: type[BaseException],
        message: str | None) -> None:
    """The policy raises, or returns an action of the wrong shape, at step 4: the car's throttle
    is off at once (it stayed at 0.5 before), the 4 steps are committed by the loop itself (a
    caller that goes on recording keeps them), and the error names the step and the shapes."""
    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        policy.t += 1  # type: ignore[attr-defined]
        if policy.t <= 4:  # type: ignore[attr-defined]
            return np.array([0.0, 0.5])
        if isinstance(failure, BaseException):
            raise failure
        return failure

    store = EpisodeStore.create(tmp_path / "s", {k: f.to_json() for k, f in
                                                 step_features(car_env).items()}, fps=20)
    loop = ControlLoop(car_env, LoopConfig(realtime=False))
    with store.recorder(task="laps") as rec:
        loop.recorder = rec
        policy.t = 0  # type: ignore[attr-defined]
        with pytest.raises(error, match=message) as caught:
            loop.run_episode(policy, seed=3)
        assert car_env.robot.data.ctrl[2:4].tolist() == [0.0, 0.0]  # wheel speed targets
        loop.cfg.max_steps = 2
        loop.run_episode(lambda obs: np.array([0.0, 0.1]), seed=4)  # the caller goes on
    if error is KeyboardInterrupt:
        assert "sim_car stopped; the 4 steps recorded kept" in str(caught.value.__notes__)
    kept = store.episode(0).info
    assert (kept.length, kept.complete, kept.success, kept.tags) == (4, False, None,
                                                                    ("interrupted",))
    assert kept.metadata["seed"] == 3 and kept.metadata["error"].startswith(type(
        caught.value).__name__)
    assert len(store) == 2 and store.episode(1).info.length == 2


def test_after_a_watchdog_stop_the_rate_limit_counts_from_the_stop(car_env: RobotEnv) -> None:
    """Throttle 0.5, then the policy stalls past the watchdog (the car is stopped), then asks
    for 0.6: with max_delta=0.1 the car gets 0.1 after the stop, not 0.6 in one step."""
    sent, stops = calls(car_env.robot, "act"), calls(car_env.robot, "stop")

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        policy.t += 1  # type: ignore[attr-defined]
        if policy.t == 8:  # type: ignore[attr-defined]
            time.sleep(0.5)
            return np.array([0.3, 0.6])
        return np.array([0.3, 0.5])

    policy.t = 0  # type: ignore[attr-defined]
    loop = ControlLoop(car_env, LoopConfig(fps=50, max_steps=9, safety=SafetyConfig(
        max_delta=0.1, watchdog_s=0.2)))
    loop.run_episode(policy, seed=0, record=False)
    assert len(stops) >= 2  # the watchdog's stop, and the loop's at the end of the episode
    throttle = [round(float(a[1]), 6) for a in sent]
    # only the steps after the stall are asserted exactly: a busy machine may pause the loop
    # past the watchdog elsewhere too, which adds a stop but changes nothing after the stall
    assert throttle[7:] == [0.1, 0.2] and max(throttle[:7]) == 0.5
    # a stop holds the steering where it is: it goes on from there
    assert [round(float(a[0]), 6) for a in sent][7:] == [0.3, 0.3]


def test_a_failure_before_the_first_step_stops_the_robot(car_env: RobotEnv) -> None:
    """The policy's reset (or the reset's observer) raises: the robot is stopped as for a
    failure mid-episode (the reset, which moves a real robot, ran outside the loop's guard)."""
    stops = calls(car_env.robot, "stop")

    class Broken:
        def reset(self, seed: int | None = None) -> None:
            raise RuntimeError("no generator on this device")

        def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
            return np.zeros(2)

    loop = ControlLoop(car_env, LoopConfig(realtime=False))
    with pytest.raises(RuntimeError, match="no generator") as caught:
        loop.run_episode(Broken(), seed=1, record=False)
    assert len(stops) == 1
    assert "before its first step: sim_car stopped" in str(caught.value.__notes__)


def test_the_stored_episode_starts_before_the_first_step(car_env: RobotEnv,
                                                         tmp_path: Path) -> None:
    """The recorder's episode (which reads the store: file I/O) is started before the first
    step, not at the first ``add`` between the robot's first and second commands; an episode
    that fails before any step was recorded leaves nothing started, and the next one records."""
    store = EpisodeStore.create(tmp_path / "s", {k: f.to_json() for k, f in
                                                 step_features(car_env).items()}, fps=20)
    loop = ControlLoop(car_env, LoopConfig(realtime=False, max_steps=3))
    started: list[bool] = []

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        started.append(rec.in_episode)
        if len(started) == 1:
            raise RuntimeError("the first call fails")
        return np.array([0.0, 0.1])

    with store.recorder(task="laps") as rec:
        loop.recorder = rec
        with pytest.raises(ActionError, match="the first call fails"):
            loop.run_episode(policy, seed=0)
        assert started == [True] and not rec.in_episode
        loop.run_episode(policy, seed=1)
    assert started == [True] * 4
    assert len(store) == 1 and store.episode(0).info.length == 3
