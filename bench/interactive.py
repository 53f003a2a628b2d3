"""Expert labels to reach a success rate: BC from more demonstrations against DAgger, HG-DAgger,
ThriftyDAgger and ASkDAgger, all from the same small BC start, with the simulated teacher.

``python -m bench.interactive [--setting car|arm] [--quick] [--seeds 0,1,2] [--methods ...]
[--out DIR]``

``--setting arm``: the arm lift from 5 lifts by the teaching expert (re-anchored at the arm, its
phase read from the state; BC's demonstrations come from it too), the novice predicting joint
targets as offsets from the joints (``ensemble.action_offset``).

Setting (the car; see the README for why not the arm yet): the start is one 40-step scripted
demonstration on the oval's first straight; the robot practises on the technical track with
noisy starts (``reset_lateral_noise`` 0.4 m, ``reset_yaw_noise`` 0.5 rad), 400 steps an
episode, success = a lap. Each method runs ``--rounds`` rounds of ``--episodes`` episodes; after
each round's refit the novice alone is evaluated on ``--eval`` held-out seeds. Baseline: BC on
1, 2, 4, ... scripted demonstrations of the practice setting (every demo step is a label).
Prints, per method and seed, the labels when the novice first reached ``--target`` and the
curve; writes ``success_vs_labels.png`` and ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robolearn.experts import TEACHER_KWARGS

if TYPE_CHECKING:  # torch is imported where a run needs it
    from policies.interactive import EnsembleConfig

SETTINGS: dict[str, dict[str, Any]] = {
    # the start: one 40-step demonstration on the oval's first straight
    "car": {"env": "robolearn/SimCarTechnical-v0",
            "robot_kwargs": {"reset_lateral_noise": 0.4, "reset_yaw_noise": 0.5},
            "max_steps": 400, "action_offset": None, "expert": {},
            "start": ["env=robolearn/SimCar-v0", "episodes=1", "max_steps=40"]},
    # the start: 5 lifts by the teaching expert (re-anchored, phase from the state: the
    # demonstrator and the teacher are one expert, so demos and labels agree); the novice
    # learns joint targets as offsets from the joints
    "arm": {"env": "robolearn/SimArmLift-v0", "robot_kwargs": {}, "max_steps": 250,
            "action_offset": "observation.state",
            "expert": TEACHER_KWARGS["sim_arm"], "start": 5},
}
SETTING: dict[str, Any] = dict(SETTINGS["car"])  # the chosen one (--setting)


def _demo(root: Path) -> Path:
    from robolearn.cli import main

    path = root / "start.zarr"
    if (path / "zarr.json").exists():
        return path
    if isinstance(SETTING["start"], list):
        assert main(["collect", str(path), *SETTING["start"], "-q"]) == 0
        return path
    from data import Source
    from robolearn.env import ENVS, make_env
    from robolearn.experts import make_expert
    from robolearn.loop import ControlLoop, LoopConfig, create_store

    env = make_env(**ENVS[SETTING["env"]])
    try:
        with create_store(str(path), env, SETTING["env"], {}) as store, \
                store.recorder(task=env.task.description or env.task.name) as rec:
            loop = ControlLoop(env, LoopConfig(realtime=False), rec)
            expert = make_expert(env, **SETTING["expert"])
            for i in range(SETTING["start"]):
                loop.run_episode(expert, seed=i, source=Source.SCRIPTED)
    finally:
        env.close()
    return path


def _novice(args: Any, **kw: Any) -> EnsembleConfig:
    """The novice's EnsembleConfig as the command line names it (the setting's action
    offset; width, depth and schedule where given, else EnsembleConfig's), plus ``kw``."""
    from policies.interactive import EnsembleConfig

    named = {"hidden_dim": args.hidden, "n_layers": args.layers,
             "lr_schedule": args.lr_schedule}
    return EnsembleConfig(steps=args.fit_steps, members=args.members,
                          action_offset=SETTING["action_offset"],
                          **{k: v for k, v in named.items() if v is not None}, **kw)


