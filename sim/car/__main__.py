"""``python -m sim.car [--tracks oval chicane technical] [--episodes 100] [--speed V]``:
the scripted driver's lap success rate (a lap without touching a wall) per track.
``python -m sim.car --bench``: env steps/s against a bare loop of ``n_substeps`` mj_step calls
on the same model, without and with the 64x64 camera."""

from __future__ import annotations

import argparse
import time
from typing import Any, cast

import numpy as np

from robolearn.env import ENVS, make_env
from sim.car.driver import PurePursuitDriver
from sim.car.robot import SimCar
from sim.car.tasks import LapTask
from sim.car.tracks import available_tracks


def env_kwargs(track: str) -> dict[str, Any]:
    """make_env kwargs of the registered env for ``track`` (its max_steps), else defaults."""
    for kw in ENVS.values():
        if kw.get("robot") == "sim_car" and kw.get("robot_kwargs", {}).get("track") == track:
            return {**kw, "robot_kwargs": dict(kw["robot_kwargs"])}
    return {"robot": "sim_car", "task": "car_laps", "max_steps": 2000,
            "robot_kwargs": {"track": track}}


def driver_success_rate(track: str, episodes: int = 100, seed: int = 0,
                        **driver_kwargs: Any) -> dict[str, Any]:
    """Run ``episodes`` seeded episodes of the pure-pursuit driver; an episode succeeds when it
    completes a lap before any wall contact (and within the env's max_steps)."""
    env = make_env(**env_kwargs(track))
    robot, task = cast(SimCar, env.robot), cast(LapTask, env.task)
    driver = PurePursuitDriver.for_robot(robot, **driver_kwargs)
    ok, lap_times, steps, t0 = 0, [], 0, time.perf_counter()
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        driver.reset()
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(driver(obs))
            steps += 1
            done = term or trunc or info["reward_terms"]["collision"] > 0 or info["success"]
        if info["success"] and task.collisions == 0:
            ok += 1
            lap_times.append(task.lap_times[0])
    env.close()
    return {"track": track, "episodes": episodes, "success_rate": ok / episodes,
            "mean_lap_time": float(np.mean(lap_times)) if lap_times else float("nan"),
            "steps_per_s": steps / (time.perf_counter() - t0)}


def step_overhead(track: str = "oval", camera: bool = False, steps: int = 1000,
                  rounds: int = 3) -> dict[str, float]:
    """Env steps/s (driving the scripted driver's actions, precomputed) and a bare mj_step loop's
    control steps/s on the same model; ``ratio`` = bare / env time per step (>= 1)."""
    import mujoco

    env = make_env(**{**env_kwargs(track), "robot_kwargs": {"track": track, "camera": camera}})
    robot = cast(SimCar, env.robot)
    driver = PurePursuitDriver.for_robot(robot)
    obs, _ = env.reset(seed=0)
    actions = []
    for _ in range(steps):  # record actions first: time the env, not the driver
        a = driver(obs).astype(np.float32)
        actions.append(a)
        obs, *_ = env.step(a)
    m, d, n = robot.model, robot.data, robot.n_substeps
    env.reset(seed=0)  # the controls the env sends, replayed by the bare loop
    ctrls = []
    for a in actions:
        robot.act(a)
        ctrls.append(d.ctrl.copy())
    t_env = t_bare = float("inf")
    for _ in range(rounds):  # alternate, keep the best: robust to other load on the machine
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
    return {"env_steps_per_s": steps / t_env, "bare_steps_per_s": steps / t_bare,
            "ratio": t_env / t_bare}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tracks", nargs="+", default=available_tracks())
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=None, help="driver cruise speed, m/s")
    p.add_argument("--bench", action="store_true", help="time env.step against bare mj_step")
    args = p.parse_args()
    if args.bench:
        for track in args.tracks:
            for camera in (False, True):
                r = step_overhead(track, camera)
                print(f"{track:<10} camera={camera!s:<5} env {r['env_steps_per_s']:.0f} "
                      f"steps/s  bare mj_step loop {r['bare_steps_per_s']:.0f} steps/s  "
                      f"ratio {r['ratio']:.2f}")
        return
    kw = {} if args.speed is None else {"speed": args.speed}
    for track in args.tracks:
        r = driver_success_rate(track, args.episodes, args.seed, **kw)
        print(f"{r['track']:<10} success {r['success_rate']:.0%} of {r['episodes']}  "
              f"mean lap {r['mean_lap_time']:.2f} s  ({r['steps_per_s']:.0f} env steps/s)")


if __name__ == "__main__":
    main()
