"""Practice sessions, measured: ``python -m bench.practice WHAT`` (``link`` and ``kill`` live
in :mod:`bench.practice_link`).

- ``fastrlap``: FastRLAP on the simulated car. One demo lap at half the scripted driver's speed
  (pure pursuit at ``DEMO_SPEED`` instead of 2.0 m/s) is recorded; ``robolearn course`` turns its
  path into the course's checkpoints; ``robolearn practice`` (learner + actor processes over
  gRPC) practises with SAC from nothing else. Baseline: the demo lap's own time; target: a lap
  <= 0.6x of it within 20 minutes of robot time (env steps / 20 Hz). Curves of lap time against
  robot minutes and wall minutes, per seed.
- ``actors``: the same session with two actors against one, in the same run: env steps/s and
  the robot time (summed over actors) and wall time to the target lap time.
- ``link``: weight delivery latency learner -> actor (p50/p99) and transitions/s through the
  gRPC link, against the same payloads through an in-process ``queue.Queue``.
- ``kill``: a session whose learner is SIGKILLed 10 times: transitions lost, time from the
  learner's return to the actor's first step, steps taken while the learner was down.
- ``classifier``: HIL-SERL's reward classifier, precision and recall on held-out frames.
- ``rc_car``: FastRLAP on the emulated RC car (firmware in simavr), in real time.
- ``arm``: RLPD on the simulated arm with the classifier's reward instead of the task's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENV = "robolearn/SimCar-v0"
DEMO_SPEED = 1.0  # m/s: half of PurePursuitConfig.speed (2.0)
FPS = 20.0


def record_demo(out: Path, speed: float = DEMO_SPEED, seed: int = 0) -> float:
    """One lap by the pure-pursuit driver at ``speed`` into ``out``; returns its lap time (s)."""
    import sim  # noqa: F401
    from robolearn.env import ENVS, make_env
    from robolearn.loop import ControlLoop, LoopConfig, create_store
    from sim.car.driver import PurePursuitDriver

    env = make_env(**ENVS[ENV])
    driver = PurePursuitDriver.for_robot(env.robot, speed=speed)
    store = create_store(str(out), env, ENV, {})
    with store, store.recorder(task=env.task.description, source="scripted") as rec:
        loop = ControlLoop(env, LoopConfig(realtime=False, max_steps=4000), recorder=rec)
        # on 2 s past the lap: the path closes on itself (robolearn course needs that)
        done_at: list[int] = []

        def stop() -> bool:
            if env.task.laps >= 1 and not done_at:
                done_at.append(env.task.checkpoints_reached)
            return bool(done_at) and env.task.checkpoints_reached >= done_at[0] + 2

        loop.run_episode(lambda obs: driver(env.robot.state()), seed=seed, stop_when=stop)
    lap = float(env.task.lap_times[0])
    env.close()
    return lap


def _practice(out: Path, seed: int, actors: int, env_steps: int, time_scale: float,
              course: Path, learner_args: list[str]) -> None:
    from robolearn.practice.session import PracticeConfig
    from robolearn.practice.session import run as practice

    cfg = PracticeConfig(output=str(out), env=ENV, actors=actors, env_steps=env_steps,
                         time_scale=time_scale, policy="sac", seed=seed,
                         learner_args=learner_args,
                         actor_args=[f"robot.course={course}"])
    code = practice(cfg)
    if code:
        raise SystemExit(f"practice {out} failed ({code})")


def laps(out: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(out.glob("actor*/laps.jsonl")):
        rows += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    return sorted(rows, key=lambda r: r["wall_s"])


def first_reaching(rows: list[dict[str, Any]], target: float, actors: int = 1
                   ) -> dict[str, float] | None:
    """The first lap at or under ``target``: robot minutes (summed over actors: each actor's
    steps at that moment, approximated by its own count times the actors) and wall minutes."""
    for r in rows:
        if r["lap_time"] <= target:
            return {"robot_min": r["robot_s"] * actors / 60, "wall_min": r["wall_s"] / 60,
                    "lap_time": r["lap_time"]}
    return None


LEARNER = ["policy_config.utd=2", "policy_config.batch_size=256", "start_after=1000",
           "checkpoint_every_s=60", "threads=1"]


def fastrlap(args: argparse.Namespace) -> dict[str, Any]:
    out = args.out / "fastrlap"
    out.mkdir(parents=True, exist_ok=True)
    demo = out / "demo.zarr"
    if not demo.exists():
        demo_lap = record_demo(demo)
        (out / "demo.json").write_text(json.dumps({"lap_time": demo_lap, "speed": DEMO_SPEED}))
    demo_lap = json.loads((out / "demo.json").read_text())["lap_time"]
    course = out / "course.json"
    if not course.exists():
        from robolearn.practice.course import CourseConfig
        from robolearn.practice.course import run as make_course

        make_course(CourseConfig(store=str(demo), output=str(course), spacing=1.0))
    target = 0.6 * demo_lap
    report: dict[str, Any] = {"demo_lap_s": demo_lap, "target_s": target,
                              "env_steps": args.steps, "time_scale": args.time_scale,
                              "learner": LEARNER, "seeds": {}}
    for seed in args.seeds:
        run_dir = out / f"seed{seed}"
        if not (run_dir / "actor0" / "actor.json").exists():
            _practice(run_dir, seed, 1, args.steps, args.time_scale, course, LEARNER)
        rows = laps(run_dir)
        report["seeds"][seed] = {"first_at_target": first_reaching(rows, target),
                                 "laps": len(rows),
                                 "best_lap_s": min((r["lap_time"] for r in rows), default=None),
                                 "last5_median_s": float(np.median([r["lap_time"]
                                                                     for r in rows[-5:]]))
                                 if rows else None}
        print(json.dumps({seed: report["seeds"][seed]}), flush=True)
    _plot(out, report, demo_lap)
    return report


def _plot(out: Path, report: dict[str, Any], demo_lap: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for seed in report["seeds"]:
        rows = laps(out / f"seed{seed}")
        for ax, key, scale in ((axes[0], "robot_s", 60), (axes[1], "wall_s", 60)):
            ax.plot([r[key] / scale for r in rows], [r["lap_time"] for r in rows], ".-",
                    label=f"seed {seed}")
    for ax, name in zip(axes, ("robot minutes (env steps / 20 Hz)", "wall minutes (this CPU)"),
                        strict=True):
        ax.axhline(demo_lap, color="k", ls="--", label="demo lap")
        ax.axhline(0.6 * demo_lap, color="g", ls=":", label="0.6x demo")
        ax.set_xlabel(name)
    axes[0].set_ylabel("lap time (s)")
    axes[0].legend()
    fig.suptitle("FastRLAP practice on the simulated car (SAC, learner and actor over gRPC)")
    fig.tight_layout()
    Path("docs").mkdir(exist_ok=True)
    fig.savefig("docs/practice_lap_time.png", dpi=100)


def actors(args: argparse.Namespace) -> dict[str, Any]:
    """One actor against two (same learner settings, seed, per-actor budget), same run."""
    fr = args.out / "fastrlap"
    course, demo = fr / "course.json", json.loads((fr / "demo.json").read_text())
    target = 0.6 * demo["lap_time"]
    report: dict[str, Any] = {"target_s": target, "steps_per_actor": args.steps,
                              "time_scale": args.time_scale, "learner": LEARNER}
    for n in (1, 2):
        run_dir = args.out / f"actors{n}"
        if not (run_dir / "actor0" / "actor.json").exists():
            t0 = time.time()
            _practice(run_dir, 0, n, args.steps, args.time_scale, course, LEARNER)
            (run_dir / "wall.json").write_text(json.dumps({"wall_s": time.time() - t0}))
        rows = laps(run_dir)
        wall = json.loads((run_dir / "wall.json").read_text())["wall_s"]
        reached = first_reaching(rows, target, n)
        report[f"{n}_actor"] = {
            "env_steps_per_s": n * args.steps / wall, "wall_s": wall,
            "to_target": reached, "best_lap_s": min((r["lap_time"] for r in rows), default=None)}
        print(n, json.dumps(report[f"{n}_actor"]), flush=True)
    one, two = report["1_actor"], report["2_actor"]
    report["steps_per_s_ratio_2_over_1"] = two["env_steps_per_s"] / one["env_steps_per_s"]
    if one["to_target"] and two["to_target"]:
        report["wall_to_target_ratio_2_over_1"] = (two["to_target"]["wall_min"]
                                                   / one["to_target"]["wall_min"])
    return report


ARM = "robolearn/SimArmLift-v0"


def record_labelled(out: Path, episodes: int, seed: int = 0,
                    cameras: tuple[str, ...] = ("front",)) -> None:
    """Arm episodes seen by ``cameras``, each frame labelled success or failure by the
    simulator (standing in for the person who holds a key while the robot shows success):
    2 of 3 episodes by the scripted expert (reaching, grasping, lifting, then holding for 15
    steps), 1 of 3 by a policy that acts at random (failures)."""
    import sim  # noqa: F401
    from data import EpisodeStore
    from data.schema import Feature
    from robolearn.env import ENVS, make_env
    from robolearn.experts import make_expert
    from robolearn.loop import step_features

    env = make_env(**{**ENVS[ARM], "robot_kwargs": {"cameras": list(cameras)}})
    feats = {k: f for k, f in step_features(env).items() if k != "next.reward"}
    feats["label.success"] = Feature("float32", ())
    store = EpisodeStore.create(out, {k: f.to_json() for k, f in feats.items()}, env.robot.fps,
                                robot_type=env.robot.name)
    rng = np.random.default_rng(seed)
    low, high = env.robot.action_bounds
    with store, store.recorder(task="lift", source="scripted") as rec:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed * 1000 + ep)
            scripted = ep % 3 != 2
            expert = make_expert(env)
            expert.reset()
            after = 0
            for _ in range(160):
                act = expert(obs) if scripted else rng.uniform(low, high)
                ok = env.task.success(env.robot)
                rec.add({**{k: obs[k] for k in env.features}, "action": np.asarray(act,
                         np.float32), "label.success": np.float32(ok)})
                after += int(ok)
                if after > 15:
                    break
                obs, *_ = env.step(act)
            rec.end_episode(success=after > 0)
    env.close()


def _classifier_dir(args: argparse.Namespace) -> Path:
    return args.out / ("classifier" if tuple(args.cameras) == ("front",)
                       else "classifier_" + "_".join(args.cameras))


def classifier(args: argparse.Namespace) -> dict[str, Any]:
    """HIL-SERL's reward classifier: precision and recall on held-out labelled frames."""
    import shutil

    from policies.reward_classifier import ClassifierConfig
    from robolearn.practice.reward_cmd import RewardTrainConfig, train

    out = _classifier_dir(args)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    t0 = time.time()
    record_labelled(out / "frames.zarr", args.episodes, cameras=tuple(args.cameras))
    t_rec = time.time() - t0
    train(RewardTrainConfig(store=str(out / "frames.zarr"), output=str(out / "model"),
                            holdout=args.episodes // 4, classifier=ClassifierConfig(
                                cameras=[f"observation.images.{c}" for c in args.cameras])))
    report = json.loads((out / "model" / "eval.json").read_text())
    report.update(episodes=args.episodes, holdout=args.episodes // 4, record_s=t_rec,
                  train_s=time.time() - t0 - t_rec, cameras=args.cameras)
    return report


