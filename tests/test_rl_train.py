"""``robolearn train policy=<RL learner>`` end to end on the simulated car: real MuJoCo, a real
demo store, the online store, evaluation, exact resume, a SIGKILLed trainer, and learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from data import EpisodeStore, Source
from robolearn.cli import main

TINY = ["policy_config.n_critics=4", "policy_config.utd=2", "policy_config.batch_size=16",
        "policy_config.critic_hidden=[32,32]", "policy_config.actor.hidden=[32,32]",
        "policy_config.random_steps=20", "threads=1"]


@pytest.fixture(scope="module")
def car_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rl") / "car.zarr"
    assert main(["collect", str(path), "env=robolearn/SimCar-v0", "episodes=2",
                 "max_steps=60"]) == 0
    return path


def train(out: Path, *extra: str, policy: str = "rlpd", dataset: Path | None = None) -> int:
    args = ["train", f"policy={policy}", "env=robolearn/SimCar-v0", f"output={out}",
            "max_episode_steps=30", "eval_every=60", "eval_episodes=1", "log_every=30",
            "save_every=30", *TINY, *extra]
    if dataset is not None:
        args.append(f"dataset={dataset}")
    return main(args)


def test_rlpd_run_records_online_experience_and_evaluates(car_demos: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(out, "env_steps=90", "eval_episodes=2", dataset=car_demos) == 0
    with EpisodeStore.open(out / "online.zarr") as store:
        assert len(store) == 3  # 90 steps of 30-step episodes
        assert all(i.sources == {"autonomous": 30} for i in store.infos())
        actions = np.concatenate([store.episode(i)["action"] for i in range(3)])
        assert np.isfinite(actions).all() and np.abs(actions).max() <= 1.0
        assert store.verify() == []
    rows = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any('"critic_loss"' in r for r in rows)
    evals = [json.loads(r) for r in rows if '"kind": "eval"' in r]
    assert evals and all(len(e["eval_returns"]) == 2 and len(e["eval_successes"]) == 2
                         and np.isclose(np.mean(e["eval_returns"]), e["eval_return"])
                         for e in evals)  # per episode as well as the mean
    # the checkpoint's actor is a regular policy: robolearn eval runs it
    assert main(["eval", str(out), "episodes=2", "videos=0", "max_steps=30"]) == 0
    assert (out / "eval" / "eval.json").exists()
    # and the experience is data: another learner pretrains on this run's online store
    reuse = tmp_path / "reuse"
    assert train(reuse, "env_steps=30", "policy_config.offline_steps=4", "log_every=2",
                 policy="iql", dataset=out / "online.zarr") == 0
    assert json.loads((reuse / "dataset.json").read_text())["dataset"] == str(out / "online.zarr")
    assert '"kind": "offline"' in (reuse / "metrics.jsonl").read_text()


def test_resume_is_exact(car_demos: Path, tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train(straight, "env_steps=90", dataset=car_demos) == 0
    assert train(split, "env_steps=90", "stop_at=45", dataset=car_demos) == 0
    # stopped at the first episode end after step 45, with a checkpoint
    assert (split / "checkpoints" / "step_00000060").is_dir()
    # invoked again with the same stop: nothing happens (it used to run one more episode)
    assert train(split, "env_steps=90", "stop_at=45", dataset=car_demos) == 0
    assert not (split / "checkpoints" / "step_00000090").exists()
    assert train(split, "env_steps=90", dataset=car_demos) == 0
    a = load_file(straight / "checkpoints" / "last" / "policy" / "model.safetensors")
    b = load_file(split / "checkpoints" / "last" / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with EpisodeStore.open(straight / "online.zarr") as s1, \
            EpisodeStore.open(split / "online.zarr") as s2:
        assert len(s1) == len(s2) == 3
        for i in range(3):
            np.testing.assert_array_equal(s1.episode(i)["action"], s2.episode(i)["action"])
    # a finished run continued with a larger budget (its replay, sized to the first budget and
    # full, grows): the same as the straight run, also when the finished run was invoked again
    # in between (that must change nothing)
    extended = tmp_path / "extended"
    assert train(extended, "env_steps=60", dataset=car_demos) == 0
    assert train(extended, "env_steps=60", dataset=car_demos) == 0
    assert train(extended, "env_steps=90", dataset=car_demos) == 0
    c = load_file(extended / "checkpoints" / "last" / "policy" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], c[k]), k


def test_a_sigkilled_trainer_resumes_and_its_store_stays_intact(car_demos: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "killed"
    # a budget no machine finishes before the kill below; where the kill lands varies with the
    # machine's speed, so the resumed budget is set from the checkpoint the kill left behind
    cmd = [sys.executable, "-m", "robolearn.cli", "train", "policy=rlpd",
           "env=robolearn/SimCar-v0", f"dataset={car_demos}", f"output={out}",
           "max_episode_steps=30", "env_steps=100000", "eval_every=100000", "save_every=60",
           "log_every=30", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    deadline = time.time() + 240
    ckpts = out / "checkpoints"

    def complete_episodes() -> int:  # read while the trainer writes
        if not (out / "online.zarr" / "zarr.json").exists():
            return 0
        with EpisodeStore.open(out / "online.zarr") as live:
            return sum(i.complete for i in live.infos())

    # checkpoints come every second episode: kill when the store holds an episode the last
    # checkpoint does not know about (the resume must drop it) and another one is under way
    while time.time() < deadline and (len(list(ckpts.glob("step_*"))) < 2
                                      or complete_episodes() % 2 == 0):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the trainer ended before it was killed"
    assert len(list(ckpts.glob("step_*"))) >= 2, "the trainer never checkpointed"
    state = torch.load(ckpts / "last" / "training_state.pt", map_location="cpu",
                       weights_only=False)
    budget = state["counters"]["env_step"] + 60  # two more episodes of 30 steps
    assert train(out, f"env_steps={budget}", "eval_every=1000", dataset=car_demos) == 0
    with EpisodeStore.open(out / "online.zarr") as store:
        assert store.verify() == []
        assert len(store) == budget // 30
        assert all(i.length == 30 and i.complete for i in store.infos())
    # the rows logged after the checkpoint were dropped, then logged again: each once
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    episodes = [r["episode"] for r in rows if r["kind"] == "episode"]
    assert episodes == list(range(budget // 30))
    steps = [r["env_step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps))


def test_a_nan_actor_never_reaches_the_robot(car_demos: Path, tmp_path: Path) -> None:
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for
    from robolearn_core.config import load_config

    over = [f"output={tmp_path / 'nan'}", "env_steps=30", "max_episode_steps=30",
            "policy=sac", "policy_config.random_steps=0", "eval_every=1000", *TINY[:5]]
    cfg = load_config(schema_for(None, over), None, over)
    runner = Runner(cfg)
    with torch.no_grad():
        for p in runner.agent.actor.head.parameters():
            p.fill_(float("nan"))
    assert runner.run() == 0
    with EpisodeStore.open(tmp_path / "nan" / "online.zarr") as store:
        ep = store.episode(0)
        assert np.isfinite(ep["action"]).all()
        assert (ep["source"] == int(Source.AUTONOMOUS)).all()


@pytest.mark.parametrize("on_nonfinite", ["hold", "stop"])
def test_the_runner_applies_its_safety_config(on_nonfinite: str, tmp_path: Path) -> None:
    """``safety`` reaches practice: a rate limit on random actions, and a NaN actor that holds
    the last safe action or stops the robot, as configured."""
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for
    from robolearn_core.config import load_config

    limited = tmp_path / "limited"
    assert main(["train", "policy=sac", "env=robolearn/SimCar-v0", f"output={limited}",
                 "max_episode_steps=30", "env_steps=60", "eval_every=1000",
                 "safety.max_delta=0.1", *TINY]) == 0
    with EpisodeStore.open(limited / "online.zarr") as store:
        for i in range(len(store)):  # uniform random actions, each step at most 0.1 from the last
            assert np.abs(np.diff(store.episode(i)["action"], axis=0)).max() <= 0.1 + 1e-6

    over = [f"output={tmp_path / on_nonfinite}", "env_steps=30", "max_episode_steps=30",
            "policy=sac", "policy_config.random_steps=0", "eval_every=1000",
            f"safety.on_nonfinite={on_nonfinite}", *TINY[:5]]
    runner = Runner(load_config(schema_for(None, over), None, over))
    with torch.no_grad():
        for p in runner.agent.actor.head.parameters():
            p.fill_(float("nan"))
    stops = 0
    robot_stop = runner.env.robot.stop

    def counted_stop() -> None:
        nonlocal stops
        stops += 1
        robot_stop()

    runner.env.robot.stop = counted_stop  # type: ignore[method-assign]
    assert runner.run() == 0
    assert runner.safety.stats.nonfinite == 30
    # "hold" holds the default 5 consecutive non-finite actions, then stops the robot; the
    # control loop stops it once more at the episode's end
    assert stops == (30 if on_nonfinite == "stop" else 25) + 1


def test_a_run_from_before_the_safety_config_resumes(car_demos: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    out = tmp_path / "old"
    assert train(out, "env_steps=30", dataset=car_demos) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["safety"]  # as written before the runner had it
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    # a changed limit still refuses to resume (config error, exit 2), the defaults resume
    assert train(out, "env_steps=60", "safety.max_delta=0.2", dataset=car_demos) == 2
    assert "safety.max_delta (None -> 0.2)" in capsys.readouterr().err
    assert train(out, "env_steps=60", dataset=car_demos) == 0
    assert "resumed" in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.parametrize("policy", ["rlpd", "calql"])
def test_practice_updates_never_make_the_host_wait_for_the_device(
        policy: str, car_demos: Path, tmp_path: Path) -> None:
    """Through the real runner: every symmetric batch (offline + online replay on the device) and
    every update, offline pretraining included, runs without an operator that would make the
    host wait for a GPU (``tests/test_rl_parts.py`` says which)."""
    from bench.rl_update import HostSyncDetector, optimizer_steps
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for
    from robolearn_core.config import load_config

    over = [f"output={tmp_path / policy}", "env_steps=60", "max_episode_steps=30",
            f"policy={policy}", f"dataset={car_demos}", "eval_every=1000",
            "policy_config.offline_steps=20", "policy_config.keep_offline=true",
            "policy_config.offline_ratio=0.5", "policy_config.bc_weight=0.5", *TINY]
    cfg = load_config(schema_for(None, over), None, over)
    runner = Runner(cfg)
    found: list[str] = []
    calls = {"batch": 0, "update": 0}

    def guarded(name: str, fn: Any, owner: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            if name == "update" and calls[name] == 1:
                return fn(*args, **kwargs)  # the first creates the optimisers' step counters
            with HostSyncDetector(optimizer_steps(owner)) as detector:
                out = fn(*args, **kwargs)
            found.extend(detector.found)
            return out
        return call

    runner.batch = guarded("batch", runner.batch, runner)  # type: ignore[method-assign]
    runner.agent.update = guarded("update", runner.agent.update,  # type: ignore[method-assign]
                                  runner.agent)
    assert runner.run() == 0
    assert calls["batch"] > 10 and calls["update"] > 20 + 10  # offline and online updates ran
    assert found == []
    # each finished episode's online transitions carry their Monte-Carlo return (Cal-QL's clip
    # holds online too): two 30-step episodes
    from policies.rl.replay import discounted_returns

    data = {k: v[: len(runner.online)].numpy() for k, v in runner.online.data.items()}
    assert len(data["reward"]) == 60
    for first in (0, 30):
        np.testing.assert_allclose(
            data["mc_return"][first:first + 30],
            discounted_returns(data["reward"][first:first + 30], cfg.policy_config.gamma),
            rtol=1e-5)


def test_a_recovery_ends_the_stored_stretch_so_no_transition_spans_it(
        car_demos: Path, tmp_path: Path) -> None:
    """A stuck car's recovery manoeuvre (real physics: it reverses) happens between two steps of
    one learner episode. The online store ends its stretch there, so transitions rebuilt from
    the store are exactly the replay's, none pairing a step with the recovered observation."""
    from policies.rl.replay import load_transitions
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for
    from robolearn_core.config import load_config

    over = [f"output={tmp_path / 'run'}", "policy=rlpd", "env_steps=60", "max_episode_steps=30",
            f"dataset={car_demos}", "eval_every=1000", *TINY]
    cfg = load_config(schema_for(None, over), None, over)
    runner = Runner(cfg)
    runner.env.robot.needs_recovery = lambda: runner.env_step in (10, 45)  # type: ignore
    assert runner.run() == 0
    replay = {k: v[: len(runner.online)].numpy() for k, v in runner.online.data.items()}
    key = "observation.state"
    # the manoeuvre moved the car: the step before it does not lead to the step after it
    assert not np.allclose(replay[f"next_obs/{key}"][9], replay[f"obs/{key}"][10])
    with EpisodeStore.open(tmp_path / "run" / "online.zarr") as store:
        assert [i.length for i in store.infos()] == [10, 20, 15, 15]
        assert [("recovery" in i.tags) for i in store.infos()] \
            == [True, False, True, False]
        rebuilt = load_transitions(store, [key], cfg.policy_config.gamma, False)
    # every stretch is truncated: its last step has no next state in the store
    rows = [r for r in range(60) if r not in (9, 29, 44, 59)]
    np.testing.assert_array_equal(rebuilt[f"obs/{key}"], replay[f"obs/{key}"][rows])
    np.testing.assert_array_equal(rebuilt[f"next_obs/{key}"], replay[f"next_obs/{key}"][rows])
    np.testing.assert_array_equal(rebuilt["action"], replay["action"][rows])


