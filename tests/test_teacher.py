"""The simulated teacher (``robolearn/teacher.py``): its degradations, its reference, its
intervention rules and gate probabilities, and its drive after a rejection."""

from __future__ import annotations

import numpy as np
import pytest


def test_the_teacher_s_delay_and_its_reference() -> None:
    """A delayed teacher answers with the action it computed ``delay`` steps ago (the car's
    expert reads the robot, so delaying its observation would change nothing); with
    ``reference=expert`` its rule compares plans with the undegraded expert's action."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=3)
        clean = SimulatedTeacher(env, TeacherConfig())
        late = SimulatedTeacher(env, TeacherConfig(delay=3))
        fast = SimulatedTeacher(env, TeacherConfig(expert={"speed": 4.0}, threshold=0.1,
                                                   reference="expert", hold=1))
        mine = SimulatedTeacher(env, TeacherConfig(expert={"speed": 4.0}, threshold=0.1,
                                                   hold=1))
        for t in (clean, late, fast, mine):
            t.reset(3)
        answers, delayed, takes = [], [], 0
        for _ in range(30):
            a = clean.label(obs)
            answers.append(a)
            delayed.append(late.label(obs))
            assert np.allclose(fast.reference_action(obs), a)  # judged like the expert
            assert not fast.wants_control(obs, a)  # the expert's own action is fine ...
            takes += mine.wants_control(obs, a)  # ... but not always to itself
            for t in (clean, late, fast, mine):
                t.tick()
            obs, *_ = env.step(a)
        assert takes > 0
        assert np.allclose(delayed[3:], answers[:-3])
        assert not np.allclose(delayed[3:], answers[3:])
    finally:
        env.close()


def test_the_teacher_s_gate_can_miss_and_step_in_for_nothing_as_rlif_s_does() -> None:
    """RLIF's simulated gate: the teacher steps in with probability ``rule_p`` when its rule
    fires and ``spurious_p`` when it does not; the defaults (1, 0) never miss and never step
    in for nothing."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=3)
        rlif = SimulatedTeacher(env, TeacherConfig(hold=1, rule_p=0.95, spurious_p=0.05))
        sure = SimulatedTeacher(env, TeacherConfig(hold=1))
        for t in (rlif, sure):
            t.reset(3)
        good = rlif.label(obs)
        bad = np.clip(good + 0.8, -1, 1) if good[0] < 0 else np.clip(good - 0.8, -1, 1)
        n = 400
        counts = {"bad": 0, "good": 0, "sure_bad": 0, "sure_good": 0}
        for _ in range(n):
            counts["bad"] += rlif.wants_control(obs, bad)
            counts["good"] += rlif.wants_control(obs, good)
            counts["sure_bad"] += sure.wants_control(obs, bad)
            counts["sure_good"] += sure.wants_control(obs, good)
            rlif.tick()
            sure.tick()
        assert 360 <= counts["bad"] < n  # about 0.95: it misses some mistakes
        assert 5 <= counts["good"] <= 40  # about 0.05: and steps in for nothing
        assert counts["sure_bad"] == n and counts["sure_good"] == 0
        with pytest.raises(ValueError, match="rule_p"):
            TeacherConfig(rule_p=1.5)
    finally:
        env.close()


