"""RLIF against HG-DAgger with the same suboptimal teacher, and against the teacher alone.

``python -m bench.rlif [--seeds 0,1,2] [--rounds 30] [--eval 100]
[--rule risk|distance|value] [--threshold 0.5] [--value-ratio 0.9]
[--teacher weak|expert|biased] [--bias 0.65,0] [--start small|lap] [--out DIR]``

Setting: bench.interactive's (the car on the technical track, noisy starts, 400 steps an
episode, success = a lap; start: one 40-step scripted demonstration on the oval's straight).
The teacher: a weak policy acts (one MLP fitted on a single 120-step scripted demonstration of
the technical track: BC that laps most starts, not all; ``--teacher expert``: the scripted
expert itself; ``--teacher biased``: the scripted expert with a constant offset ``--bias`` on
its actions, a mis-trimmed controller: steering +0.65 laps 69 of 100 held-out starts), and it
steps in for ``--hold`` steps by ``--rule``: ``distance``, when the novice's action is more
than ``--threshold`` (max-norm) from the undegraded scripted expert's (``reference=expert``:
it sees a mistake like the expert, corrects like the weak policy), or ``risk``, when the car
is near a wall, stuck or crawling (it judges outcomes, not actions), or ``value``, when the
expert's value of the novice's plan (track progress over 2 s, less a crash cost, played
forward in the simulator: the plan held 0.25 s, then the expert) is below ``--value-ratio``
of its value of its own action (RLIF's value-based gate). ``--start lap``: both
methods start from BC on the weak policy's 120-step demonstration of the technical track
instead (a start that laps about as often as the teacher, not one that never does). Each
method runs ``--rounds`` rounds of one episode with this teacher; the final novice alone, and
the teacher alone, are evaluated on the same ``--eval`` held-out seeds. Prints a table
(success with Wilson 95% intervals, teacher steps used) and writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.interactive import SETTING, _demo


def weak_teacher(root: Path) -> Path:
    """One MLP on one 120-step scripted demonstration of the technical track (seed 0)."""
    from policies.interactive import EnsembleConfig, NoviceEnsemble
    from robolearn.cli import main
    from robolearn.improve_data import load_demos

    member = root / "weak" / "member_0"
    if member.exists():
        return member
    demo = root / "weak_demo.zarr"
    if not (demo / "zarr.json").exists():
        assert main(["collect", str(demo), f"env={SETTING['env']}", "episodes=1",
                     "max_steps=120", "-q"]) == 0
    data, _, feats = load_demos(demo)
    ens = NoviceEnsemble(feats, EnsembleConfig(members=1, steps=1000, bootstrap=False))
    ens.fit(data.obs, data.act)
    ens.save(root / "weak")
    return member


def teacher_cfg(args: Any, member: Path, seed: int = 0) -> Any:
    """The teacher of ``--teacher``: acts weak, biased or as the expert, judges as the expert."""
    from robolearn.teacher import TeacherConfig

    bias = [float(b) for b in args.bias.split(",")] if args.teacher == "biased" else []
    return TeacherConfig(seed=seed, weak=str(member) if args.teacher == "weak" else "",
                         bias=bias, reference="expert", hold=args.hold,
                         threshold=args.threshold, rule=args.rule, rule_p=args.rule_p,
                         value_ratio=args.value_ratio,
                         spurious_p=args.spurious_p)


def teacher_alone(cfg: Any, n: int) -> float:
    """Success of the teacher ``cfg`` driving alone (its degraded actions, never its rule) on
    the evaluation's held-out starts."""
    import dataclasses

    from robolearn.env import ENVS, make_env
    from robolearn.loop import ControlLoop, LoopConfig
    from robolearn.teacher import TeacherTakeover

    env = make_env(**{**ENVS[SETTING["env"]], "max_steps": SETTING["max_steps"],
                      "robot_kwargs": {**ENVS[SETTING["env"]].get("robot_kwargs", {}),
                                       **SETTING["robot_kwargs"]}})
    try:  # the teacher as the loop's takeover device, in control on every step
        drive = TeacherTakeover(env, dataclasses.replace(cfg, rule="random", p=1.0))
        loop = ControlLoop(env, LoopConfig(realtime=False))
        ok = 0
        for i in range(n):
            drive.reset(100_000 + i)  # the loop resets a policy, not a takeover device
            ok += bool(loop.run_episode(None, drive, seed=100_000 + i, record=False).success)
    finally:
        env.close()
    return ok / n


def run(method: str, seed: int, start: Path, member: Path, out: Path, args: Any) -> list[dict]:
    import dataclasses

    from policies.interactive import EnsembleConfig
    from robolearn.improve import ImproveConfig, Session
    from robolearn.rlif import RLIFConfig, _rlif_agent

    cfg = ImproveConfig(start=str(start), method=method, output=str(out / f"{method}_{seed}"),
                        rounds=args.rounds, episodes=1, eval_episodes=args.eval,
                        eval_every=args.rounds, seed=seed, env=SETTING["env"],
                        robot_kwargs=SETTING["robot_kwargs"], max_steps=SETTING["max_steps"],
                        ensemble=EnsembleConfig(steps=1000),
                        rlif=RLIFConfig(agent=dataclasses.replace(
                            _rlif_agent(), n_critics=args.critics, bc_weight=args.bc_weight,
                            offline_ratio=0.5 if args.bc_weight > 0 else 0.0,
                            bc_q_filter=args.bc_filter),
                                        offline_teacher=args.offline == "demos+teacher",
                                        rejected=not args.no_rejected,
                                        teacher_steps=args.teacher_steps,
                                        critic_warmup=args.critic_warmup,
                                        conservative=args.conservative,
                                        conservative_actions=args.conservative_actions),
                        keep=args.keep,
                        teacher_config=teacher_cfg(args, member, seed))
    return Session(cfg).run()


