"""Teaching the simulated arm: the novice learns the re-anchored teacher's joint targets as
offsets from the joints (``action_offset``, also in ``robolearn train``), and the teacher reads
its pick phase from the state. Real MuJoCo, real stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data.store import EpisodeStore
from robolearn.cli import main


def test_the_arm_s_novice_learns_the_re_anchored_teacher_as_offsets(tmp_path: Path) -> None:
    """The arm's teacher labels joint targets 0.01-0.03 rad from the measured joints (it is
    re-anchored at the arm each step, so its labels depend on the state alone). One-step BC
    on 30 of its demonstrations: as absolute targets the error swamps those steps; as offsets
    from observation.state (``action_offset``) the novice lifts the cube far more often; a
    saved member deploys with the offset (it is part of the policy)."""
    import torch

    from bench.interactive import _Demo
    from policies.base import Policy
    from policies.interactive import EnsembleConfig, NoviceEnsemble
    from robolearn.env import ENVS, make_env
    from robolearn.experts import TEACHER_KWARGS, make_expert
    from robolearn.loop import ControlLoop, LoopConfig

    torch.set_num_threads(1)
    env = make_env(**ENVS["robolearn/SimArmLift-v0"])
    try:
        loop = ControlLoop(env, LoopConfig(realtime=False))
        demo = _Demo(make_expert(env, **TEACHER_KWARGS["sim_arm"]))
        for i in range(30):
            loop.run_episode(demo, seed=50_000 + i, record=False)
        obs = {k: np.stack([o[k] for o in demo.states])
               for k in ("observation.state", "observation.environment_state")}
        act = np.stack(demo.actions)
        feats = {**env.features, "action": env.robot.action_feature}
        rate = {}
        for offset in (None, "observation.state"):
            ens = NoviceEnsemble(feats, EnsembleConfig(members=1, steps=2000,
                                                       action_offset=offset))
            ens.fit(obs, act)
            rate[offset] = np.mean([bool(loop.run_episode(
                lambda o, e=ens: e.act(o)[0], seed=100_000 + i, record=False).success)
                for i in range(20)])
        assert rate["observation.state"] >= rate[None] + 0.3, rate
        member = Policy.load(ens.save(tmp_path / "novice") / "member_0")
        one = {k: v[:1] for k, v in obs.items()}
        assert np.allclose(member.select_action({k: v[0] for k, v in one.items()}),
                           ens.predict(one)[0][0], atol=1e-5)
    finally:
        env.close()


def test_robolearn_train_learns_offsets_from_their_own_statistics(tmp_path: Path) -> None:
    """``policy_config.action_offset``: ``robolearn train`` normalises the offsets with their
    own statistics (not the actions'), the policy acts with the offset added back, and a key
    it does not train on is named in one line."""
    from policies.base import Policy
    from policies.normalize import compute_stats, offset_stats

    store = tmp_path / "arm.zarr"
    assert main(["collect", str(store), "env=robolearn/SimArmLift-v0", "episodes=2",
                 "-q"]) == 0
    run = tmp_path / "run"
    assert main(["train", f"dataset={store}", f"output={run}", "policy=mlp", "steps=5",
                 "batch_size=16", "policy_config.action_offset=observation.state",
                 "-q"]) == 0
    policy: Any = Policy.load(run / "checkpoints" / "last" / "policy")
    with EpisodeStore.open(store) as s:
        offsets = offset_stats(s, "observation.state", range(len(s)))
        actions = compute_stats(s, ["action"])["action"]
        ep = s.episode(0)
    got = policy.stats["action"]  # the training episodes' offsets: near all episodes' offsets
    assert np.all(got["std"][:4] < 0.5 * actions["std"][:4]), (got, actions)
    assert np.all(offsets["std"][:4] < 0.5 * actions["std"][:4])
    obs = {k: ep[k][0] for k in policy.obs_keys}
    action = policy.select_action(obs)  # an offset plus the joints it starts from
    assert np.all(np.abs(action[:4] - obs["observation.state"][:4]) < 3 * actions["std"][:4])
    assert main(["train", f"dataset={store}", f"output={tmp_path / 'bad'}", "policy=mlp",
                 "steps=5", "batch_size=16", "policy_config.action_offset=observation.nothing",
                 "-q"]) == 2


class _DriveWhileTeaching:
    """One expert drives, another labels every step; the labeller's phase on each step the
    cube is held is kept."""

    def __init__(self, env: Any, driver: Any, teacher: Any) -> None:
        self.env, self.driver, self.teacher = env, driver, teacher
        self.held: list[str] = []

    def reset(self, seed: int | None = None) -> None:
        self.driver.reset(seed)
        self.teacher.reset(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self.teacher(obs)
        if self.env.robot.state()["grasped"]:
            self.held.append(self.teacher.fn.phase)
        return np.asarray(self.driver(obs))


def test_the_arm_s_teacher_reads_its_phase_from_the_state() -> None:
    """A teacher labels states another policy drove to: while a faster, lower-hovering driver
    holds the cube, the state-phase teacher is lifting at every such step; the phase machine
    (its own timers and history) was still approaching on all 90 of them."""
    from robolearn.env import ENVS, make_env
    from robolearn.experts import TEACHER_KWARGS, make_expert
    from robolearn.loop import ControlLoop, LoopConfig

    env = make_env(**ENVS["robolearn/SimArmLift-v0"])
    try:
        loop = ControlLoop(env, LoopConfig(realtime=False))
        phases: dict[str, list[str]] = {}
        for name, kw in (("machine", {"feedback": True}), ("state", TEACHER_KWARGS["sim_arm"])):
            drive = _DriveWhileTeaching(env, make_expert(env, speed=0.5, hover=0.03),
                                        make_expert(env, **kw))
            assert all(loop.run_episode(drive, seed=100_000 + i, record=False).success
                       for i in range(5))
            phases[name] = drive.held
        assert phases["state"] and set(phases["state"]) == {"lift"}
        assert "lift" not in phases["machine"]  # what it labelled there before
        alone = make_expert(env, **TEACHER_KWARGS["sim_arm"])
        assert all(loop.run_episode(alone, seed=100_000 + i, record=False).success
                   for i in range(10))
    finally:
        env.close()


def _at_rest(env: Any) -> dict[str, Any]:
    """A copy of the arm's state after the reset of held-out lift 0."""
    env.reset(seed=100_000)
    return {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
            for k, v in env.robot.state().items()}


def _posed(expert: Any, s0: dict[str, Any], offset: Any, gripper: float) -> dict[str, Any]:
    """``s0`` with the tcp at the teacher's grasp point plus ``offset`` (m), the wrist rolled
    to the cube, and the jaws at ``gripper``."""
    q, _ = expert.kin.ik_robust(expert._grasp_point(s0) + np.asarray(offset, float),
                                np.asarray(s0["joint_pos"][:5], float), True)
    q[4] = expert.roll  # the wrist already rolled to the cube
    ee, _ = expert.kin.fk(q)
    return {**s0, "joint_pos": np.array([*q, gripper]), "ee_pos": ee, "gripper": gripper}


def test_the_funnel_teacher_labels_nearly_equal_states_alike() -> None:
    """A one-step novice regresses the teacher's labels, so nearly equal states need nearly
    equal labels. Two cases near the cube, 2 cm above the grasp point, 1 mm apart across the
    12 mm "over the cube" boundary: without the funnel the teacher says descend on one side and
    climb back to hover height on the other; with it (``funnel``, the teaching default) both
    move toward the grasp point alike. Jaws half shut there are told to open and go on
    (approach), not to retreat to hover height (retry), which stalled its novice mid-air. And
    the wrist turns to one face pair for every cube: the least-roll choice switched faces
    between cubes 0.02 rad of yaw apart, and its novice's wrist stopped between the two."""
    from robolearn.env import ENVS, make_env
    from robolearn.experts import TEACHER_KWARGS
    from sim.arm.expert import ExpertConfig, ScriptedArmExpert

    assert TEACHER_KWARGS["sim_arm"].get("funnel", 0) > 0
    env = make_env(**ENVS["robolearn/SimArmLift-v0"])
    try:
        s0 = _at_rest(env)
        robot: Any = env.robot

        def teacher(funnel: float) -> ScriptedArmExpert:
            return ScriptedArmExpert(env.task, ExpertConfig(
                fps=robot.fps, feedback=True, state_phase=True, funnel=funnel),
                model=robot.model)

        def label(funnel: float, dx: float, gripper: float) -> tuple[np.ndarray, str]:
            expert = teacher(funnel)
            expert(s0)  # its roll for this cube
            return expert(_posed(expert, s0, (dx, 0.0, 0.02), gripper)), expert.phase

        jump = {}
        for funnel in (0.0, 2.0):
            inside, _ = label(funnel, 0.0115, 0.9)
            outside, _ = label(funnel, 0.0125, 0.9)
            jump[funnel] = float(np.abs(inside[:5] - outside[:5]).max())
        assert jump[2.0] < 0.03 and jump[0.0] > 4 * jump[2.0], jump  # measured 0.016, 0.107
        assert label(2.0, 0.015, 0.5)[1] == "approach"
        assert label(0.0, 0.015, 0.5)[1] == "retry"

        # the wrist's roll for the layout's cube yaws (-45..45 degrees), 0.02 rad apart: the
        # least-roll choice (away from the bin when near it) switches faces somewhere in the
        # range; teaching keeps one face pair, its roll continuous in the yaw
        def roll(funnel: float, yaw: float) -> float:
            expert = teacher(funnel)
            expert({**s0, "cube_quat": np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])})
            return expert.roll

        yaws = np.arange(-np.pi / 4, np.pi / 4, 0.02)
        turn = {f: float(np.abs(np.diff([roll(f, y) for y in yaws])).max()) for f in (0.0, 2.0)}
        assert turn[2.0] < 0.05 and turn[0.0] > 1.0, turn
    finally:
        env.close()