def test_the_simulated_teacher_drives_after_rejecting_a_plan_as_a_person_does() -> None:
    """``drive``: a rejected plan it was asked about hands it the robot for that many steps
    (``holding``), as a person's reject-and-drive does; an accepted plan, a random-only query
    (``drive=False``) or ``drive`` 0 hands it nothing."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=3)
        driver = SimulatedTeacher(env, TeacherConfig(drive=5))
        labeller = SimulatedTeacher(env, TeacherConfig())
        for t in (driver, labeller):
            t.reset(3)
        good = driver.label(obs)
        bad = np.clip(good + 0.8, -1, 1) if good[0] < 0 else np.clip(good - 0.8, -1, 1)
        assert driver.judge(obs, good) and not driver.holding
        assert not driver.judge(obs, bad, drive=False) and not driver.holding
        assert not labeller.judge(obs, bad) and not labeller.holding
        assert not driver.judge(obs, bad)
        held = []
        for _ in range(8):
            driver.tick()
            held.append(driver.holding)
        assert held == [True] * 5 + [False] * 3
        driver.judge(obs, bad)
        driver.reset(4)  # a new episode ends a drive
        assert not driver.holding
    finally:
        env.close()


def test_a_drive_ends_once_the_novice_s_plan_is_acceptable_again() -> None:
    """``drive_back``: the drive after a rejection hands the robot back once the novice's
    plan has been acceptable on that many consecutive steps; one wrong plan in between
    starts the count again, and without it the drive runs its ``drive`` steps."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=3)
        back = SimulatedTeacher(env, TeacherConfig(drive=20, drive_back=3))
        full = SimulatedTeacher(env, TeacherConfig(drive=20))
        held: dict[int, list[bool]] = {}
        for t in (back, full):
            t.reset(3)
            good = t.label(obs)
            bad = np.clip(good + 0.8, -1, 1) if good[0] < 0 else np.clip(good - 0.8, -1, 1)
            assert not t.judge(obs, bad)
            seen = []
            for plan in [bad, good, good, bad, good, good, good, bad, bad]:
                t.tick()  # the same state each step: the label is cached per step
                t.see(obs, plan)
                seen.append(t.holding)
            held[id(t)] = seen
        # acceptable on steps 2-3, wrong on 4, acceptable on 5-7: handed back at the third
        assert held[id(back)] == [True] * 6 + [False] * 3
        assert held[id(full)] == [True] * 9
        # a plan of several steps: its verdict (the preview's), not its first step's, counts
        whole = SimulatedTeacher(env, TeacherConfig(drive=20, drive_back=1))
        whole.reset(3)
        assert not whole.judge(obs, bad)
        seen = []
        for plan, ok in [(good, False), (good, False), (bad, True), (good, False)]:
            whole.tick()
            whole.see(obs, plan, ok)
            seen.append(whole.holding)
        assert seen == [True, True, False, False]
        with pytest.raises(ValueError, match="drive_back"):
            TeacherConfig(drive_back=-1)
    finally:
        env.close()


def test_the_car_s_risk_rule_steps_in_near_a_wall_and_when_it_crawls() -> None:
    from robolearn.env import ENVS, make_env
    from robolearn.experts import car_at_risk

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        env.reset(seed=0)
        assert not car_at_risk(env.robot)  # standing on the centreline, in its first second
        risky = []
        for _ in range(60):  # full lock, slow: it circles into a wall
            env.step(np.array([1.0, 0.3], np.float32))
            risky.append(car_at_risk(env.robot))
            if risky[-1]:
                break
        assert risky[-1] and not risky[0]
        assert abs(env.robot.state()["lateral"]) > env.robot.track.width / 2 - 0.2 \
            or env.robot.state()["collision"] or env.robot.state()["speed"] < 0.5
        from robolearn.experts import make_expert

        obs, _ = env.reset(seed=0)
        expert = make_expert(env)
        expert.reset(0)
        for _ in range(60):  # the expert's 3 s: on its line, at speed, never at risk
            obs, *_ = env.step(expert(obs))
            assert not car_at_risk(env.robot)
        for _ in range(100):  # then no throttle: it rolls to a stop, and a person steps in
            env.step(np.zeros(2, np.float32))
            if env.robot.state()["speed"] < 0.4:
                break
        assert car_at_risk(env.robot)
    finally:
        env.close()


