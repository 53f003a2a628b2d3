"""Deployment timing: the control loop at the robot's rate with the recipes' MLP and diffusion
policies, inference inline ("sync") or planned off the control path ("async"), with torch's
default CPU threads or one thread. Ratios are against the baseline measured in the same run:
sync inference with torch's default threads, per policy.

Each run is ``robolearn deploy``'s path: the same inference set-up (:func:`make_inference`, warm-up
included), the same control loop with the safety filter and the watchdog, every step recorded
into an episode store. The policies are untrained (timing does not depend on the weights), built
with the sizes of ``configs/arm_lift_{mlp,diffusion}.yaml`` on the features and statistics of a
tiny store recorded on the robot first (its scripted expert where the robot has an env, else the
robot holding still), under the unscored task (no episode ends early).

    .venv/bin/python -m bench.deploy_timing [--robot sim_arm] [--steps 1000] [--fps 30]
        [--policies mlp diffusion] [robot.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

import sim  # noqa: F401  (headless GL backend before mujoco loads)
from data import EpisodeStore, Source
from policies import make_policy
from policies.async_inference import AsyncChunks
from policies.normalize import compute_stats
from robolearn.deploy import make_inference
from robolearn.env import ENVS, RobotEnv
from robolearn.loop import ControlLoop, LoopConfig, create_store
from robolearn.robot import make_robot, robot_config_class
from robolearn.task import make_task
from robolearn_core.config import load_config

RECIPES = Path(__file__).resolve().parents[1] / "configs"
# (inference, threads; 0: default); "process": async with the planner in a child process
MODES = [("sync", 0), ("sync", 1), ("async", 0), ("async", 1), ("process", 1)]


def robot_settings(name: str, overrides: list[str]) -> dict[str, Any]:
    """``robot.KEY=VALUE`` arguments as the robot's typed config (checked like deploy's)."""
    keys = [o.removeprefix("robot.") for o in overrides]
    config: Any = load_config(robot_config_class(name), None, keys)
    plain = OmegaConf.to_container(OmegaConf.structured(config))  # JSON data: store metadata
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def tiny_store(name: str, settings: dict[str, Any], path: Path) -> EpisodeStore:
    """Two short episodes on the robot: its scripted expert where an env drives it (the arm:
    lift), else holding still through the control loop."""
    from robolearn.experts import EXPERTS

    env_id = next((e for e, kw in ENVS.items() if kw["robot"] == name and "Lift" in e), None) \
        or next((e for e, kw in ENVS.items() if kw["robot"] == name), None)
    if env_id is not None and name in EXPERTS:
        from robolearn.vector import collect_scripted

        kwargs = {**ENVS[env_id].get("robot_kwargs", {}), **settings}
        return collect_scripted(env_id, str(path), episodes=2, num_envs=1, progress=False,
                                max_steps=40, robot_kwargs=kwargs)
    env = RobotEnv(make_robot(name, **settings), make_task("unscored"), max_steps=40)
    store = create_store(str(path), env, None, {})
    with store.recorder(task="hold") as rec:
        loop = ControlLoop(env, LoopConfig(), rec)
        for seed in range(2):
            loop.run_episode(lambda obs: env.robot.hold_action(), seed=seed,
                             source=Source.SCRIPTED)
    env.close()
    return store


def recipe_policy(kind: str, store: EpisodeStore, robot_keys: set[str]) -> Any:
    """An untrained policy of the recipe's size on the robot's own observations."""
    keys = [k for k in store.features if k.startswith("observation.") and k in robot_keys]
    features = {k: store.features[k] for k in [*keys, "action"]}
    stats = compute_stats(store, [*keys, "action"])
    recipe = OmegaConf.to_container(OmegaConf.load(RECIPES / f"arm_lift_{kind}.yaml"))
    assert isinstance(recipe, dict)
    return make_policy(kind, features, stats, device="cpu", **recipe.get("policy_config", {}))


class Timed:
    """The inference as the loop calls it, with the time of each call in the loop's thread."""

    def __init__(self, inference: Any) -> None:
        self.inference, self.ms = inference, list[float]()

    def reset(self, seed: int | None = None) -> None:
        self.inference.reset(seed=seed)

    def select_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        t0 = time.perf_counter()
        action: np.ndarray = self.inference.select_action(obs)
        self.ms.append(1000 * (time.perf_counter() - t0))
        return action


