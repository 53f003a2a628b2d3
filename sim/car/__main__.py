"""``python -m sim.car [--tracks oval chicane technical] [--episodes 100] [--speed V]``:
the scripted driver's lap success rate (a lap without touching a wall) per track.
Step-cost figures are in ``python -m bench.sim``."""

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tracks", nargs="+", default=available_tracks())
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=None, help="driver cruise speed, m/s")
    args = p.parse_args()
    kw = {} if args.speed is None else {"speed": args.speed}
    for track in args.tracks:
        r = driver_success_rate(track, args.episodes, args.seed, **kw)
        print(f"{r['track']:<10} success {r['success_rate']:.0%} of {r['episodes']}  "
              f"mean lap {r['mean_lap_time']:.2f} s  ({r['steps_per_s']:.0f} env steps/s)")


if __name__ == "__main__":
    main()