def test_the_value_rule_steps_in_when_a_plan_is_worth_less_to_the_expert() -> None:
    """RLIF's value-based gate on the car: the expert's value of a plan (played forward in
    the simulator, then restored) against its value of its own action. The expert's own
    action never fires it, a plan steering hard off its line does, a slightly different
    plan that does as well passes (the distance rule at 0.1 would step in), and the
    lookahead leaves the episode as it was."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig, TeacherTakeover

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=3)
        gate = SimulatedTeacher(env, TeacherConfig(rule="value", hold=1))
        near = SimulatedTeacher(env, TeacherConfig(rule="distance", threshold=0.1, hold=1))
        for t in (gate, near):
            t.reset(3)
        fired = {"own": 0, "off": 0, "close": 0, "close_distance": 0}
        for _ in range(60):
            a = gate.label(obs)
            off = np.array([1.0 if a[0] < 0 else -1.0, 1.0], np.float32)
            close = np.clip(a + np.array([0.15, 0.0], np.float32), -1, 1)
            before = env.robot.state()["progress"]
            fired["own"] += gate.wants_control(obs, a)
            fired["off"] += gate.wants_control(obs, off)
            fired["close"] += gate.wants_control(obs, close)
            fired["close_distance"] += near.wants_control(obs, close)
            assert env.robot.state()["progress"] == before  # restored
            q_plan, q_ref = gate.values
            assert np.isfinite(q_plan) and q_ref > 0
            for t in (gate, near):
                t.tick()
            obs, *_ = env.step(a)
        assert fired["own"] == 0 and fired["off"] >= 40, fired
        assert fired["close"] <= 3 < fired["close_distance"], fired
        with pytest.raises(ValueError, match="value_ratio"):
            TeacherConfig(rule="value", value_ratio=0.0)
        with pytest.raises(ValueError, match="plan"):
            TeacherTakeover(env, TeacherConfig(rule="value"))
        with pytest.raises(ValueError, match="teacher.value .*horizon"):
            SimulatedTeacher(env, TeacherConfig(rule="value", value={"horizon": 3.0}))
    finally:
        env.close()



def test_a_plan_of_several_steps_is_judged_on_a_copy_of_the_simulation() -> None:
    """``preview``: the novice acts its plan on a copy; the plan is acceptable only if every
    step is, so a novice that goes wrong at its third step passes a 2-step plan and fails a
    5-step one; the real robot, the teacher's step and its answers are as they were."""
    import copy

    from robolearn.env import ENVS, make_env
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        obs, _ = env.reset(seed=4)
        teacher = SimulatedTeacher(env, TeacherConfig())
        teacher.reset(4)
        for _ in range(5):  # under way
            a = teacher.label(obs)
            teacher.tick()
            obs, *_ = env.step(a)
        # the expert's next 5 actions from here (the car's expert reads the robot itself)
        sim, ahead = copy.deepcopy((env, teacher))
        o, good = obs, []
        for _ in range(5):
            good.append(ahead.label(o))
            ahead.tick()
            o, *_ = sim.step(good[-1])
        calls: list[int] = []

        def novice(o: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
            calls.append(1)  # the expert's action for two steps, then full lock the wrong way
            k = len(calls)
            return (good[k - 1] if k <= 2 else -np.sign(good[k - 1]) * 1.0), 0.1 * k

        before = {k: v.copy() for k, v in env.robot.observe().items()}
        step, label = teacher._step, teacher.label(obs)
        for steps, ok in ((2, True), (5, False)):
            calls.clear()
            worst, whole = teacher.preview(env, obs, novice, steps)
            assert whole is ok and len(calls) == steps
            assert worst == pytest.approx(0.1 * steps)  # the plan's largest uncertainty
        after = env.robot.observe()
        assert all(np.array_equal(before[k], after[k]) for k in before)
        assert teacher._step == step and np.array_equal(teacher.label(obs), label)
    finally:
        env.close()


def test_a_plan_is_previewed_only_where_a_copy_of_the_simulation_is_faithful() -> None:
    """The car's copy observes what the car does; a car that renders cannot be copied; a
    robosuite env's copy moves its own state but goes on observing the original's, so
    previewing on it would judge the first step over and over: refused."""
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import cannot_preview

    for kw, why in ((ENVS["robolearn/SimCarTechnical-v0"], None),
                    ({**ENVS["robolearn/SimCar-v0"], "robot_kwargs": {"camera": True}},
                     "renders"),
                    (ENVS["robolearn/RobosuiteLift-v0"], "does not observe")):
        env = make_env(**kw)
        try:
            got = cannot_preview(env)
        finally:
            env.close()
        assert (got is None) if why is None else (why in (got or "")), (kw, got)