def test_the_teacher_s_close_label_is_the_state_s_and_goes_on_down() -> None:
    """While the jaws shut, the teaching label goes on down to the grasp point's height from
    where the tcp is, whatever the teacher labelled before: it held "where it was" before,
    which, re-anchored each step, was the previous labelled state's tcp (a DAgger teacher's
    last call was another state), and it jumped from "descend" to that at the close trigger.
    Its novices stopped 1-2 cm over the cube, jaws open (README "Interactive imitation")."""
    from robolearn.env import ENVS, make_env
    from sim.arm.expert import ExpertConfig, ScriptedArmExpert

    env = make_env(**ENVS["robolearn/SimArmLift-v0"])
    try:
        s0 = _at_rest(env)
        robot: Any = env.robot
        expert = ScriptedArmExpert(env.task, ExpertConfig(
            fps=robot.fps, feedback=True, state_phase=True, funnel=2.0), model=robot.model)
        expert(s0)  # its roll for this cube

        def state(dz: float) -> dict[str, Any]:
            return _posed(expert, s0, (0.0, 0.0, dz), 0.9)

        def label(s: dict[str, Any], before: dict[str, Any]) -> tuple[np.ndarray, str]:
            expert(before)  # whatever state it labelled last
            return expert(s)[:5] - s["joint_pos"][:5], expert.phase

        inside, outside = state(0.0055), state(0.0065)  # the close trigger: 6 mm
        a_in, phase_in = label(inside, s0)
        down = expert.cmd - inside["ee_pos"]  # where it commands the tcp: straight down
        a_in2, _ = label(inside, state(0.03))
        a_out, phase_out = label(outside, s0)
        assert (phase_in, phase_out) == ("close", "approach")
        np.testing.assert_allclose(a_in, a_in2, atol=1e-6)  # the state's label, not history's
        assert float(np.abs(a_in - a_out).max()) < 0.005, (a_in, a_out)
        assert down[2] < -0.005 and float(np.abs(down[:2]).max()) < 1e-6, down
    finally:
        env.close()


