"""ASkDAgger's plans as chunks (``robolearn improve plan=chunk``): a novice that predicts its
plan of ``plan_steps`` actions at once, learned from episode-ordered labels with the missing
ones left out, executed open-loop once decided on, and judged whole: by the simulated teacher
on a copy of real MuJoCo, or by a person at a real terminal from its summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.schema import Feature
from data.store import EpisodeStore
from policies.interactive import ChunkRunner, EnsembleConfig, NoviceEnsemble, chunk_targets
from robolearn.cli import main
from robolearn.improve_config import ImproveConfig
from robolearn.improve_data import ANNOTATED, FOLLOWED, NONE, PLANNED, REJECTED, TAKEOVER, VALIDATED
from robolearn_core.config import InvalidValue
from tests.improve_util import SETTING, person_at_the_car, rounds


def test_chunk_targets_follow_each_episode_and_leave_missing_labels_unknown() -> None:
    act = np.array([[1.0], [2.0], [np.nan], [4.0], [5.0], [6.0]], np.float32)
    episode = np.array([0, 0, 0, 0, 1, 1])
    t = chunk_targets(act, episode, 3)
    assert t.shape == (6, 3, 1)
    nan = np.nan
    want = [[1, 2, nan], [2, nan, 4], [nan, 4, nan], [4, nan, nan], [5, 6, nan], [6, nan, nan]]
    np.testing.assert_array_equal(t[..., 0], np.array(want, np.float32))
    short = chunk_targets(act[:2], episode[:2], 4)  # a plan longer than all the data
    np.testing.assert_array_equal(short[..., 0], np.array([[1, 2, nan, nan],
                                                            [2, nan, nan, nan]], np.float32))


def _sequence_task(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The action j steps ahead is sin(2 s0) + 0.3 j: a plan a one-step label cannot give."""
    s = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    ahead = np.sin(2 * s[:, :1])[:, None, :] + 0.3 * np.arange(4)[None, :, None]
    return s, ahead.astype(np.float32)


def test_a_chunk_novice_learns_its_plan_from_labels_with_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s, ahead = _sequence_task(600, rng)
    gappy = ahead.copy()
    gappy[:, 1:][rng.random((600, 3)) < 0.4] = np.nan  # 40% of the later labels unknown
    features = {"observation.state": Feature("float32", (2,)),
                "action": Feature("float32", (1,))}
    ens = NoviceEnsemble(features, EnsembleConfig(members=3, steps=600, hidden_dim=64,
                                                  horizon=4))
    ens.fit({"observation.state": s}, gappy)
    test_s, test_ahead = _sequence_task(200, rng)
    chunk, u = ens.predict_chunk({"observation.state": test_s})
    assert chunk.shape == (200, 4, 1) and np.isfinite(chunk).all() and np.isfinite(u).all()
    err = np.abs(chunk - test_ahead).mean()
    repeat = np.abs(test_ahead[:, :1] - test_ahead).mean()  # a one-step plan held: 0.45
    assert err < 0.2 * repeat, (err, repeat)
    with pytest.raises(ValueError, match="horizon"):
        ens.fit({"observation.state": s}, gappy[:, :2])
    with pytest.raises(ValueError, match="first action"):
        bad = gappy.copy()
        bad[3, 0] = np.nan
        ens.fit({"observation.state": s}, bad)
    # saved and loaded, it is still a chunk novice; alone, it executes each plan whole
    back = NoviceEnsemble.load(ens.save(tmp_path / "novice"))
    assert back.cfg.horizon == 4
    run = ChunkRunner(back)
    run.reset()
    first = {"observation.state": test_s[0]}
    done = [run(first) for _ in range(4)]  # one plan, from the first observation only
    np.testing.assert_allclose(np.concatenate(done), chunk[0, :, 0], atol=1e-5)