def measure(policy: Any, name: str, settings: dict[str, Any], mode: str, threads: int,
            fps: float, steps: int, out: Path, default_threads: int) -> dict[str, float]:
    torch.set_num_threads(threads or default_threads)
    env = RobotEnv(make_robot(name, **settings), make_task("unscored"), max_steps=steps)
    try:
        inference = make_inference(policy, "off" if mode == "sync" else "on", fps,
                                   threads=threads, hold=env.robot.hold_action, stall_s=2.0,
                                   process=mode == "process")
        timed = Timed(inference)
        store = create_store(str(out), env, None, {})
        with store, store.recorder(task="timing", background=True) as rec:  # as deploy
            loop = ControlLoop(env, LoopConfig(fps=fps, max_steps=steps), rec)
            result = loop.run_episode(timed.select_action, seed=0)
        calls = timed.ms
        if isinstance(inference, AsyncChunks):
            plans, starved = list(inference.stats.plan_ms), inference.stats.starved
            inference.close()
        else:
            plans, starved = list(inference.plan_ms), 0
    finally:
        env.close()
    return {"steps": result.steps, "p99_late_ms": result.timing["p99_late_ms"],
            "max_late_ms": result.timing["max_late_ms"], "overruns": result.timing["overruns"],
            "plan_ms": float(np.mean(plans)) if plans else float("nan"),
            "in_loop_p99_ms": float(np.percentile(calls, 99)), "starved": starved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="sim_arm", help="registered robot name")
    parser.add_argument("--steps", type=int, default=1000, help="control steps per run")
    parser.add_argument("--fps", type=float, default=30.0, help="control rate, Hz")
    parser.add_argument("--policies", nargs="+", default=["mlp", "diffusion"],
                        choices=["mlp", "diffusion"])
    parser.add_argument("--modes", nargs="+", default=[f"{m}:{t}" for m, t in MODES],
                        metavar="MODE:THREADS", help="inference modes to run (sync, async, "
                        "process) with torch threads (0: default); the first is the baseline")
    parser.add_argument("settings", nargs="*", metavar="robot.KEY=VALUE",
                        help="the robot's config fields (robot.port=/dev/pts/3)")
    args = parser.parse_args()
    settings = robot_settings(args.robot, args.settings)
    modes = [(m.partition(":")[0], m.partition(":")[2]) for m in args.modes]
    if any(m not in ("sync", "async", "process") or not t.isdigit() for m, t in modes):
        parser.error(f"--modes: each is sync, async or process, then :THREADS, got {args.modes}")
    default_threads = torch.get_num_threads()
    print(f"deploy timing: {args.robot} at {args.fps:g} Hz ({1000 / args.fps:.1f} ms period), "
          f"{args.steps} steps per run; torch default threads = {default_threads}; baseline: "
          f"{modes[0][0]} inference, {int(modes[0][1]) or 'default'} threads")
    with tempfile.TemporaryDirectory() as tmp:
        robot_keys = set(make_robot(args.robot, **settings).observation_features)
        store = tiny_store(args.robot, settings, Path(tmp) / "tiny.zarr")
        for kind in args.policies:
            policy = recipe_policy(kind, store, robot_keys)
            print(f"\n{kind} ({sum(p.numel() for p in policy.parameters()):,} parameters, "
                  f"chunk {policy.config.action_horizon}, executes "
                  f"{policy.config.n_action_steps})")
            print(f"  {'inference':<9} {'threads':>7} {'p99 late ms':>11} {'max late':>8} "
                  f"{'overruns':>8} {'plan ms':>8} {'in-loop p99 ms':>14} {'starved':>7} "
                  f"{'late x':>7} {'plan x':>7}")
            base: dict[str, float] = {}
            for run, (mode, threads_text) in enumerate(modes):
                threads = int(threads_text)
                r = measure(policy, args.robot, settings, mode, threads, args.fps, args.steps,
                            Path(tmp) / f"{kind}-{run}-{mode}-{threads}.zarr", default_threads)
                base = base or r
                late_x = r["p99_late_ms"] / max(base["p99_late_ms"], 1e-3)
                plan_x = r["plan_ms"] / base["plan_ms"]
                print(f"  {mode:<9} {threads or 'default':>7} {r['p99_late_ms']:11.2f} "
                      f"{r['max_late_ms']:8.1f} {r['overruns']:8d} {r['plan_ms']:8.2f} "
                      f"{r['in_loop_p99_ms']:14.2f} {r['starved']:7d} {late_x:7.2f} "
                      f"{plan_x:7.2f}", flush=True)
        store.close()


if __name__ == "__main__":
    main()