def rc_car(args: argparse.Namespace) -> dict[str, Any]:
    """FastRLAP on the emulated RC car: robolearn's firmware in simavr driving the MuJoCo car,
    the driver over a pty at 115200 baud, the pose from the emulator's localisation stream;
    real time (a real robot's loop runs at its own rate), the course of the ``fastrlap`` demo."""
    import shutil
    import signal
    import subprocess

    from hardware.rc_car.trials import Emulator
    from robolearn.practice.session import start_learner

    fr = args.out / "fastrlap"
    course = fr / "course.json"
    if not course.exists():
        raise SystemExit("run `python -m bench.practice fastrlap` first (the demo's course)")
    target = 0.6 * json.loads((fr / "demo.json").read_text())["lap_time"]
    out = args.out / "rc_car"
    shutil.rmtree(out, ignore_errors=True)
    emu = Emulator()
    learner, address = start_learner([str(out / "learner"), "address=127.0.0.1:0",
                                      "policy=sac", *LEARNER])
    t0 = time.time()
    try:
        code = subprocess.call([sys.executable, "-m", "robolearn.cli", "actor", address,
                                "env=robolearn/RCCar-v0", f"robot.port={emu.port}",
                                f"robot.localisation={emu.localisation}",
                                f"robot.course={course}", f"output={out / 'actor0'}",
                                f"env_steps={args.steps}"])
    finally:
        learner.send_signal(signal.SIGTERM)
        learner.wait(timeout=120)
        try:
            status = emu.status()
        finally:
            emu.stop()
    rows = laps(out)
    report = {"exit": code, "env_steps": args.steps, "wall_s": time.time() - t0,
              "target_s": target, "laps": len(rows),
              "lap_times": [round(r["lap_time"], 2) for r in rows],
              "first_at_target": first_reaching(rows, target),
              "emulator": {k: status.get(k) for k in ("collisions", "laps", "lap_times")},
              "actor": json.loads((out / "actor0" / "actor.json").read_text())}
    return report