def test_askdagger_with_a_chunk_novice_executes_each_plan_it_decided_on(
        tiny_demo: Path, tmp_path: Path) -> None:
    """``plan=chunk plan_steps=4`` on the car: one decision per plan, the plan the novice
    predicted at that decision executed step by step (open-loop: its later steps are the
    chunk's, not new predictions), validated plans kept as 4-step validation demos, and the
    saved novice a chunk policy that executes its plans whole."""
    from policies.base import Policy
    from robolearn.improve import Session
    from robolearn.improve_data import aggregate

    out = tmp_path / "chunk"
    args = ["improve", str(tiny_demo), "method=askdagger", "episodes=1", "rounds=1",
            f"output={out}", "sag.n_min=5", "plan=chunk", "plan_steps=4",
            "teacher_config.drive=3", "eval_episodes=2", *SETTING]
    assert main(args) == 0
    with EpisodeStore.open(out / "session.zarr") as store:
        ep = store.episode(0)
    ev, label, act = ep["interactive.event"], ep["interactive.label"], ep["action"]
    assert {VALIDATED, PLANNED, ANNOTATED} <= set(ev.tolist())
    # round 0's novice again (same data, same seed): its plans are what the robot executed
    cfg = ImproveConfig(start=str(tiny_demo), method="askdagger", plan="chunk", plan_steps=4,
                        output=str(tmp_path / "again"), env="robolearn/SimCarTechnical-v0",
                        ensemble=EnsembleConfig(steps=600, members=3))
    session = Session(cfg)
    novice = session.fit(aggregate(session.demos, {}, 4), 0, 0)
    obs = {k: ep[k] for k in novice.obs_keys}
    checked, i = 0, 0
    while i < len(ev):
        if ev[i] in (NONE, VALIDATED, REJECTED):  # a decision, then the plan's 3 more steps
            rest = ev[i + 1:i + 4]
            assert (rest == (PLANNED if ev[i] == VALIDATED else FOLLOWED)).all(), ev[i:i + 4]
            if ev[i] == VALIDATED:  # executed as the novice planned it at step i (the
                # labels: the plan as sent; the executed action may be rate-limited)
                plan, _ = novice.plan({k: v[i] for k, v in obs.items()})
                np.testing.assert_allclose(label[i:i + 1 + len(rest)], plan[:1 + len(rest)],
                                           atol=1e-4)
                checked += 1
            i += 1 + len(rest)
        else:
            assert ev[i] in (ANNOTATED, TAKEOVER), (i, ev[i])
            i += 1
    assert checked >= 2
    assert np.abs(label[ev == PLANNED] - act[ev == PLANNED]).max() < 0.1  # what ran
    row = rounds(out)[-1]
    assert 0 <= row["success"] <= 1 and row["labels"] == np.isin(
        ev, (VALIDATED, ANNOTATED, REJECTED, TAKEOVER)).sum()
    member = Policy.load(out / "novice" / "member_0")
    assert (member.config.action_horizon, member.config.n_action_steps) == (4, 4)
    # resumed with other plans: refused in one line, the session as it was
    before = sorted(p.name for p in out.iterdir())
    assert main([*args[:-1], "plan=rollout", "-q"]) == 2
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(InvalidValue, match="plan"):  # chunks are ASkDAgger's plans
        ImproveConfig(start=str(tiny_demo), method="rlif", plan="chunk")


def test_a_person_judges_a_chunk_without_a_simulator(tiny_demo: Path) -> None:
    """``teacher=human plan=chunk``: the robot pauses once a plan, shows the chunk summarised
    at a real terminal (a pseudo-terminal the keyboard device opens), and an approved chunk
    is executed whole, its later steps validation demos, with no further question."""
    import os
    import time

    from robolearn.improve_data import load_demos
    from robolearn.improve_gate import Gate

    with pytest.raises(InvalidValue, match="plan_steps"):  # a rollout needs the simulator
        ImproveConfig(start=str(tiny_demo), teacher="human", plan_steps=3)
    cfg = ImproveConfig(start=str(tiny_demo), teacher="human", plan_steps=3, plan="chunk")
    demos, _, features = load_demos(tiny_demo)
    novice = NoviceEnsemble(features, EnsembleConfig(steps=50, members=2, horizon=3))
    novice.fit(demos.obs, chunk_targets(demos.act, demos.episode, 3))
    with person_at_the_car(query_timeout_s=2.0) as at:
        person, env, obs, master = at.teacher, at.env, at.obs, at.master
        gate = Gate(cfg, novice, person, 0, 0.0, np.random.default_rng(0), 2)
        gate.reset(0)
        at.answers.append(b"y")  # typed while it is shown
        assert gate.get_action(obs) is None  # approved: the novice acts
        assert gate.extras()["interactive.event"] == VALIDATED
        assert "over 3 steps: steering" in at.said[-1] and "throttle" in at.said[-1]
        chunk, _ = novice.plan(obs)
        executed = [gate(obs)]
        for _ in range(2):
            obs, *_ = env.step(executed[-1])
            assert gate.get_action(obs) is None
            assert gate.extras()["interactive.event"] == PLANNED
            executed.append(gate(obs))
        np.testing.assert_allclose(np.stack(executed), chunk, atol=1e-6)
        assert person.queries == 1  # one question for the whole plan
        # the next plan approved, then taken over after its first step: the rest of it is
        # dropped, and the robot asks again once handed back (never a stale plan)
        at.answers.append(b"y")
        gate.get_action(obs)
        assert gate.extras()["interactive.event"] == VALIDATED
        os.write(master, b" w")  # the takeover toggle and throttle
        time.sleep(0.2)
        assert gate.get_action(obs) is not None
        assert gate.extras()["interactive.event"] == TAKEOVER
        os.write(master, b" ")  # handed back
        time.sleep(0.2)
        at.answers.append(b"y")
        assert gate.get_action(obs) is None
        assert gate.extras()["interactive.event"] == VALIDATED and person.queries == 3


