"""HIL-SERL practice on the emulated SO-101: ``python -m bench.practice_so101 [--rounds R] ...``

The arm practises through the real path, in real time: six STS3215 emulators on a
pseudo-terminal at 1 Mbps driven by lerobot's ``FeetechMotorsBus`` inside robolearn's ``so101``
driver (calibrated through lerobot's flow, the emulator's hand doing the person's part), the
front and wrist cameras through lerobot's ``ZMQCamera`` (JPEG over a socket), the actor's
control loop at 30 Hz, the learner (RLPD) in its own process over gRPC. What a real arm's
HIL-SERL session has, and how it is played here:

- **the cube's position**: a real arm senses none, so the policy observes the joints and the
  cube as the front camera sees it (``robot.cube_camera=front``, :mod:`sim.arm.cube_finder`);
- **the reward**: HIL-SERL's success classifier on the front and wrist frames
  (``bench.practice classifier``'s labelled frames; no task reward reaches the learner);
- **the person who puts the cube back and says whether it worked**: the emulator's
  experimenter (:class:`hardware.emulators.scene.Experimenter`, the actor's ``scene``): after the
  arm homes it puts the cube where the simulated lift's layout of that episode says, and judges
  the lift from the emulator's simulation, which the driver never sees;
- **the person's interventions** (a leader arm): the scripted expert of the mirrored scene takes
  over with probability ``--takeover-p`` a step for ``--takeover-hold`` steps; those steps are
  marked and join RLPD's offline half;
- **the review rounds**: after each round its episodes, with the experimenter's verdicts, are
  added to the classifier's training (``reward train reviewed=``) and the next round practises
  afresh with it, as ``bench.practice arm`` does on the simulated arm.

The 10 demonstrations (RLPD's offline half) are the scripted expert's on the simulated arm with
the same observation (``cube_camera=front``). Success is the experimenter's, over the episodes
no takeover touched. Writes ``OUT/so101/so101.json`` and ``docs/practice_so101.png`` (with the
``--sim`` run's curve when there is one).

``--sim``: the same recipe, observation, classifier and budgets on the simulated arm in real time
(the scripted expert taking over, the simulator judging), the baseline for the emulated arm:
``OUT/so101_sim/so101.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import sim  # noqa: F401  (headless GL before mujoco)
from bench.practice import ARM, ARM_LEARNER, _arm_round, _classifier_dir, classifier

SIZE = 64  # camera frames, px (the classifier's and the cube finder's)
CAMERAS = ["front", "wrist"]
POLICY_OBS = ["observation.state", "observation.environment_state"]


class ExperimenterTakeover:
    """The experimenter at a leader arm: the scripted expert of the mirrored scene, taking over
    by the simulated teacher's random rule (a teleop device for the actor's loop)."""

    def __init__(self, experimenter: Any, p: float, hold: int, seed: int) -> None:
        from robolearn.teacher import TeacherConfig, TeacherTakeover

        self.x = experimenter
        self.inner = TeacherTakeover(experimenter.sim_env, TeacherConfig(
            rule="random", p=p, hold=hold, seed=seed))
        self.episodes = 0

    def reset(self, seed: int | None = None) -> None:
        self.episodes += 1
        self.inner.reset(self.episodes if seed is None else seed)

    def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        self.x.sync()  # the mirror now holds the emulator's state
        return self.inner.get_action(self.x.sim_env._obs())

    @property
    def steps(self) -> int:
        return int(self.inner.steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/bench_practice"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=24, help="labelled episodes (classifier)")
    p.add_argument("--rounds", type=int, default=4, help="classifier review rounds")
    p.add_argument("--steps", type=int, default=8000, help="env steps of each round but the last")
    p.add_argument("--final-steps", type=int, default=16000, help="env steps of the last round")
    p.add_argument("--takeover-p", type=float, default=0.005)
    p.add_argument("--takeover-hold", type=int, default=150)
    p.add_argument("--window", type=int, default=20, help="episodes per success point")
    p.add_argument("--sim", action="store_true",
                   help="the same recipe on the simulated arm (baseline for the emulated one)")
    args = p.parse_args(argv)
    args.cameras = CAMERAS
    logging.getLogger("hardware").setLevel(logging.ERROR)
    import tempfile

    from hardware.emulators.rig import calibrated_so101
    from hardware.emulators.scene import Experimenter
    from robolearn.practice.actor import Actor
    from robolearn.vector import collect_scripted

    out = args.out / "so101"
    out.mkdir(parents=True, exist_ok=True)
    demos = out / "demos.zarr"  # shared by both arms
    if not demos.exists():
        collect_scripted(ARM, str(demos), 10, 1, seed=10_000, progress=False,
                         robot_kwargs={"cube_camera": "front", "cameras": ["front"]}).close()
    labelled = _classifier_dir(args)
    if not (labelled / "model" / "classifier.json").exists():
        classifier(args)
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        if args.sim:  # the same recipe and observation on the simulated arm (it judges itself)
            out = args.out / "so101_sim"
            out.mkdir(parents=True, exist_ok=True)
            robot: dict[str, Any] = {"cameras": CAMERAS, "cube_camera": "front"}
            env, extra, scenes = ARM, {"teleop": "expert", "teleop_config": {
                "p": args.takeover_p, "hold": args.takeover_hold}}, None

            def actor_for(r: int, cfg: Any) -> Any:
                return Actor(cfg)
        else:
            cal = tempfile.mkdtemp(prefix="robolearn_so101_practice_")
            rig = stack.enter_context(calibrated_so101(cal, "practice", CAMERAS, SIZE, SIZE))
            experimenter = scenes = Experimenter(rig.plant)
            stack.callback(experimenter.close)
            robot = {"port": rig.port, "calibration_dir": cal, "id": "practice",
                     "cameras": rig.cameras, "capture_width": SIZE, "capture_height": SIZE,
                     "camera_width": SIZE, "camera_height": SIZE, "home_s": 1.0,
                     "cube_camera": "front"}
            env, extra = "robolearn/SO101-v0", {}

            def actor_for(r: int, cfg: Any) -> Any:
                takeover = ExperimenterTakeover(experimenter, args.takeover_p,
                                                args.takeover_hold, args.seed * 1000 + r)
                return Actor(cfg, teleop=takeover, scene=experimenter)
        rounds = _rounds(args, out, demos, labelled, env, robot, extra, actor_for)
    report = {"seed": args.seed, "arm": "simulated" if args.sim else "emulated SO-101",
              "rounds": rounds, "learner": ARM_LEARNER, "window": args.window,
              "cameras": CAMERAS, "takeover_p": args.takeover_p,
              "takeover_hold": args.takeover_hold, "steps_per_round": args.steps,
              "final_round_steps": args.final_steps, "wall_s": time.time() - t0,
              "experimenter_scenes": None if scenes is None else scenes.placed}
    (out / "so101.json").write_text(json.dumps(report, indent=1))
    other = args.out / ("so101" if args.sim else "so101_sim") / "so101.json"
    both = [report] + ([json.loads(other.read_text())] if other.exists() else [])
    plot(sorted(both, key=lambda r: r["arm"] == "simulated"), Path("docs/practice_so101.png"))
    return 0


def _rounds(args: argparse.Namespace, out: Path, demos: Path, labelled: Path, env: str,
            robot: dict[str, Any], extra: dict[str, Any], actor_for: Any
            ) -> list[dict[str, Any]]:
    """The practice rounds, each with the classifier retrained on the rounds before it."""
    from policies.reward_classifier import ClassifierConfig
    from robolearn.practice.actor import ActorConfig
    from robolearn.practice.reward_cmd import RewardTrainConfig
    from robolearn.practice.reward_cmd import train as train_classifier
    from robolearn.practice.session import start_learner

    cams = [f"observation.images.{c}" for c in CAMERAS]
    rounds: list[dict[str, Any]] = []
    stores: list[Path] = []
    for r in range(args.rounds):
        run_dir = out / f"seed{args.seed}" / f"round{r}"
        clf = labelled / "model"
        if r > 0:
            clf = out / f"seed{args.seed}" / f"classifier{r}"
            if not (clf / "classifier.json").exists():
                train_classifier(RewardTrainConfig(
                    store=str(labelled / "frames.zarr"), output=str(clf),
                    holdout=args.episodes // 4, reviewed=[str(s) for s in stores],
                    classifier=ClassifierConfig(cameras=cams)))
        store = run_dir / "actor0" / "episodes.zarr"
        if not (run_dir / "actor0" / "actor.json").exists():
            rt = time.time()
            learner, address = start_learner(
                [f"output={run_dir / 'learner'}", "address=127.0.0.1:0",
                 f"seed={args.seed}", f"dataset={demos}", *ARM_LEARNER])
            try:
                cfg = ActorConfig(learner=address, env=env, robot=robot,
                                  output=str(run_dir / "actor0"),
                                  env_steps=args.final_steps if r == args.rounds - 1
                                  else args.steps,
                                  max_episode_steps=150, seed=args.seed * 100 + r,
                                  observations=POLICY_OBS,
                                  reward_classifier=str(clf), **extra)
                if actor_for(r, cfg).run():
                    raise SystemExit(f"round {r}: the actor failed")
            finally:
                learner.send_signal(signal.SIGTERM)
                learner.wait(timeout=120)
            (run_dir / "wall.json").write_text(json.dumps({"wall_s": time.time() - rt}))
        stores.append(store)
        row = {"round": r, "classifier": str(clf),
               "classifier_eval": json.loads((clf / "eval.json").read_text()),
               **json.loads((run_dir / "wall.json").read_text()),
               "actor": json.loads((run_dir / "actor0" / "actor.json").read_text()),
               **_arm_round(store, args.window)}
        rounds.append(row)
        print(json.dumps({k: row[k] for k in ("round", "episodes", "assisted",
                                              "autonomous_successes", "false_positive_endings",
                                              "last_window_success", "wall_s")}), flush=True)
    return rounds


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    """Success of the autonomous episodes (per window of episodes) against the session's env
    steps, one line per arm (rounds joined, their boundaries marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for report, style in zip(reports, ("o-", "s--"), strict=False):
        offset, xs, ys = 0, [], []
        for row in report["rounds"]:
            xs += [(offset + c["env_steps"]) / 1000 for c in row["curve"]]
            ys += [c["success_rate"] for c in row["curve"]]
            offset += row["env_steps"]
            ax.axvline(offset / 1000, color="0.85", lw=0.8)
        ax.plot(xs, ys, style, ms=3, label=f"{report['arm']} (seed {report['seed']})")
    ax.set_xlabel("env steps of the session, thousands (30 Hz: 1,000 steps = 33 s); "
                  "grey: a new round")
    ax.set_ylabel(f"lift success, autonomous episodes\n(windows of {reports[0]['window']})")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left")
    ax.set_title("HIL-SERL practice, camera-found cube, learned reward")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