def test_the_rate_limit_counts_from_where_a_recovery_left_the_car(tmp_path: Path) -> None:
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for
    from robolearn_core.config import load_config

    over = [f"output={tmp_path / 'run'}", "policy=sac", "env_steps=30", "max_episode_steps=30",
            "eval_every=1000", "safety.max_delta=0.1", *TINY[:5],
            "policy_config.random_steps=30"]
    runner = Runner(load_config(schema_for(None, over), None, over))
    runner.env.robot.needs_recovery = lambda: runner.env_step == 20  # type: ignore
    assert runner.run() == 0
    # throttle (the car's steering is re-centred too, but the sim car's own slew limit, which
    # the stored sent action shows, holds it near the manoeuvre's random angle for a few steps)
    with EpisodeStore.open(tmp_path / "run" / "online.zarr") as store:
        before, after = store.episode(0)["action"][:, 1], store.episode(1)["action"][:, 1]
    assert len(before) == 20 and abs(before[-1]) > 0.1  # random throttle drifted from rest
    assert abs(after[0]) <= 0.1 + 1e-6  # within max_delta of rest, not of the old command


def test_rl_config_errors_name_the_key(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    assert main(["train", "policy=rlpd", f"output={tmp_path}", "policy_config.n_critcs=3"]) == 2
    assert "policy_config.n_critcs" in capsys.readouterr().err
    assert main(["train", "policy=wsrl", "env=robolearn/Nope-v0"]) == 2
    assert "env" in capsys.readouterr().err
    assert main(["train", "policy=rlpd", f"output={tmp_path}"]) == 2
    assert "dataset=STORE" in capsys.readouterr().err


def test_sac_practises_from_a_camera_with_drq(tmp_path: Path) -> None:
    out = tmp_path / "cam"
    assert train(out, "env_steps=60", "robot.camera=true", "robot.camera_size=[24,24]",
                 "policy_config.actor.encoder.channels=[8,8]", policy="sac") == 0
    with EpisodeStore.open(out / "online.zarr") as store:
        ep = store.episode(0)
        assert ep["observation.images.front"].shape == (30, 24, 24, 3)
    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=False)
    assert any("cameras" in k for k in state["agent"])  # the conv encoder was trained and kept