def main(argv: list[str] | None = None) -> int:
    import torch

    from robolearn.evaluate import wilson

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="rlif,hgdagger")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--eval", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--hold", type=int, default=4)
    ap.add_argument("--rule-p", type=float, default=1.0,
                    help="probability the teacher steps in when its rule fires (RLIF: 0.95)")
    ap.add_argument("--spurious-p", type=float, default=0.0,
                    help="probability it steps in when its rule does not fire (RLIF: 0.05)")
    ap.add_argument("--rule", default="distance", choices=("distance", "risk", "value"))
    ap.add_argument("--value-ratio", type=float, default=0.9,
                    help="--rule value: take over below this fraction of the expert's value")
    ap.add_argument("--teacher", default="weak", choices=("weak", "expert", "biased"))
    ap.add_argument("--bias", default="0.65,0", help="--teacher biased: offset per action")
    ap.add_argument("--start", default="small", choices=("small", "lap"),
                    help="small: the 40-step demonstration on the oval; lap: the weak "
                         "policy's 120-step demonstration of the technical track")
    ap.add_argument("--critics", type=int, default=10,
                    help="RLIF's critic ensemble (min over 2 of them; the reference's 10)")
    ap.add_argument("--bc-weight", type=float, default=1.0,
                    help="RLIF: TD3+BC's term on the offline half (--offline; RLPD's 50/50 "
                         "batches), 0: pure RL on one uniformly sampled replay")
    ap.add_argument("--teacher-steps", default="all", choices=("all", "last"),
                    help="RLIF: the teacher's steps in the replay (last: the last of each "
                         "takeover, as the reference)")
    ap.add_argument("--bc-filter", action="store_true",
                    help="RLIF --bc-weight: only where the critics rate the offline action "
                         "higher (Nair et al.), not on every offline row (TD3+BC)")
    ap.add_argument("--offline", default="demos", choices=("demos+teacher", "demos"),
                    help="RLIF --bc-weight: what the offline half holds")
    ap.add_argument("--critic-warmup", type=int, default=500,
                    help="RLIF: updates that train the critics only, the BC actor kept")
    ap.add_argument("--no-rejected", action="store_true",
                    help="RLIF without -1 on the plans the teacher turned down (only on the "
                         "step before each takeover, as the reference)")
    ap.add_argument("--conservative", type=float, default=0.0,
                    help="RLIF: CQL's weight on the critics (0: plain SAC critics)")
    ap.add_argument("--conservative-actions", type=int, default=2,
                    help="RLIF --conservative: sampled actions per state and kind")
    ap.add_argument("--keep", default="last", choices=("last", "fewest_takeovers"),
                    help="the novice evaluated: the last fit, or the fit whose round needed "
                         "the teacher on the fewest steps (both methods alike)")
    ap.add_argument("--out", default="bench/results/rlif")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    member = weak_teacher(out)
    start = _demo(out) if args.start == "small" else out / "weak_demo.zarr"
    results: dict[str, Any] = {"teacher_alone": teacher_alone(teacher_cfg(args, member),
                                                              args.eval), "args": vars(args)}
    print(f"teacher alone: {results['teacher_alone']:.2f} of {args.eval}", flush=True)
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.monotonic()
            rows = run(method, seed, start, member, out, args)
            last = rows[-1]
            results.setdefault(method, {})[seed] = {
                "success": last["success"], "teacher_steps": last["labels"], "rows": rows,
                "success_last": last.get("success_last", last["success"]),
                "kept_round": last.get("kept_round"), "wall_s": time.monotonic() - t0}
            kept = (f" (the fit of round {last['kept_round']}; the last fit "
                    f"{last['success_last']:.2f})" if "success_last" in last else "")
            print(f"{method} seed {seed} ({time.monotonic() - t0:.0f} s): success "
                  f"{last['success']:.2f}{kept}, teacher steps {last['labels']}", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    n = args.eval
    k = round(results["teacher_alone"] * n)
    lo, hi = wilson(k, n)
    print("\n| who drives the evaluation | success per seed | pooled (95% CI) | teacher steps "
          "per seed |\n|---|---|---|---|")
    print(f"| the teacher alone | {k / n:.2f} | {k / n:.2f} ({lo:.2f}-{hi:.2f}) | - |")
    def line(name: str, rates: list[float], steps: str) -> None:
        ks = [round(x * n) for x in rates]
        lo, hi = wilson(sum(ks), n * len(ks))
        print(f"| {name} | {', '.join(f'{x / n:.2f}' for x in ks)} | "
              f"{sum(ks) / (n * len(ks)):.2f} ({lo:.2f}-{hi:.2f}) | {steps} |")

    for method in args.methods.split(","):
        by = results[method].values()
        if args.keep != "last":
            line(f"{method}, the last fit", [v["success_last"] for v in by], "-")
        line(method if args.keep == "last" else f"{method}, the kept fit",
             [v["success"] for v in by], ", ".join(str(v["teacher_steps"]) for v in by))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