def test_a_person_teaches_the_emulated_so101_with_chunks(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``robolearn improve`` on a real-arm driver (the SO-101 through lerobot's bus code, six
    emulated STS3215 servos on a pseudo-terminal), no simulator anywhere: a person at a real
    terminal approves each chunk of 3 steps from its summary, and the arm executes it whole.
    The person's eyes are the prompt's text; their hand types y while it is shown."""
    import os
    import threading

    import robolearn.teacher as teacher_module
    from hardware.emulators.rig import calibrated_so101
    from robolearn.env import ENVS, make_env
    from robolearn.loop import ControlLoop, LoopConfig, create_store

    master, slave = os.openpty()
    shown: list[str] = []

    def person_reads(text: str) -> None:
        shown.append(text)
        if text.startswith("I plan to do this"):  # 1: approve (the default y is also the
            # arm's wrist key, which counts only once driving keys settle: timing, not tested here)
            threading.Timer(0.05, os.write, (master, b"1")).start()

    monkeypatch.setattr(teacher_module, "_console_print", person_reads)
    demos, out = tmp_path / "demos.zarr", tmp_path / "taught"
    with calibrated_so101(str(tmp_path / "cal"), "arm") as rig:
        robot = {"port": rig.port, "calibration_dir": str(tmp_path / "cal"), "id": "arm",
                 "home_s": 0.2}
        env = make_env(**{**ENVS["robolearn/SO101-v0"], "robot_kwargs": robot,
                          "max_steps": 12})
        try:  # two short demonstrations: the arm sways its shoulder from home
            with create_store(str(demos), env, "robolearn/SO101-v0",
                              {"robot_kwargs": robot, "max_steps": 12}) as store, \
                    store.recorder(task="sway") as rec:
                loop = ControlLoop(env, LoopConfig(realtime=False), rec)
                for e in range(2):
                    home = env.robot.hold_action()
                    sway = lambda obs, h=home: h + np.r_[0.05, np.zeros(len(h) - 1)]  # noqa: E731
                    loop.run_episode(sway, seed=e)
        finally:
            env.close()
        try:
            assert main(["improve", str(demos), "method=askdagger", "teacher=human",
                         f"teleop_config={{tty: {os.ttyname(slave)}, query_events: "
                         "{'1': approve, '0': reject}}", "query_timeout_s=5",
                         "plan=chunk", "plan_steps=3", "rounds=1", "episodes=1",
                         "max_steps=9", f"output={out}", "ensemble.steps=50",
                         "ensemble.members=2", "-q"]) == 0
        finally:
            os.close(master)
            os.close(slave)
    with EpisodeStore.open(out / "session.zarr") as store:
        ep = store.episode(0)
        assert store.metadata["robot_type"] == "so101"
    ev = ep["interactive.event"]
    # asked once a plan (the first round asks about everything), approved, executed whole
    assert ev.tolist() == [VALIDATED, PLANNED, PLANNED] * 3, (ev, shown)
    prompts = [t for t in shown if t.startswith("I plan to do this")]
    assert len(prompts) == 3 and all("over 3 steps: shoulder_pan" in t and "[1] approve" in t
                                     for t in prompts)
    # what the arm was sent is the approved chunk (through the loop's limits): validation demos
    assert np.isfinite(ep["interactive.label"]).all()
    np.testing.assert_allclose(ep["action"], ep["interactive.label"], atol=1e-3)
