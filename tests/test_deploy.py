"""``robolearn deploy``: tiny checkpoints trained here from scripted stores, deployed on the
simulated arm and car through the real control loop, recorded into real stores; Ctrl-C through
a real subprocess; planning off the control path against a deliberately slow chunked policy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from torch import Tensor

from data import EpisodeStore, Source
from policies.async_inference import AsyncChunks
from policies.base import Policy
from policies.mlp import MLPPolicy
from robolearn.cli import main
from robolearn.deploy import DeployConfig, deploy, schema_for
from robolearn.env import make_env
from robolearn.loop import ControlLoop, LoopConfig
from robolearn.robot import make_robot
from robolearn.vector import collect_scripted
from robolearn_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["fps=100", "-q"]  # simulated robots may run faster than their own rate


def _checkpoint(root: Path, env_id: str) -> Path:
    store = root / "demos.zarr"
    collect_scripted(env_id, str(store), episodes=2, num_envs=1, progress=False,
                     max_steps=40).close()
    run = root / "run"
    assert main(["train", f"dataset={store}", f"output={run}", "policy=mlp", "steps=2",
                 "batch_size=4", "num_workers=0", "save_every=2", "-q"]) == 0
    return run


@pytest.fixture(scope="module")
def arm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("arm"), "robolearn/SimArmLift-v0")


@pytest.fixture(scope="module")
def car_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("car"), "robolearn/SimCar-v0")


def _config(*overrides: str) -> DeployConfig:
    """The config as the command line loads it (``robot=NAME`` as the CLI rewrites it)."""
    args = [f"robot.type={a.split('=', 1)[1]}" if a.startswith("robot=") else a
            for a in overrides]
    return load_config(schema_for(None, args), None, args)


def _sources(store: EpisodeStore, i: int) -> list[Source]:
    return [Source(s) for s in store.episode(i, ["source"])["source"]]


@pytest.mark.parametrize("which", ["arm", "car"])
def test_deploy_records_policy_episodes(which: str, arm_run: Path, car_run: Path,
                                        tmp_path: Path) -> None:
    run, robot = (arm_run, "sim_arm") if which == "arm" else (car_run, "sim_car")
    out = tmp_path / "deployed"
    assert main(["deploy", str(run), "episodes=2", "max_steps=12", f"output={out}",
                 *FAST]) == 0
    with EpisodeStore.open(out) as store:
        assert len(store) == 2 and store.robot_type == robot
        assert store.metadata["checkpoint"] == str((run / "checkpoints" / "last" / "policy")
                                                   .resolve())
        assert store.metadata["robot"] == robot and store.metadata["env_id"] is not None
        for i in range(2):
            info = store.info(i)
            assert info.length == 12 and info.complete and info.success is not None
            assert info.metadata["seed"] == i and info.metadata["checkpoint"]
            assert set(_sources(store, i)) == {Source.POLICY}
    # a second deployment appends to robolearn's store; a foreign directory is refused
    assert main(["deploy", str(run), "max_steps=5", f"output={out}", *FAST]) == 0
    with EpisodeStore.open(out) as store:
        assert len(store) == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["deploy", str(run), "max_steps=5", f"output={foreign}", *FAST]) == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


class ScriptedHuman:
    """A teleop device (the loop's Teleop protocol) that holds the arm where it is for steps
    ``start <= t < stop`` of each episode, hands-off otherwise."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop, self.t = start, stop, 0
        self.resets = 0

    def reset(self) -> None:
        self.t = 0
        self.resets += 1

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        t, self.t = self.t, self.t + 1
        return obs["observation.state"][:6].copy() if self.start <= t < self.stop else None


def test_a_takeover_device_records_interventions(arm_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "takeover"
    human = ScriptedHuman(5, 9)
    cfg = _config(f"checkpoint={arm_run}", "max_steps=15", "episodes=2", f"output={out}",
                  "fps=100", "safety.max_delta=100")
    assert deploy(cfg, teleop=human) == 0
    assert human.resets == 2
    policy = Policy.load(arm_run / "checkpoints" / "last" / "policy")
    low, high = make_robot("sim_arm").action_bounds
    with EpisodeStore.open(out) as store:
        for i in range(2):
            src = _sources(store, i)
            assert src == [Source.INTERVENTION if 5 <= t < 9 else Source.POLICY
                           for t in range(15)]
            assert store.info(i).sources == {"policy": 11, "intervention": 4}
            # handed back at step 9, the policy plans afresh from there (not the rest of the
            # chunk it planned at step 0, before the human moved the arm)
            ep = store.episode(i)
            policy.reset()
            fresh = policy.select_action({k: ep[k][9] for k in policy.obs_keys})
            np.testing.assert_allclose(ep["action"][9], np.clip(fresh, low, high), atol=1e-5)


def test_an_incompatible_robot_fails_in_one_line_before_anything(
        arm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    assert main(["deploy", str(arm_run), "robot=sim_car", f"output={out}", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "observation.state: policy float32(12,), sim_car float32(15,)" in err
    assert "observation.environment_state float32(13,) missing" in err
    assert "action: policy float32(6,)" in err and "sim_car float32(2,)" in err
    assert not out.exists()
    # a robot's typed settings are checked when the config loads, naming the key
    assert main(["deploy", str(arm_run), "robot.camerass=[front]", f"output={out}"]) == 2
    assert "robot.cameras" in capsys.readouterr().err and not out.exists()


def test_on_a_robot_the_data_did_not_come_from_success_is_unknown(
        arm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Data imported from elsewhere names no env: the robot must be named, and it runs under
    the unscored task (no reward, success unknown), as on a real arm."""
    run = tmp_path / "imported"
    shutil.copytree(arm_run, run, symlinks=True)
    meta = json.loads((run / "dataset.json").read_text())
    meta.update(env_id=None, robot_type="so101_follower")
    (run / "dataset.json").write_text(json.dumps(meta))
    assert main(["deploy", str(run), "-q"]) == 2
    assert "pass robot=NAME" in capsys.readouterr().err
    out = tmp_path / "unscored"
    assert main(["deploy", str(run), "robot=sim_arm", "max_steps=6", f"output={out}",
                 *FAST]) == 0
    with EpisodeStore.open(out) as store:
        assert store.info(0).success is None and store.metadata["env_id"] is None
        assert not store.episode(0, ["next.reward"])["next.reward"].any()


class Exploding(MLPPolicy):
    """The checkpoint's MLP, raising on its third plan of an episode (step 16: 8 per plan)."""

    plans = 0

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.plans = 0

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        self.plans += 1
        if self.plans == 3:
            raise RuntimeError("boom")
        return super().predict_chunk(batch)


@pytest.mark.parametrize("mode", ["off", "on"])
def test_a_policy_raising_mid_episode_stops_and_keeps_the_steps(
        mode: str, arm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.arm.robot import SimArm

    loaded = Policy.load(arm_run / "checkpoints" / "last" / "policy")
    policy = Exploding(loaded.config, loaded.features, loaded.stats)  # type: ignore[arg-type]
    policy.load_state_dict(loaded.state_dict())
    stops: list[int] = []
    real_stop = SimArm.stop

    def stop(self: SimArm) -> None:  # the real stop, counted
        stops.append(1)
        real_stop(self)

    monkeypatch.setattr(SimArm, "stop", stop)
    out = tmp_path / "exploded"
    cfg = _config(f"checkpoint={arm_run}", "max_steps=40", f"output={out}", "fps=100",
                  f"async_inference={mode}")
    capsys.readouterr()
    assert deploy(cfg, policy=policy) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "robolearn deploy" in line]
    assert len(err) == 1 and "boom" in err[0] and "sim_arm stopped" in err[0], err
    assert "kept as interrupted episode 0" in err[0]
    assert stops
    with EpisodeStore.open(out) as store:
        info = store.info(0)
        assert not info.complete and "interrupted" in info.tags and "boom" in \
            info.metadata["error"]
        # inline, the third plan is due at step 16; planned ahead, it is asked for earlier
        assert (info.length == 16) if mode == "off" else (8 <= info.length <= 16)


def test_a_lost_link_stops_commits_and_says_so_in_one_line(
        arm_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from robolearn.robot import RobotError
    from sim.arm.robot import SimArm

    real_act, calls = SimArm.act, [0]

    def act(self: SimArm, action: np.ndarray) -> np.ndarray:  # the link drops at step 5
        calls[0] += 1
        if calls[0] > 5:
            raise RobotError("sim_arm: link lost (no status packet)")
        return real_act(self, action)

    monkeypatch.setattr(SimArm, "act", act)
    out = tmp_path / "lost"
    capsys.readouterr()
    assert main(["deploy", str(arm_run), "max_steps=20", f"output={out}", *FAST]) == 1
    said = [ln for ln in capsys.readouterr().err.splitlines() if "robolearn deploy" in ln]
    assert len(said) == 1 and "link lost" in said[0] and "sim_arm stopped" in said[0], said
    with EpisodeStore.open(out) as store:
        assert store.info(0).length == 5 and "interrupted" in store.info(0).tags
    # a robot that does not connect: one line through the command line, no store
    monkeypatch.setattr(SimArm, "connect", lambda self: (_ for _ in ()).throw(
        RobotError("sim_arm: port /dev/ttyACM9 does not open")))
    assert main(["deploy", str(arm_run), f"output={tmp_path / 'never'}", *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["robolearn deploy: sim_arm: port /dev/ttyACM9 does not open"], err
    assert not (tmp_path / "never").exists()


def test_ctrl_c_exits_130_and_keeps_the_steps(car_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    # PYTHONFAULTHANDLER: if it ever hangs after Ctrl-C (once, in a full suite run on this
    # busy machine), SIGABRT makes it print every thread's stack into the failure
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    # started with SIGINT ignored, as a script's background job is (the deploy hung on Ctrl-C
    # that way before the CLI restored it): Ctrl-C must stop it however it was started
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "deploy", str(car_run),
                             "max_steps=100000", f"output={out}", "-q"], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stderr is not None
    try:
        line = proc.stderr.readline()
        assert line.startswith("deploying"), line
        time.sleep(3.0)  # 20 Hz: about 60 steps (>= 10 asserted: room for a loaded CI machine)
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            raise AssertionError("deploy still running 60 s after Ctrl-C:\n"
                                 + proc.communicate(timeout=10)[1][-4000:]) from None
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    said = [ln for ln in rest.splitlines() if ln.startswith("robolearn deploy")]
    assert len(said) == 1 and "interrupted" in said[0] and "sim_car stopped" in said[0], rest
    with EpisodeStore.open(out) as store:
        info = store.info(0)
        assert len(store) == 1 and "interrupted" in info.tags and info.length >= 10


# --------------------------------------------------------------------------- off the control path
class SlowMLP(MLPPolicy):
    """An MLP whose every plan takes ``delay`` s (a diffusion policy on a busy CPU)."""

    delay = 0.15

    def predict_chunk(self, batch: Mapping[str, Tensor]) -> Tensor:
        time.sleep(self.delay)
        return super().predict_chunk(batch)


def test_planning_off_the_control_path_keeps_the_period(arm_run: Path) -> None:
    loaded = Policy.load(arm_run / "checkpoints" / "last" / "policy")
    slow = SlowMLP(loaded.config, loaded.features, loaded.stats)  # type: ignore[arg-type]
    slow.load_state_dict(loaded.state_dict())
    env = make_env("sim_arm", "arm_lift", max_steps=40)
    try:
        loop = ControlLoop(env, LoopConfig(fps=20, max_steps=40))  # a 50 ms period
        inline = loop.run_episode(slow.select_action, seed=0, record=False)
        with AsyncChunks(slow, 1 / 20, hold=env.robot.hold_action) as runner:
            planned = loop.run_episode(runner.select_action, seed=0, record=False)
            stats = runner.stats
    finally:
        env.close()
    # inline, every plan (steps 0, 8, 16, 24, 32) makes the next step late by over a period
    assert inline.timing["overruns"] >= 4, inline.timing
    assert planned.timing["overruns"] == 0, planned.timing
    assert stats.plans >= 5 and stats.lead >= 4  # 150 ms plans: requested 4 steps ahead
    assert stats.starved <= 5  # holding still at the start, while the first chunk is planned


class StepPlanner:
    """A chunked planner whose chunk planned at step ``s`` holds ``s, s + 1, ...``: an action
    says which step it was planned for, so alignment can be read off the actions."""

    def __init__(self, delay: float, horizon: int = 8, fail_at: int | None = None) -> None:
        self.delay, self.horizon, self.fail_at = delay, horizon, fail_at
        self.config = SimpleNamespace(n_action_steps=4)  # what the runner reads of a config
        self.step = -1

    def eval(self) -> StepPlanner:
        return self

    def reset(self, seed: int | None = None) -> None:
        self.step = -1

    def observe(self, obs: Any) -> dict[str, Tensor]:
        import torch

        self.step += 1
        return {"step": torch.tensor([self.step])}

    def plan(self, window: dict[str, Tensor]) -> Tensor:
        import torch

        s = int(window["step"][0])
        if self.fail_at is not None and s >= self.fail_at:
            raise ValueError(f"cannot plan at step {s}")
        time.sleep(self.delay)
        return (s + torch.arange(self.horizon, dtype=torch.float32))[:, None]


def test_chunks_are_aligned_with_the_steps_already_executed() -> None:
    period = 0.02
    runner = AsyncChunks(StepPlanner(delay=0.05), period, hold=lambda: np.array([-1.0]))
    try:
        runner.reset(seed=0)
        got = []
        for _ in range(40):
            got.append(float(runner.select_action({})[0]))
            time.sleep(period)
        stats = runner.stats
    finally:
        runner.close()
    first = next(t for t, a in enumerate(got) if a >= 0)
    assert got[:first] == [-1.0] * first and first <= 6  # held until the first chunk
    assert got[first:first + 2] == [0.0, 1.0]  # planned while holding: from its start
    # each later chunk takes over from its action for the current step; a late one repeats
    later = got[first + 8:]
    assert sum(a == t for a, t in zip(later, range(first + 8, 40), strict=True)) >= 0.8 * len(
        later), got
    assert all(a <= t for t, a in enumerate(got))  # never an action planned for the future
    assert stats.dropped > 0 and stats.plans >= 5


def test_a_planning_error_or_stall_reaches_the_loop() -> None:
    runner = AsyncChunks(StepPlanner(delay=0.0, fail_at=3), 0.01, hold=lambda: np.zeros(1))
    with runner, pytest.raises(RuntimeError, match="cannot plan at step 3"):
        for _ in range(50):
            runner.select_action({})
            time.sleep(0.01)
    from policies.async_inference import InferenceStalled

    stalling = AsyncChunks(StepPlanner(delay=0.0), 0.01, hold=lambda: np.zeros(1), stall_s=0.1)
    with stalling, pytest.raises(InferenceStalled, match="no action chunk"):
        stalling.select_action({})
        time.sleep(0.05)
        stalling.select_action({})  # the first chunk taken
        stalling.policy.delay = 1.0  # type: ignore[attr-defined]
        for _ in range(100):
            stalling.select_action({})
            time.sleep(0.01)


class ScriptedPad:
    """A gamepad as the loop sees it: never drives, and holds the deadman button ``lb`` for
    steps ``start <= t < stop`` of each episode."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop, self.t = start, stop, -1

    def reset(self) -> None:
        self.t = -1

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        self.t += 1
        return None

    def held(self) -> frozenset[str]:
        return frozenset({"lb"}) if self.start <= self.t < self.stop else frozenset()


def test_the_policy_drives_only_while_the_deadman_is_held(car_run: Path, tmp_path: Path) -> None:
    """deadman=lb (F1TENTH's autonomy button): released, the car gets its hold action (no
    throttle); held, the policy's; every step recorded."""
    out = tmp_path / "deadman"
    cfg = _config(f"checkpoint={car_run}", "max_steps=20", f"output={out}", "fps=100",
                  "teleop=gamepad", "deadman=lb")
    assert deploy(cfg, teleop=ScriptedPad(5, 12)) == 0
    with EpisodeStore.open(out) as store:
        throttle = store.episode(0)["action"][:, 1]
    assert np.all(throttle[:5] == 0)
    assert np.all(throttle[5:12] != 0)  # the policy drives
    # released: throttle back to 0 at the car's own rate limit (0.2 a step), then held there
    assert np.all(np.abs(throttle[13:]) <= np.abs(throttle[12:-1]) + 1e-6)
    assert np.all(throttle[17:] == 0), throttle
    with pytest.raises(Exception, match="deadman"):
        _config(f"checkpoint={car_run}", "deadman=lb")  # no device to hold it


def test_a_planning_process_gives_the_thread_s_actions(arm_run: Path) -> None:
    """planner=process: the chunks come from a copy of the policy in a child process (no GIL
    shared with the control loop), the same actions as the planning thread's for the same
    episode, through a reset (forwarded to the process; this MLP has no noise, so its seed
    is not seen here); a failing plan is raised in the control thread."""
    loaded = Policy.load(arm_run / "checkpoints" / "last" / "policy")
    env = make_env("sim_arm", "arm_lift", max_steps=30)
    actions: dict[bool, np.ndarray] = {}
    try:
        for process in (False, True):
            loop = ControlLoop(env, LoopConfig(fps=1000, max_steps=30, realtime=False))
            # compared in steps, not in time: a period no plan outlasts (the next chunk is
            # always requested the same number of steps ahead), and each plan in before the
            # next step (it always lands at the same step). With a 50 ms period a plan slowed
            # by a busy machine moved the request a step, and the actions with it (0.024
            # apart in 8 of 60 values, once in a full run on a quiet machine)
            with AsyncChunks(loaded, 10.0, hold=None, process=process) as runner:
                store_free = loop.run_episode(runner.select_action, seed=3, record=False)
                assert store_free.steps == 30
                runner.reset(seed=3)  # the planner's noise restarts (forwarded to a process)
                obs, _ = env.reset(seed=3)
                steps = []
                for _ in range(10):
                    steps.append(runner.select_action(obs))
                    assert runner.wait_idle(timeout=30)
                actions[process] = np.stack(steps)
    finally:
        env.close()
    np.testing.assert_allclose(actions[True], actions[False], atol=1e-5)
    failing = AsyncChunks(StepPlanner(delay=0.0, fail_at=0), 0.01, hold=lambda: np.zeros(1),
                          process=True)
    try:
        with pytest.raises(RuntimeError, match="in the planning process: ValueError"):
            for _ in range(3000):  # the child process starts (imports torch) first: seconds
                failing.select_action({})
                time.sleep(0.01)
    finally:
        failing.close()
