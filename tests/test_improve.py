"""Interactive imitation: the learning parts on synthetic data (SAG tracks its targets, PIER's
priorities, beta schedules, the ensemble's novelty), and ``robolearn improve`` on the simulated
car: real MuJoCo, real stores, a session that improves the novice and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.schema import Feature
from data.store import EpisodeStore
from policies.interactive import (
    EnsembleConfig,
    NoviceEnsemble,
    PIERConfig,
    SAGConfig,
    beta,
    pier,
    realised_rate,
    sag_threshold,
)
from robolearn.cli import main
from robolearn.improve import ImproveConfig
from robolearn.improve_data import (
    ANNOTATED,
    FOLLOWED,
    LABELLED,
    NONE,
    PLANNED,
    REJECTED,
    TAKEOVER,
    VALIDATED,
)
from robolearn_core.config import InvalidValue
from tests.improve_util import SETTING, person_at_the_car, rounds


def _synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainties and outcomes: the higher u, the likelier the plan is wrong."""
    u = rng.uniform(0, 1, n)
    fail = rng.random(n) < 1 / (1 + np.exp(-(u - 0.6) * 10))
    return u, fail


@pytest.mark.parametrize("target", [0.7, 0.8, 0.9])
def test_sag_realises_its_target_sensitivity_on_held_out_data(target: float) -> None:
    """Outcomes are known only where SAG would have queried (u >= its threshold, or a random
    query), the rest imputed: the threshold still meets the target on fresh samples."""
    rng = np.random.default_rng(0)
    cfg = SAGConfig(mode="sensitivity", target=target, p_rand=0.2)
    u, fail = _synthetic(3000, rng)
    queried = rng.random(u.size) < 0.5  # what an earlier, looser gate asked about
    label = np.where(queried, np.where(fail, -1, 1), 0)
    gamma = sag_threshold(u, label, np.zeros(u.size, int), 0, cfg, rng)
    u2, fail2 = _synthetic(20000, rng)
    got = realised_rate(u2, fail2, gamma, cfg.p_rand, "sensitivity")
    assert abs(got - target) <= 0.05, (target, got, gamma)


def test_sag_modes_and_the_lack_of_data() -> None:
    rng = np.random.default_rng(1)
    u, fail = _synthetic(5000, rng)
    label = np.where(fail, -1, 1)
    rounds = np.zeros(u.size, int)
    for mode, target in (("specificity", 0.6), ("success", 0.95)):
        cfg = SAGConfig(mode=mode, target=target, p_rand=0.1)
        gamma = sag_threshold(u, label, rounds, 0, cfg, rng)
        u2, f2 = _synthetic(20000, rng)
        assert abs(realised_rate(u2, f2, gamma, 0.1, mode) - target) <= 0.05, mode
    few = np.array([0.3, 0.5, 0.9])
    assert sag_threshold(few, np.array([1, -1, 1]), np.zeros(3, int), 0, SAGConfig(), rng) \
        == pytest.approx(0.3)  # not enough failures yet: ask about everything


def test_pier_priorities_follow_the_reference() -> None:
    u = np.array([0.1, 0.9, 0.1, 0.9, 0.5])
    age = np.array([3, 3, 3, 3, 0])
    r = np.array([1, 1, -1, -1, 0])  # validated, validated, failure, failure, offline
    prob, w = pier(u, age, r, 10, PIERConfig(alpha=1.0))
    p = prob / prob[4]  # relative to the offline entry (priority 1)
    assert p[0] < p[1] < 1 < p[3] < p[2] <= 2  # recent low-u successes least, failures most
    assert np.all(w <= 1) and w.max() == pytest.approx(1.0)


def test_beta_schedules() -> None:
    assert [beta("exponential", i, 0.5) for i in range(3)] == [1.0, 0.5, 0.25]
    assert [beta("first", i) for i in range(3)] == [1.0, 0.0, 0.0]
    assert beta("linear", 5, rounds=10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="beta schedule"):
        beta("sometimes", 0)