def test_a_dataset_that_does_not_fit_the_env_is_named(car_demos: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "policy=rlpd", f"output={tmp_path / 'x'}", "env_steps=30", *TINY]
    assert main([*args, "env=robolearn/SimArmLift-v0", f"dataset={car_demos}"]) == 1
    err = capsys.readouterr().err
    assert str(car_demos) in err and "observation.environment_state" in err
    odd = tmp_path / "odd.zarr"
    schema = {"observation.state": {"dtype": "float32", "shape": [3]},
              "action": {"dtype": "float32", "shape": [2]},
              "next.reward": {"dtype": "float32", "shape": []}}
    with EpisodeStore.create(odd, schema, fps=20) as s, s.recorder() as rec:
        for _ in range(3):
            rec.add({"observation.state": np.zeros(3, np.float32),
                     "action": np.zeros(2, np.float32), "next.reward": np.float32(0)})
        rec.end_episode(success=False)
    assert main([*args, "env=robolearn/SimCar-v0", f"dataset={odd}"]) == 1
    assert "observation.state (3,) (env: (15,))" in capsys.readouterr().err


def test_relative_joint_actions_reach_the_arm_as_bounded_steps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joints = "[shoulder_pan,shoulder_lift,elbow_flex,wrist_flex,wrist_roll]"
    args = ["train", "policy=sac", "env=robolearn/SimArmLift-v0", "max_episode_steps=20",
            "eval_every=1000", "log_every=20", "save_every=20", *TINY,
            f"policy_config.actor.relative_actions={joints}",
            "policy_config.actor.relative_step=0.05"]
    out = tmp_path / "arm"
    assert main([*args, "env_steps=40", f"output={out}"]) == 0
    with EpisodeStore.open(out / "online.zarr") as store:
        eps = [store.episode(i) for i in range(len(store))]
    action = np.concatenate([e["action"] for e in eps])
    state = np.concatenate([e["observation.state"] for e in eps])
    assert len(action) == 40  # random steps (20) and the actor's (20) alike:
    assert np.abs(action[:, :5] - state[:, :5]).max() <= 0.05 + 1e-5  # small joint steps
    assert np.ptp(action[:, 5]) > 0.5  # the gripper stays absolute (its whole range)
    bad = [*args, "env_steps=20", f"output={tmp_path / 'bad'}",
           "policy_config.actor.relative_actions=[elbow]"]
    assert main(bad) == 2
    assert "policy_config.actor.relative_actions: 'elbow' is not an action" in (
        capsys.readouterr().err)