def test_the_funnel_descends_with_the_wrist_a_little_off_square() -> None:
    """1 cm over the grasp point, centred, the wrist 0.05 rad off the teacher's roll (what
    DAgger novices' wrists were off by where they hovered and timed out): with the teaching
    default ``roll_slack`` the label goes on down while it turns the wrist; with none it
    climbs (to 1.75 cm, the funnel's height for that roll error), the label a novice then
    regresses into hovering. 0.3 rad off, both climb: the slack narrows the funnel's turn
    term, it does not remove it."""
    from robolearn.env import ENVS, make_env
    from robolearn.experts import TEACHER_KWARGS
    from sim.arm.expert import ExpertConfig, ScriptedArmExpert

    slack = TEACHER_KWARGS["sim_arm"].get("roll_slack", 0.0)
    assert 0.05 < slack < 0.3, slack
    env = make_env(**ENVS["robolearn/SimArmLift-v0"])
    try:
        s0 = _at_rest(env)
        robot: Any = env.robot

        def climb(roll_slack: float, roll_off: float) -> float:
            """How far the teacher commands the tcp up (m; negative: down)."""
            expert = ScriptedArmExpert(env.task, ExpertConfig(
                fps=robot.fps, feedback=True, state_phase=True, funnel=2.0,
                roll_slack=roll_slack), model=robot.model)
            expert(s0)  # its roll for this cube
            s = _posed(expert, s0, (0.0, 0.0, 0.01), 0.9)
            q = np.array(s["joint_pos"], copy=True)
            q[4] += roll_off
            s = {**s, "joint_pos": q, "ee_pos": expert.kin.fk(q[:5])[0]}
            expert(s)
            assert expert.phase == "approach"
            return float(expert.cmd[2] - s["ee_pos"][2])

        assert climb(slack, 0.05) < -0.003  # down (a full step toward the goal: 8 mm)
        assert climb(0.0, 0.05) > 0.003
        assert climb(slack, 0.3) > 0.003 and climb(0.0, 0.3) > 0.003
        with pytest.raises(ValueError, match="roll_slack"):
            ExpertConfig(roll_slack=-0.1)
    finally:
        env.close()