def test_the_ensemble_is_more_uncertain_away_from_its_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 3)).astype(np.float32)
    y = np.stack([np.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], 1).astype(np.float32)
    ens = NoviceEnsemble({"observation.state": Feature("float32", (3,)),
                          "action": Feature("float32", (2,))},
                         EnsembleConfig(members=4, steps=400, hidden_dim=64))
    ens.fit({"observation.state": x}, y)
    pred, near = ens.predict({"observation.state": x[:100]})
    _, far = ens.predict({"observation.state": rng.uniform(4, 6, (100, 3)).astype(np.float32)})
    assert np.median(far) > 5 * np.median(near)
    assert np.abs(pred - y[:100]).mean() < 0.1  # and it learned the mapping


def test_a_cosine_learning_rate_still_learns_and_settles() -> None:
    """``lr_schedule=cosine`` is applied (the members differ from the constant rate's), the
    fit still learns the mapping, and its last steps move the members less; a schedule the
    ensemble does not know is refused by name."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (400, 3)).astype(np.float32)
    y = np.stack([np.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], 1).astype(np.float32)
    feats = {"observation.state": Feature("float32", (3,)), "action": Feature("float32", (2,))}
    probe = {"observation.state": x[:100]}
    pred = {}
    for sched in ("constant", "cosine"):
        for steps in (390, 400):  # the last 10 steps of a 400-step fit
            ens = NoviceEnsemble(feats, EnsembleConfig(members=2, steps=steps, hidden_dim=64,
                                                       lr_schedule=sched))
            ens.fit({"observation.state": x}, y)
            pred[sched, steps] = ens.predict(probe)[0]
    assert np.abs(pred["cosine", 400] - y[:100]).mean() < 0.1
    assert not np.allclose(pred["cosine", 400], pred["constant", 400])
    # the two cosine fits both end annealed, near one solution; at a constant rate the
    # last 10 steps still move the members at the full rate
    moved = {s: np.abs(pred[s, 400] - pred[s, 390]).mean() for s in ("constant", "cosine")}
    assert moved["cosine"] < moved["constant"]
    with pytest.raises(InvalidValue, match="lr_schedule"):
        EnsembleConfig(lr_schedule="step")


def test_dagger_improves_the_small_bc_policy(tiny_demo: Path, tmp_path: Path) -> None:
    """From a 40-step demo (the novice laps the technical track with noisy starts on few of
    10 seeds), two DAgger rounds of 1 episode each lift it well above where it started."""
    out = tmp_path / "dagger"
    assert main(["improve", str(tiny_demo), "method=dagger", "rounds=2", "episodes=1",
                 "eval_episodes=10", f"output={out}", *SETTING]) == 0
    rows = rounds(out)
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[-1]["success"] >= rows[0]["success"] + 0.4, rows
    with EpisodeStore.open(out / "session.zarr") as store:
        ep = store.episode(0)
        assert np.all(ep["interactive.event"] == LABELLED)  # DAgger labels every step
        assert np.isfinite(ep["interactive.label"]).all()
        assert np.isnan(ep["interactive.rejected"]).all()  # beta hands over without judging
        assert store.info(0).metadata["round"] == 0


def test_askdagger_records_its_queries_and_resumes(tiny_demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "ask"
    base = ["improve", str(tiny_demo), "method=askdagger", "episodes=1", f"output={out}",
            "sag.n_min=5", *SETTING]
    assert main([*base, "rounds=1"]) == 0
    assert main([*base, "rounds=2"]) == 0  # the same session, one more round
    rows = rounds(out)
    assert [r["round"] for r in rows] == [0, 1, 1, 2]  # round 1 was the last fit, then went on
    with EpisodeStore.open(out / "session.zarr") as store:
        assert len(store) == 2 and [store.info(i).metadata["round"] for i in range(2)] == [0, 1]
        ev = np.concatenate([store.episode(i)["interactive.event"] for i in range(2)])
        label = np.concatenate([store.episode(i)["interactive.label"] for i in range(2)])
        u = np.concatenate([store.episode(i)["interactive.uncertainty"] for i in range(2)])
        rejected = np.concatenate([store.episode(i)["interactive.rejected"] for i in range(2)])
        first = store.episode(0)
    # the plans turned down are kept: on every annotated or rejected query, nowhere else
    turned = np.isfinite(rejected).all(-1)
    assert (turned == np.isin(ev, (ANNOTATED, REJECTED))).all() and turned.any()
    assert not np.allclose(rejected[turned], label[turned])  # the plan, not the answer
    assert {VALIDATED, ANNOTATED} <= set(ev.tolist())
    # SAG sets the threshold before every step: the first round asks about everything only
    # until its window holds n_min wrong plans and a right one, then stops asking about some
    asked = first["interactive.event"] != NONE
    assert asked[:5].all() and not asked.all(), asked  # before: every step of round 0
    assert np.unique(first["interactive.threshold"]).size > 1
    assert np.isnan(label[ev == NONE]).all() and np.isfinite(label[ev != NONE]).all()
    assert np.isfinite(u).all()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(["improve", str(tiny_demo), "method=dagger", f"output={other}", "-q"]) == 2
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_drive_hands_back_on_a_plan_the_teacher_accepts(tiny_demo: Path,
                                                         tmp_path: Path) -> None:
    """``plan_steps=4`` with ``drive_back=1``: the teacher's drive after a rejected plan ends
    when the novice's whole previewed plan is acceptable, not its next step alone; so a drive
    that ended before its ``drive`` steps is never followed at once by another rejection."""
    out = tmp_path / "back"
    drive = 60
    assert main(["improve", str(tiny_demo), "method=askdagger", "episodes=1", "rounds=1",
                 f"output={out}", "sag.n_min=5", "plan_steps=4",
                 f"teacher_config.drive={drive}", "teacher_config.drive_back=1",
                 *SETTING]) == 0
    with EpisodeStore.open(out / "session.zarr") as store:
        ev = store.episode(0)["interactive.event"]
    handed_back, run = 0, 0
    for i, e in enumerate(ev.tolist()):
        if e in (ANNOTATED, TAKEOVER):
            if e == ANNOTATED and 0 < run <= drive:
                raise AssertionError(f"step {i}: rejected right after a {run}-step drive")
            run = run + 1 if e == TAKEOVER or run == 0 else 1
        else:
            handed_back += 0 < run <= drive
            run = 0
    assert handed_back >= 1, ev.tolist()


def test_askdagger_asks_once_for_a_plan_of_several_steps(tiny_demo: Path,
                                                        tmp_path: Path) -> None:
    """``plan_steps=4``: one decision (asked about or not) per plan, previewed on a copy of the
    simulation; the plan's later steps are PLANNED (accepted: validation demos) or FOLLOWED,
    neither a query nor a label; a rejected plan the teacher was asked about is driven."""
    out = tmp_path / "plan"
    assert main(["improve", str(tiny_demo), "method=askdagger", "episodes=1", "rounds=1",
                 f"output={out}", "sag.n_min=5", "plan_steps=4", "teacher_config.drive=3",
                 *SETTING]) == 0
    with EpisodeStore.open(out / "session.zarr") as store:
        ep = store.episode(0)
    ev, label = ep["interactive.event"], ep["interactive.label"]
    i = 0
    while i < len(ev):
        if ev[i] in (NONE, VALIDATED, REJECTED):  # a decision, then the plan's 3 more steps
            rest = ev[i + 1:i + 4]
            assert (rest == (PLANNED if ev[i] == VALIDATED else FOLLOWED)).all(), ev[i:i + 4]
            i += 1 + len(rest)
        else:
            assert ev[i] in (ANNOTATED, TAKEOVER), (i, ev[i])  # rejected, then driven
            i += 1
    assert {VALIDATED, PLANNED, ANNOTATED} <= set(ev.tolist())
    assert np.isfinite(label[ev == PLANNED]).all() and np.isnan(label[ev == FOLLOWED]).all()
    asked = np.isin(ev, (VALIDATED, ANNOTATED, REJECTED, TAKEOVER))
    assert rounds(out)[0]["labels_after"] == asked.sum() < len(ev)
    with pytest.raises(InvalidValue, match="plan_steps"):
        ImproveConfig(start=str(tiny_demo), method="dagger", plan_steps=4)
    seen = tmp_path / "seen"  # a robot that renders cannot be copied: refused, nothing made
    assert main(["improve", str(tiny_demo), "method=askdagger", "plan_steps=4",
                 f"output={seen}", *SETTING, "robot_kwargs={camera: true}"]) == 2
    assert not seen.exists()


def test_a_session_begun_before_a_column_existed_goes_on(tiny_demo: Path,
                                                         tmp_path: Path) -> None:
    """A session store made by an older robolearn (no ``interactive.rejected`` column)
    resumes: the session records the columns it has."""
    from robolearn.env import ENVS, make_env
    from robolearn.improve_data import extra_features
    from robolearn.loop import create_store

    out = tmp_path / "old"
    out.mkdir()
    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    try:
        old = {k: f for k, f in extra_features(2).items() if k != "interactive.rejected"}
        create_store(str(out / "session.zarr"), env, "robolearn/SimCarTechnical-v0", {},
                     old, start=str(tiny_demo), method="hgdagger").close()
    finally:
        env.close()
    import json  # the session's marker, as the older robolearn wrote it

    (out / "improve.json").write_text(json.dumps({"method": "hgdagger",
                                                  "start": str(tiny_demo)}))
    assert main(["improve", str(tiny_demo), "method=hgdagger", "rounds=1", "episodes=1",
                 f"output={out}", *SETTING]) == 0
    with EpisodeStore.open(out / "session.zarr") as store:
        assert len(store) == 1 and "interactive.rejected" not in store.features
        assert (store.episode(0)["interactive.event"] == TAKEOVER).any()


def _typed(master: int, fd: int, keys: bytes) -> None:
    import os
    import select

    os.write(master, keys)
    assert select.select([fd], [], [], 2.0)[0]


def test_a_person_answers_queries_and_drives_through_a_keyboard() -> None:
    """The human teacher on a real terminal (a pseudo-terminal the keyboard device opens):
    the plan is shown, y approves it, n rejects it and the person drives (w: throttle) until
    space hands back; an unanswered query labels nothing."""
    with person_at_the_car(query_timeout_s=0.3) as at:
        obs, person, fd = at.obs, at.teacher, at.teleop.device.fd
        plan = np.array([0.25, -0.5], np.float32)
        person.reset(0)
        assert not person.wants_control(obs, plan) and not person.holding
        assert np.isnan(person.label(obs)).all()  # nobody drives: no label
        _typed(at.master, fd, b"y")
        assert person.judge(obs, plan) is True
        assert "steering +0.25, throttle -0.50" in at.said[-1] and "[y] approve" in at.said[-1]
        person.tick()
        _typed(at.master, fd, b"n")
        assert person.judge(obs, plan, drive=False) is False
        assert not person.holding  # a random query's rejection: labelled, not driven
        person.tick()
        _typed(at.master, fd, b"n")
        assert person.judge(obs, plan) is False
        assert person.holding  # the person drives now
        person.tick()
        # control handed over, nothing pressed yet: the device's idle output is no answer
        assert np.isnan(person.label(obs)).all() and person.command(obs) is not None
        person.tick()
        _typed(at.master, fd, b"w")
        assert person.label(obs)[1] > 0 and person.wants_control(obs, plan)
        person.tick()
        _typed(at.master, fd, b" ")  # the takeover toggle hands back
        person.label(obs)
        assert not person.holding
        person.tick()
        assert person.judge(obs, plan) is None  # nobody answered within 0.3 s
        assert person.unanswered == 1 and person.queries == 4


def test_askdagger_records_a_person_s_rejection_and_driving_for_sag(tiny_demo: Path) -> None:
    """ASkDAgger's gate with a person: a rejected plan stays recorded as a wrong plan while
    they have not moved yet (the robot follows the idle device), and the steps they then drive
    are the teacher in control, not further query outcomes: SAG sees one -1 for one query."""
    from policies.interactive import EnsembleConfig, NoviceEnsemble
    from robolearn.improve import ImproveConfig
    from robolearn.improve_data import REJECTED, TAKEOVER, load_demos
    from robolearn.improve_gate import Gate

    demos, _, features = load_demos(tiny_demo)
    novice = NoviceEnsemble(features, EnsembleConfig(steps=50, members=2))
    novice.fit(demos.obs, demos.act)
    with person_at_the_car(query_timeout_s=0.3) as at:
        cfg = ImproveConfig(start=str(tiny_demo), method="askdagger", teacher="human")
        gate = Gate(cfg, novice, at.teacher, 0, 0.0, np.random.default_rng(0), 2)
        gate.reset(0)
        at.answers.append(b"n")  # typed while the plan is shown
        first = gate.get_action(at.obs)  # asked (threshold 0), rejected, nobody drives yet
        assert gate.extras()["interactive.event"] == REJECTED
        assert np.isnan(gate.extras()["interactive.label"]).all() and first is not None
        _typed(at.master, at.teleop.device.fd, b"w")
        driven = gate.get_action(at.obs)
        assert gate.extras()["interactive.event"] == TAKEOVER and driven is not None
        assert driven[1] > 0 and np.isfinite(gate.extras()["interactive.label"]).all()
    assert gate._ep_label == [-1, 0]  # one outcome for one query


def test_an_improve_session_with_a_person_at_the_keyboard(tiny_demo: Path,
                                                          tmp_path: Path) -> None:
    """``teacher=human``: the session opens the keyboard, asks (ASkDAgger asks about every
    step before it has outcomes), and records an unanswered query as nobody's label; methods
    that need an answer at every step are refused by name."""
    import os

    master, slave = os.openpty()
    out = tmp_path / "human"
    try:
        assert main(["improve", str(tiny_demo), "method=askdagger", "teacher=human",
                     f"teleop_config={{tty: {os.ttyname(slave)}}}", "query_timeout_s=0.02",
                     "rounds=1", "episodes=1", "max_steps=10", f"output={out}",
                     *SETTING[:1], *SETTING[3:]]) == 0
    finally:
        os.close(master)
        os.close(slave)
    with EpisodeStore.open(out / "session.zarr") as store:
        ep = store.episode(0)
    assert len(ep["interactive.event"]) == 10
    assert np.all(ep["interactive.event"] == NONE) and np.isnan(ep["interactive.label"]).all()
    assert main(["improve", str(tiny_demo), "method=dagger", "teacher=human",
                 f"output={tmp_path / 'no'}", "-q"]) == 2
    assert not (tmp_path / "no").exists()


def test_thrifty_s_risk_critic_learns_which_actions_end_in_success() -> None:
    """Synthetic episodes: from any state, action +1 leads to success in 3 steps, action -1
    to failure; the critic ranks the good action above the bad one everywhere, and values a
    successful ending near 1 and a failed one near 0."""
    from policies.thrifty_risk import RiskConfig, RiskQ

    rng = np.random.default_rng(0)
    xs, acts, rewards, dones = [], [], [], []
    for e in range(200):
        good = e % 2 == 0
        x = rng.normal(size=(3, 4)).astype(np.float32)
        xs.append(x)
        acts.append(np.full((3, 1), 1.0 if good else -1.0, np.float32))
        rewards.append(np.array([0, 0, 1.0 if good else 0.0], np.float32))
        dones.append(np.array([0, 0, 1], np.float32))
    x = np.concatenate(xs)
    a = np.concatenate(acts)
    x_next = np.concatenate([np.concatenate([v[1:], v[-1:]]) for v in xs])
    risk = RiskQ(4, 1, RiskConfig(steps=1500, hidden_dim=64))
    risk.fit(x, a, x_next, a, np.concatenate(rewards), np.concatenate(dones))
    probe = rng.normal(size=(50, 4)).astype(np.float32)
    good = risk.value(probe, np.ones((50, 1), np.float32))
    bad = risk.value(probe, -np.ones((50, 1), np.float32))
    assert (good > bad).mean() > 0.9, (good.mean(), bad.mean())
    assert good.mean() > 0.7 and bad.mean() < 0.3


def test_a_resumed_risk_critic_takes_the_configured_learning_rate() -> None:
    """A session resumed with another ``risk_config.lr``: the saved optimiser state (moments,
    step counts) is kept, its learning rate is the new config's, not silently the saved one."""
    from policies.thrifty_risk import RiskConfig, RiskQ

    saved = RiskQ(4, 1, RiskConfig(lr=1e-3, hidden_dim=16)).state_dict()
    resumed = RiskQ(4, 1, RiskConfig(lr=3e-4, hidden_dim=16))
    resumed.load_state_dict(saved)
    assert [g["lr"] for g in resumed.opt.param_groups] == [3e-4]