def test_observations_normalized_with_the_datasets_statistics(car_demos: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    from policies.base import Policy
    from policies.normalize import compute_stats

    out = tmp_path / "norm"
    assert train(out, "env_steps=30", "obs_norm=dataset", "obs_std_floor=0.1",
                 dataset=car_demos) == 0
    actor = Policy.load(out / "checkpoints" / "last" / "policy")
    with EpisodeStore.open(car_demos) as store:
        want = compute_stats(store, ["observation.state"])["observation.state"]
    got = actor.stats["observation.state"]
    assert np.allclose(got["mean"], want["mean"], atol=1e-5)
    assert np.allclose(got["std"], np.maximum(want["std"], 0.1), atol=1e-5)
    assert (want["std"] < 0.1).any()  # the floor mattered for some entry
    # dataset_episodes=N: statistics of those N episodes only (what the learner sees)
    assert train(tmp_path / "one", "env_steps=30", "obs_norm=dataset", "dataset_episodes=1",
                 dataset=car_demos) == 0
    actor = Policy.load(tmp_path / "one" / "checkpoints" / "last" / "policy")
    with EpisodeStore.open(car_demos) as store:
        assert len(store) > 1
        one = compute_stats(store, ["observation.state"], episodes=[0])["observation.state"]
    assert np.allclose(actor.stats["observation.state"]["mean"], one["mean"], atol=1e-5)
    assert not np.allclose(one["mean"], want["mean"], atol=1e-3)
    assert train(tmp_path / "x", "env_steps=30", "obs_norm=dataset", policy="sac") == 2
    assert "obs_norm: 'dataset' needs dataset=STORE" in capsys.readouterr().err


def test_resume_refuses_a_changed_experiment_and_nothing_deletes_foreign_files(
        car_demos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train(out, "env_steps=30", dataset=car_demos) == 0
    # the learning rate changed: resuming would mix two experiments
    assert train(out, "env_steps=60", "policy_config.lr=1e-3", dataset=car_demos) == 2
    err = capsys.readouterr().err
    assert "policy_config.lr (0.0003 -> 0.001)" in err and "resume=false" in err
    assert train(out, "env_steps=60", dataset=car_demos) == 0  # a longer budget may change
    with EpisodeStore.open(out / "online.zarr") as store:
        assert len(store) == 2
    # a directory robolearn did not create is never wiped to make room for a run
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert train(foreign, "env_steps=30", dataset=car_demos) == 2
    assert "not created by robolearn" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "years of work"


def test_a_run_from_before_typed_robot_configs_resumes(car_demos: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Its config.yaml holds ``robot`` as the dict of overrides it was given: the settings it
    did not give are the env's, so it resumes; a changed robot setting still refuses."""
    import yaml

    out = tmp_path / "old"
    assert train(out, "env_steps=30", "robot.max_speed=4.0", dataset=car_demos) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["robot"]["track"] == "oval" and saved["robot"]["max_speed"] == 4.0
    saved["robot"] = {"max_speed": 4.0}  # as written before robot configs were typed
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    assert train(out, "env_steps=60", "robot.max_speed=3.0", dataset=car_demos) == 2
    assert "robot.max_speed (4.0 -> 3.0)" in capsys.readouterr().err
    assert train(out, "env_steps=60", "robot.max_speed=4.0", dataset=car_demos) == 0
    assert "resumed" in capsys.readouterr().err.replace("\n", " ")
    meta = json.loads((out / "dataset.json").read_text())  # what robolearn eval rebuilds
    assert meta["env_overrides"]["robot_kwargs"] == {"track": "oval", "max_speed": 4.0}