# RLPD's arm recipe (configs/arm_lift_rlpd.yaml), as learner settings
ARM_LEARNER = ["policy=rlpd", "obs_norm=dataset", "dataset_reward=success",
               "policy_config.n_critics=10", "policy_config.critic_subset=2",
               "policy_config.utd=4", "policy_config.batch_size=128",
               "policy_config.critic_hidden=[128,128]", "policy_config.init_temperature=0.01",
               "policy_config.actor.hidden=[128,128]", "policy_config.actor.obs_clip=5.0",
               "policy_config.actor.relative_actions=[shoulder_pan,shoulder_lift,elbow_flex,"
               "wrist_flex,wrist_roll]", "policy_config.actor.relative_step=0.15",
               "start_after=1000", "threads=1", "checkpoint_every_s=60"]


def arm(args: argparse.Namespace) -> dict[str, Any]:
    """HIL-SERL-style practice on the simulated arm, in rounds. RLPD from 10 scripted demos
    (their reward relabelled to success: 1 on the lifting step), the reward from the learned
    classifier on ``--cameras`` (no task reward), the policy on the arm's state, and the
    scripted expert taking over now and then (``--takeover-p`` a step, for ``--takeover-hold``
    steps: HIL-SERL's interventions, unattended). After each round the rounds' episodes are
    reviewed (the simulator's verdict standing in for the person who looks at what the classifier
    ended: every frame of a failed episode a failure, the last frame of a successful one a
    success) and the classifier is retrained (HIL-SERL: relabel the false positives); the next
    round practises afresh with it. Success is the simulator's, counted over episodes
    no takeover touched."""
    from policies.reward_classifier import ClassifierConfig
    from robolearn.practice.reward_cmd import RewardTrainConfig
    from robolearn.practice.reward_cmd import train as train_classifier
    from robolearn.practice.session import PracticeConfig
    from robolearn.practice.session import run as practice
    from robolearn.vector import collect_scripted

    out = args.out / ("arm" if tuple(args.cameras) == ("front",)
                      else "arm_" + "_".join(args.cameras))
    out.mkdir(parents=True, exist_ok=True)
    demos = out / "demos.zarr"
    if not demos.exists():
        collect_scripted(ARM, str(demos), 10, 1, seed=10_000, progress=False).close()
    clf = _classifier_dir(args) / "model"
    if not (clf / "classifier.json").exists():
        classifier(args)
    seed = args.seeds[0]
    cams = [f"observation.images.{c}" for c in args.cameras]
    rounds, stores = [], []
    for r in range(args.rounds):
        run_dir = out / f"seed{seed}" / f"round{r}"
        if r > 0:
            clf = out / f"seed{seed}" / f"classifier{r}"
            if not (clf / "classifier.json").exists():
                train_classifier(RewardTrainConfig(
                    store=str(_classifier_dir(args) / "frames.zarr"), output=str(clf),
                    holdout=args.episodes // 4, reviewed=[str(p) for p in stores],
                    classifier=ClassifierConfig(cameras=cams)))
        takeover = (["teleop=expert", f"teleop_config.p={args.takeover_p}",
                     f"teleop_config.hold={args.takeover_hold}"]
                    if args.takeover_p > 0 else [])
        if not (run_dir / "actor0" / "actor.json").exists():
            last = r == args.rounds - 1 and args.final_steps
            cfg = PracticeConfig(
                output=str(run_dir), env=ARM, actors=1,
                env_steps=args.final_steps if last else args.steps,
                time_scale=1.0, policy="rlpd", dataset=str(demos), seed=seed,
                learner_args=ARM_LEARNER,
                actor_args=[f"robot.cameras=[{','.join(args.cameras)}]",
                            "max_episode_steps=150",
                            "observations=[observation.state,observation.environment_state]",
                            f"reward_classifier={clf}", *takeover])
            if practice(cfg):
                raise SystemExit("arm practice failed")
        store_path = run_dir / "actor0" / "episodes.zarr"
        stores.append(store_path)
        rounds.append({"round": r, "classifier": str(clf),
                       "classifier_eval": json.loads((clf / "eval.json").read_text()),
                       **_arm_round(store_path, args.window)})
    return {"seed": seed, "rounds": rounds, "learner": ARM_LEARNER, "cameras": args.cameras,
            "takeover_p": args.takeover_p, "takeover_hold": args.takeover_hold,
            "steps_per_round": args.steps, "final_round_steps": args.final_steps}