def test_thrifty_hands_over_on_risk_and_records_its_thresholds(tiny_demo: Path,
                                                               tmp_path: Path) -> None:
    """Round 0: no success seen yet, no risk gate (the teacher drives it all); its laps train
    the critic; round 1 gates with Thrifty's a-priori thresholds (no autonomous steps yet),
    round 2 with thresholds from round 1's autonomous steps. The critic is checkpointed: the
    session, stopped after round 1 and resumed, goes on training the same critic."""

    out = tmp_path / "thrifty"
    base = ["improve", str(tiny_demo), "method=thrifty", "episodes=1", "risk_config.steps=300",
            f"output={out}", *SETTING]
    assert main([*base, "rounds=2"]) == 0
    saved = torch.load(out / "thrifty" / "risk.pt", weights_only=False)
    assert saved["round"] == 1 and saved["critic"]["updates"] == 300
    assert main([*base, "rounds=3"]) == 0
    saved = torch.load(out / "thrifty" / "risk.pt", weights_only=False)
    assert saved["round"] == 2 and saved["critic"]["updates"] == 600  # not refitted afresh
    rows = [r for r in rounds(out) if "labels_after" in r or r["round"] == 3]
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    assert "risk_threshold" not in rows[0]  # no success in the 40-step demo
    assert (rows[1]["risk_threshold"], rows[1]["risk_back"]) == (0.48, 0.495)
    assert 0 < rows[1]["takeovers"] < rows[1]["steps"]
    assert rows[2]["risk_threshold"] != 0.48  # from round 1's autonomous steps
    assert 0 <= rows[2]["risk_threshold"] <= rows[2]["risk_back"] <= 1


