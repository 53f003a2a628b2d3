"""Simulation benchmarks (issue 3), ratios against baselines measured in the same run:

1. Env step overhead: ``env.step`` steps/s for the car and the arm (state observations) against
   a bare loop of ``n_substeps`` ``mujoco.mj_step`` calls on the same model replaying the same
   controls (target: at most 1.3x); the same with a 64x64 camera; robosuite Lift beside them.
2. Vectorised throughput: total steps/s of 1, 2 and 4 environments in worker processes, against
   one environment stepped in-process.
3. Scripted experts: success over N seeded episodes per task (target: at least 98% of 100).

    .venv/bin/python -m bench.sim [--quick] [--episodes 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from typing import Any

import numpy as np

import sim  # noqa: F401  (chooses the headless GL backend before mujoco is imported)
from robolearn.env import ENVS, make_env
from robolearn.vector import make_vector_env


def overhead(env_id: str, steps: int, rounds: int = 3, **robot_kwargs: Any) -> dict[str, float]:
    """Best-of-``rounds`` env steps/s and bare mj_step-loop steps/s replaying the same ctrls."""
    import mujoco

    kw = ENVS[env_id]
    env = make_env(**{**kw, "max_steps": 10**9,
                      "robot_kwargs": {**kw.get("robot_kwargs", {}), **robot_kwargs}})
    robot: Any = env.robot
    env.reset(seed=0)
    actions = [env.expert_action() for _ in range(1)]
    for _ in range(steps):  # the expert's actions, recorded first: time the env, not the expert
        actions.append(env.expert_action())
        env.step(actions[-1])
    m, d, n = robot.model, robot.data, robot.n_substeps
    env.reset(seed=0)
    ctrls = []
    for a in actions:
        robot.act(a)
        ctrls.append(d.ctrl.copy())
    t_env = t_bare = float("inf")
    for _ in range(rounds):  # alternate and keep the best: robust to other load on the machine
        env.reset(seed=0)
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        t_env = min(t_env, time.perf_counter() - t0)
        env.reset(seed=0)
        t0 = time.perf_counter()
        for c in ctrls:
            d.ctrl[:] = c
            for _ in range(n):
                mujoco.mj_step(m, d)
        t_bare = min(t_bare, time.perf_counter() - t0)
    env.close()
    k = len(actions)
    return {"env": k / t_env, "bare": k / t_bare, "ratio": t_env / t_bare}


def vector_throughput(env_id: str, counts: tuple[int, ...], seconds: float,
                      **robot_kwargs: Any) -> dict[int, float]:
    kw = {**ENVS[env_id], "robot_kwargs": {**ENVS[env_id].get("robot_kwargs", {}),
                                           **robot_kwargs}}
    env = make_env(**kw)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.robot.action_bounds
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(rng.uniform(low, high))
        n += 1
        if term or trunc:
            env.reset()
    out = {0: n / (time.perf_counter() - t0)}  # 0: in-process, the baseline
    env.close()
    for k in counts:
        envs = make_vector_env(env_id, k, robot_kwargs=kw["robot_kwargs"])
        envs.reset(seed=list(range(k)))
        envs.step(np.stack([rng.uniform(low, high) for _ in range(k)]))  # warm up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            envs.step(np.stack([rng.uniform(low, high) for _ in range(k)]))
            n += k
        out[k] = n / (time.perf_counter() - t0)
        envs.close()
    return out


def experts(episodes: int) -> dict[str, dict[str, float]]:
    from sim.arm.expert_eval import evaluate
    from sim.car.__main__ import driver_success_rate

    out: dict[str, dict[str, float]] = {}
    for track in ("oval", "chicane", "technical"):
        r = driver_success_rate(track, episodes)
        out[f"car {track} (lap, no wall contact)"] = {"success": r["success_rate"],
                                                       "length": r.get("mean_lap_time", 0.0)}
    for task in ("arm_reach", "arm_lift", "arm_bin"):
        r = evaluate(task, episodes)
        out[f"arm {task.removeprefix('arm_')}"] = {"success": r["success_rate"],
                                                   "length": r["mean_length"]}
    if importlib.util.find_spec("robosuite") is not None:
        from sim.robosuite_expert import measure

        r = measure(episodes)
        out["robosuite Lift"] = {"success": r["success_rate"], "length": r["mean_length"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and episodes")
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    steps = 300 if args.quick else 2000
    episodes = 10 if args.quick else args.episodes
    print(f"env step overhead vs a bare mj_step loop ({steps} steps, best of 3)")
    rows = [("car oval, state", "robolearn/SimCar-v0", {}),
            ("car oval, 64x64 camera", "robolearn/SimCar-v0", {"camera": True}),
            ("arm bin, state", "robolearn/SimArmBin-v0", {}),
            ("arm bin, 64x64 front camera", "robolearn/SimArmBin-v0", {"cameras": ["front"]})]
    if importlib.util.find_spec("robosuite") is not None:
        rows.append(("robosuite Lift, state", "robolearn/RobosuiteLift-v0", {}))
    for name, env_id, kw in rows:
        r = overhead(env_id, steps if "robosuite" not in name else steps // 4, **kw)
        print(f"  {name:30s} {r['env']:8.0f} steps/s   bare loop {r['bare']:8.0f} steps/s   "
              f"ratio {r['ratio']:.2f}x")
    for label_, kw in (("state", {}), ("64x64 camera", {"camera": True})):
        print(f"vectorised car ({label_}, random actions): worker processes vs one env "
              "in-process")
        v = vector_throughput("robolearn/SimCar-v0", (1, 2, 4), 2.0 if args.quick else 5.0,
                              **kw)
        for k, rate in v.items():
            label = "in-process (baseline)" if k == 0 else f"{k} env(s) in processes"
            print(f"  {label:30s} {rate:8.0f} steps/s   {rate / v[0]:.2f}x")
    print(f"scripted experts, {episodes} seeded episodes per task")
    for name, r in experts(episodes).items():
        unit = "s mean lap" if name.startswith("car") else "steps mean length"
        print(f"  {name:36s} success {100 * r['success']:5.1f}%   {r['length']:.1f} {unit}")


if __name__ == "__main__":
    main()