def _arm_round(store_path: Path, window: int) -> dict[str, Any]:
    """Success against env steps over episodes no takeover touched; false positives (the
    classifier ended an episode the simulator does not call a success)."""
    from data import EpisodeStore

    rows, steps = [], 0
    with EpisodeStore.open(store_path, "r") as store:
        for info in store.infos():
            steps += info.length
            rows.append({"steps": steps, "success": bool(info.success),
                         "assisted": bool(info.sources.get("intervention", 0)),
                         "short": info.length < 150 and not info.success})
    auto = [r for r in rows if not r["assisted"]]
    curve = [{"env_steps": auto[i]["steps"],
              "success_rate": float(np.mean([r["success"] for r in auto[max(0, i - window + 1):
                                                                        i + 1]]))}
             for i in range(window - 1, len(auto), window)]
    last = auto[-window:]
    return {"episodes": len(rows), "assisted": len(rows) - len(auto), "env_steps": steps,
            "autonomous_successes": sum(r["success"] for r in auto),
            "assisted_successes": sum(r["success"] for r in rows if r["assisted"]),
            "false_positive_endings": sum(r["short"] for r in rows),
            "last_window_success": float(np.mean([r["success"] for r in last])) if last else 0.0,
            "window": window, "curve": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["fastrlap", "actors", "link", "kill", "classifier",
                                    "rc_car", "arm"])
    p.add_argument("--episodes", type=int, default=24, help="labelled arm episodes")
    p.add_argument("--out", type=Path, default=Path("outputs/bench_practice"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=24_000)
    p.add_argument("--time-scale", type=float, default=4.0)
    p.add_argument("--reps", type=int, default=100, help="weight versions per size (link)")
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--kill-every", type=float, default=4.0, help="s of practice between kills")
    p.add_argument("--cameras", nargs="+", default=["front"], help="the classifier's (arm)")
    p.add_argument("--rounds", type=int, default=1, help="classifier rounds (arm)")
    p.add_argument("--takeover-p", type=float, default=0.0,
                   help="the expert's takeover probability a step (arm)")
    p.add_argument("--takeover-hold", type=int, default=60, help="steps a takeover lasts (arm)")
    p.add_argument("--final-steps", type=int, default=0,
                   help="env steps of the last round (arm; 0: --steps)")
    p.add_argument("--window", type=int, default=20, help="episodes per success point (arm)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from bench.practice_link import kill, link  # (they import this module's settings)

    t0 = time.time()
    report = {"fastrlap": fastrlap, "link": link, "kill": kill, "actors": actors,
              "classifier": classifier, "rc_car": rc_car, "arm": arm}[args.what](args)
    report["wall_s"] = time.time() - t0
    (args.out / f"{args.what}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