def test_a_session_keeps_the_fit_its_teacher_corrected_least(tiny_demo: Path,
                                                              tmp_path: Path) -> None:
    """``keep=fewest_takeovers``: after each round the fit that drove it is kept when its
    share of teacher steps is the lowest so far (ties to the later); the kept fit is the one
    that drove that round (it reproduces the round's own steps) and is what the last row's
    success measures, beside the last fit's."""
    out = tmp_path / "keep"
    assert main(["improve", str(tiny_demo), "method=hgdagger", "rounds=3", "episodes=1",
                 "max_steps=120", "eval_episodes=2", "eval_every=3", "keep=fewest_takeovers",
                 f"output={out}", *SETTING[:1], *SETTING[2:]]) == 0
    rows = rounds(out)
    collected = [r for r in rows if "takeovers" in r]
    assert len(collected) == 3 and any(r["takeovers"] for r in collected)
    rates = [r["takeovers"] / r["steps"] for r in collected]
    best = max(i for i, x in enumerate(rates) if x == min(rates))
    assert [bool(r.get("kept")) for r in collected] == \
        [x <= min(rates[:i], default=np.inf) for i, x in enumerate(rates)]
    assert rows[-1]["kept_round"] == best and "success_last" in rows[-1]
    kept = NoviceEnsemble.load(out / "kept")
    with EpisodeStore.open(out / "session.zarr") as store:
        i = next(i for i in range(len(store)) if store.info(i).metadata["round"] == best)
        ep = store.episode(i)
    auto = np.flatnonzero(ep["interactive.event"] == NONE)
    assert len(auto) > 20
    plans = np.stack([kept.act({k: ep[k][t] for k in kept.obs_keys})[0] for t in auto])
    assert np.mean(np.abs(plans - ep["action"][auto]).max(-1) < 1e-4) > 0.9
    # killed between keep_fit's two renames: the kept fit is kept.old, and is put back
    (out / "kept").rename(out / "kept.old")
    from robolearn.improve import Session

    back = Session(ImproveConfig(start=str(tiny_demo), method="hgdagger", output=str(out),
                                 keep="fewest_takeovers")).load_kept()
    assert (out / "kept").is_dir() and not (out / "kept.old").exists()
    obs = {k: ep[k][auto[0]] for k in kept.obs_keys}
    np.testing.assert_array_equal(back.act(obs)[0], kept.act(obs)[0])
    with pytest.raises(InvalidValue, match="keep"):
        ImproveConfig(start="x", method="dagger", keep="fewest_takeovers")
    with pytest.raises(InvalidValue, match="keep"):
        ImproveConfig(start="x", method="hgdagger", keep="best")
