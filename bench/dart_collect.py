"""DART demonstrations (Laskey et al. 2017): the scripted expert drives with noise injected into
what it sends, and each step is recorded with the expert's clean label for the state it reached.

Why: a policy cloned from clean demonstrations has never seen the states its own small errors
lead to (a grasp a few millimetres off, jaws shut on nothing), so it never learned to recover:
the camera-only lift's failures were 250-step timeouts after a missed grasp. With noise in the
executed actions those states are in the data, labelled by an expert that answers from the state
(the arm's teaching settings: re-anchored at the measured joints, ``robolearn.experts
.TEACHER_KWARGS`` without the state phase, whose phase machine stays true because the expert
itself is driving).

    .venv/bin/python -m bench.dart_collect OUT.zarr --episodes 1000 --noise 0.03 --cameras front

Episode ``i`` has seed ``seed + i`` and its own noise stream, whatever the number of workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from typing import Any

import numpy as np

from data.schema import Source
from robolearn.env import ENVS, RobotEnv, make_env
from robolearn.experts import make_expert
from robolearn.loop import ControlLoop, LoopConfig, create_store
from robolearn.vector import _Episode

ENV_ID = "robolearn/SimArmLift-v0"


class NoisyExpert:
    """Sends ``label + noise`` (joints only; the gripper command stays clean) and remembers
    the clean label, which the recorder then stores as the step's action."""

    def __init__(self, env: RobotEnv, noise: float, **expert_kwargs: Any) -> None:
        self.expert = make_expert(env, **expert_kwargs)
        self.noise = noise
        self.low, self.high = env.robot.action_bounds
        self.label: np.ndarray | None = None
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int | None = None) -> None:
        self.expert.reset(seed)
        self.rng = np.random.default_rng([0 if seed is None else seed, 7])

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        label = np.clip(self.expert(obs), self.low, self.high).astype(np.float32)
        self.label = label
        sent = label.copy()
        sent[:-1] += self.rng.normal(0.0, self.noise, len(sent) - 1)
        return np.clip(sent, self.low, self.high).astype(np.float32)


class _LabelledEpisode(_Episode):
    def __init__(self, policy: NoisyExpert) -> None:
        super().__init__()
        self.policy = policy

    def add(self, row: dict[str, np.ndarray], source: Source = Source.SCRIPTED) -> None:
        assert self.policy.label is not None
        super().add({**row, "action": self.policy.label}, source)


class _Worker:
    def __init__(self, env_id: str, overrides: dict[str, Any], noise: float) -> None:
        self.env = make_env(**{**ENVS[env_id], **overrides})
        self.loop = ControlLoop(self.env, LoopConfig(realtime=False))
        self.policy = NoisyExpert(self.env, noise, feedback=True)

    def episode(self, seed: int) -> _Episode:
        ep = _LabelledEpisode(self.policy)
        self.loop.recorder = ep
        self.loop.run_episode(self.policy, seed=seed, source=Source.SCRIPTED)
        out = _Episode()  # without the policy (and its env): what goes back to the writer
        out.rows, out.ending = ep.rows, ep.ending
        return out


_worker: _Worker | None = None


def _start(env_id: str, overrides: dict[str, Any], noise: float) -> None:
    global _worker
    _worker = _Worker(env_id, overrides, noise)


def _run(seed: int) -> _Episode:
    assert _worker is not None
    return _worker.episode(seed)


def collect_dart(path: str, episodes: int, noise: float, cameras: list[str], *,
                 seed: int = 0, workers: int = 2, env_id: str = ENV_ID) -> dict[str, Any]:
    """Record ``episodes`` DART episodes into a new store; returns counts (episodes, expert
    success under the noise, steps)."""
    overrides = {"robot_kwargs": {"cameras": cameras}} if cameras else {}
    probe = make_env(**{**ENVS[env_id], **overrides})
    task = probe.task.description or probe.task.name
    store = create_store(path, probe, env_id, overrides)
    probe.close()
    ok = steps = 0
    with multiprocessing.get_context("forkserver").Pool(
            workers, _start, (env_id, overrides, noise)) as pool, \
            store.recorder(task=task, source=Source.SCRIPTED) as rec:
        for ep in pool.imap(_run, range(seed, seed + episodes)):
            if ep.ending is None:
                continue
            for row, source in ep.rows:
                rec.add(row, source=source)
            rec.end_episode(**ep.ending)
            ok += bool(ep.ending.get("success"))
            steps += len(ep.rows)
    store.close()
    return {"episodes": episodes, "expert_success_under_noise": ok / episodes, "steps": steps,
            "noise": noise}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.03, help="joint-target noise std, rad")
    ap.add_argument("--cameras", nargs="*", default=["front"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(collect_dart(args.out, args.episodes, args.noise, args.cameras, seed=args.seed,
                       workers=args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