def run_method(method: str, seed: int, start: Path, out: Path, args: Any) -> list[dict]:
    from policies.interactive import SAGConfig
    from robolearn.improve import ImproveConfig, Session
    from robolearn.improve_config import FIT_EVERY_EPISODE
    from robolearn.teacher import TeacherConfig

    cfg = ImproveConfig(start=str(start), method=method, output=str(out / f"{method}_{seed}"),
                        rounds=args.rounds, episodes=args.episodes, eval_episodes=args.eval,
                        seed=seed, env=SETTING["env"], robot_kwargs=SETTING["robot_kwargs"],
                        max_steps=SETTING["max_steps"],
                        ensemble=_novice(args),
                        sag=SAGConfig(target=args.sag_target, p_rand=args.p_rand, n_min=15),
                        plan_steps=args.plan_steps if method == "askdagger" else 1,
                        plan=args.plan if method == "askdagger" else "rollout",
                        fit_every=args.fit_every if method in FIT_EVERY_EPISODE else "round",
                        teacher_config=TeacherConfig(
                            seed=seed, drive=args.drive, drive_back=args.drive_back,
                            expert=dict(SETTING["expert"]),  # --roll-slack's, where given
                            **({} if args.tolerance is None else {"tolerance": args.tolerance})))
    return Session(cfg).run()


def run_bc(seed: int, out: Path, args: Any) -> list[dict]:
    """BC on n scripted demos of the practice setting, n = 1, 2, 4, ..."""
    import torch

    from policies.interactive import NoviceEnsemble
    from robolearn.env import ENVS, make_env
    from robolearn.experts import make_expert
    from robolearn.loop import ControlLoop, LoopConfig

    torch.set_num_threads(1)
    kw = {**ENVS[SETTING["env"]], "max_steps": SETTING["max_steps"],
          "robot_kwargs": {**ENVS[SETTING["env"]].get("robot_kwargs", {}),
                           **SETTING["robot_kwargs"]}}
    env = make_env(**kw)
    expert = make_expert(env, **SETTING["expert"])  # the teacher's expert (the arm: re-anchored)
    loop = ControlLoop(env, LoopConfig(realtime=False))
    obs_all: list[dict[str, np.ndarray]] = []
    act_all: list[np.ndarray] = []
    rows = []
    n, made = 1, 0
    try:
        while n <= args.bc_max:
            while made < n:
                demo = _Demo(expert)
                loop.run_episode(demo, seed=50_000 + seed * 1000 + made, record=False)
                obs_all += demo.states
                act_all += demo.actions
                made += 1
            ens = NoviceEnsemble({**env.features, "action": env.robot.action_feature},
                                 _novice(args, seed=seed))
            ens.fit({k: np.stack([o[k] for o in obs_all]) for k in ens.obs_keys},
                    np.stack(act_all))
            ok = sum(bool(loop.run_episode(lambda o, e=ens: e.act(o)[0], seed=100_000 + i,
                                           record=False).success) for i in range(args.eval))
            rows.append({"round": n, "labels": len(obs_all), "success": ok / args.eval})
            print(f"  bc seed {seed}: {n} demos, {len(obs_all)} labels, {ok}/{args.eval}",
                  flush=True)
            n *= 2
    finally:
        env.close()
    return rows


class _Demo:
    """The scripted expert driving, its (state, action) pairs kept: one demonstration."""

    def __init__(self, expert: Any) -> None:
        self.expert = expert
        self.states: list[dict[str, np.ndarray]] = []
        self.actions: list[np.ndarray] = []

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        a = np.asarray(self.expert(obs), np.float32)
        self.states.append({k: np.asarray(v).copy() for k, v in obs.items()})
        self.actions.append(a)
        return a


def sag_on_rollouts(session: Path, args: Any) -> list[dict]:
    """SAG on real rollouts: the session's final novice drives; on calibration rollouts the
    teacher judges a random half of the steps (the rest unknown, imputed), SAG sets gamma for
    each target; on held-out rollouts the teacher judges every step, and the realised
    sensitivity (failures queried, random queries included) is compared with the target."""
    import torch

    from policies.interactive import NoviceEnsemble, SAGConfig, realised_rate, sag_threshold
    from robolearn.env import ENVS, make_env
    from robolearn.loop import ControlLoop, LoopConfig
    from robolearn.teacher import SimulatedTeacher, TeacherConfig

    torch.set_num_threads(1)
    if (session / "novice").is_dir():
        ens = NoviceEnsemble.load(session / "novice")
    else:  # a demonstration store: the small BC start (many wrong plans to gate)
        from robolearn.improve_data import load_demos

        demos, _, features = load_demos(session)
        ens = NoviceEnsemble(features, _novice(args))
        ens.fit(demos.obs, demos.act)
    kw = {**ENVS[SETTING["env"]], "max_steps": SETTING["max_steps"],
          "robot_kwargs": {**ENVS[SETTING["env"]].get("robot_kwargs", {}),
                           **SETTING["robot_kwargs"]}}
    env = make_env(**kw)
    teacher = SimulatedTeacher(env, TeacherConfig(expert=dict(SETTING["expert"])))
    loop = ControlLoop(env, LoopConfig(realtime=False))

    class Judged:
        def __init__(self) -> None:
            self.u: list[float] = []
            self.fail: list[bool] = []

        def reset(self, seed: int | None = None) -> None:
            teacher.reset(seed)

        def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
            plan, u = ens.act(obs)
            self.u.append(u)
            self.fail.append(not teacher.judge(obs, plan))
            teacher.tick()
            return plan

    def rollouts(first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        j = Judged()
        for i in range(n):
            loop.run_episode(j, seed=first + i, record=False)
        return np.asarray(j.u), np.asarray(j.fail)

    try:
        u_cal, f_cal = rollouts(200_000, args.sag_episodes)
        u_test, f_test = rollouts(300_000, args.sag_episodes)
    finally:
        env.close()
    rng = np.random.default_rng(0)
    known = rng.random(u_cal.size) < 0.5
    label = np.where(known, np.where(f_cal, -1, 1), 0)
    rows = []
    for target in (0.7, 0.8, 0.9):
        cfg = SAGConfig(mode="sensitivity", target=target, p_rand=0.2)
        gamma = sag_threshold(u_cal, label, np.zeros(u_cal.size, int), 0, cfg, rng)
        got = realised_rate(u_test, f_test, gamma, cfg.p_rand, "sensitivity")
        queried = float(np.mean(u_test >= gamma) * (1 - cfg.p_rand) + cfg.p_rand)
        rows.append({"target": target, "realised": got, "gamma": gamma,
                     "query_rate": queried, "failures_test": int(f_test.sum()),
                     "steps_test": int(f_test.size)})
        print(f"SAG sensitivity target {target}: realised {got:.3f} on {f_test.size} held-out "
              f"steps ({int(f_test.sum())} wrong plans), query rate {queried:.2f}", flush=True)
    return rows


def labels_to(rows: list[dict], target: float) -> int | None:
    for r in rows:
        if r.get("success", 0) >= target:
            return int(r["labels"])
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="car")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="bc,dagger,hgdagger,thrifty,askdagger")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--eval", type=int, default=50)
    ap.add_argument("--fit-steps", type=int, default=1000)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=None,
                    help="the novice's hidden width (EnsembleConfig.hidden_dim, default 256)")
    ap.add_argument("--layers", type=int, default=None,
                    help="the novice's hidden layers (EnsembleConfig.n_layers, default 2)")
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default=None,
                    help="the novice's learning rate over a fit (EnsembleConfig.lr_schedule)")
    ap.add_argument("--bc-max", type=int, default=8)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--drive", type=int, default=0,
                    help="askdagger: steps the teacher drives after rejecting a plan it was "
                         "asked about (TeacherConfig.drive; 0: the rejected step only)")
    ap.add_argument("--p-rand", type=float, default=0.2,
                    help="askdagger: SAG's random query probability (CLIPort's 0.2, MNIST's 0.1)")
    ap.add_argument("--plan-steps", type=int, default=1,
                    help="askdagger: steps in a plan, one query for all of them "
                         "(ImproveConfig.plan_steps; 1: a query per step)")
    ap.add_argument("--plan", choices=("rollout", "chunk"), default="rollout",
                    help="askdagger: a plan is the one-step novice's rollout on a copy of the "
                         "simulation, or a chunk the novice predicts (ImproveConfig.plan)")
    ap.add_argument("--fit-every", choices=("round", "episode"), default="round",
                    help="dagger, hgdagger, askdagger: refit the novice once a round, or "
                         "also after every episode that added training data "
                         "(ImproveConfig.fit_every)")
    ap.add_argument("--drive-back", type=int, default=0,
                    help="askdagger: the drive ends once the novice's plan was acceptable on "
                         "this many consecutive steps (TeacherConfig.drive_back; 0: never)")
    ap.add_argument("--tolerance", type=float, default=None,
                    help="the teacher's judging tolerance (max-norm; TeacherConfig.tolerance, "
                         "default 0.15): a plan this close to its action is approved")
    ap.add_argument("--roll-slack", type=float, default=None,
                    help="arm: the teaching expert's roll_slack (ExpertConfig; default "
                         "TEACHER_KWARGS's 0.1), for its demonstrations and the teacher; 0: "
                         "the teacher every arm figure before 2026-12-07's fourth session had")
    ap.add_argument("--out", default="bench/results/interactive")
    ap.add_argument("--sag-episodes", type=int, default=10)
    ap.add_argument("--sag-target", type=float, default=0.9,
                    help="askdagger: SAG's target sensitivity (sigma_des; CLIPort's 0.9)")
    ap.add_argument("--merge", nargs="+", metavar="DIR[=NAME]",
                    help="only merge the results.json of earlier runs (one seed each) into "
                         "--out: the table and the plot (DIR=NAME: shown as NAME)")
    ap.add_argument("--sag-session", help="measure SAG only, on rollouts of this askdagger "
                                          "session's novice (its output directory), or of BC "
                                          "on this demonstration store")
    args = ap.parse_args(argv)
    SETTING.clear()
    SETTING.update(SETTINGS[args.setting])
    if args.roll_slack is not None:
        if args.setting != "arm":
            ap.error("--roll-slack is the arm teacher's (--setting arm)")
        SETTING["expert"] = {**SETTING["expert"], "roll_slack": args.roll_slack}
    import torch

    torch.set_num_threads(1)  # torch's default threads on this busy 2-core machine: 20x slower
    if args.quick:
        args.rounds, args.episodes, args.eval, args.fit_steps, args.members = 2, 1, 10, 500, 3
        args.seeds, args.bc_max = "0", 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merged: dict[str, dict[int, list[dict]]] = {}
        for spec in args.merge:  # DIR, or DIR=NAME: its method shown as NAME (two variants)
            d, _, name = spec.partition("=")
            for method, by_seed in json.loads((Path(d) / "results.json").read_text()).items():
                merged.setdefault(name or method, {}).update(
                    {int(k): v for k, v in by_seed.items()})
        _report(merged, out, args.target)
        return 0
    if args.sag_session:
        rows = sag_on_rollouts(Path(args.sag_session), args)
        (out / "sag.json").write_text(json.dumps(rows, indent=1))
        return 0
    start = _demo(out)
    results: dict[str, dict[int, list[dict]]] = {}
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.monotonic()
            rows = run_bc(seed, out, args) if method == "bc" else \
                run_method(method, seed, start, out, args)
            results.setdefault(method, {})[seed] = rows
            print(f"{method} seed {seed} ({time.monotonic() - t0:.0f} s): labels to "
                  f"{args.target:.0%}: {labels_to(rows, args.target)}; curve "
                  f"{[(r['labels'], r.get('success')) for r in rows]}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _report(results, out, args.target)
    return 0


def _report(results: dict[str, dict[int, list[dict]]], out: Path, target: float) -> None:
    print("\n| method | labels to reach the target, per seed | median |")
    print("|---|---|---|")
    for method, by_seed in results.items():
        got = [labels_to(rows, target) for rows in by_seed.values()]
        done = [g for g in got if g is not None]
        med = f"{int(np.median(done))}" if len(done) == len(got) else "not reached by all"
        print(f"| {method} | {', '.join(str(g) for g in got)} | {med} |")
    _plot(results, out / "success_vs_labels.png", target)


def _plot(results: dict[str, dict[int, list[dict]]], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (method, by_seed) in enumerate(results.items()):
        for j, rows in enumerate(by_seed.values()):
            ax.plot([r["labels"] for r in rows], [r.get("success", 0) for r in rows],
                    color=f"C{i}", alpha=0.8, marker="o", ms=3,
                    label=method if j == 0 else None)
    ax.axhline(target, color="grey", ls="--", lw=0.8)
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(left=0)
    ax.set_xlabel("expert labels")
    ax.set_ylabel("success (novice alone)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    raise SystemExit(main())
