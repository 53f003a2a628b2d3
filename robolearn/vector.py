"""Several environments in parallel processes (gymnasium's ``AsyncVectorEnv``), and scripted
data collection from them into one episode store.

Each worker process owns one robot and its scripted expert (``RobotEnv.expert_action``); only
observations and actions cross process boundaries. The store has one writer, the main process,
which buffers each environment's current episode and commits it when it ends.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from data.schema import Source
from data.store import EpisodeStore
from robolearn.env import ENVS, RobotEnv, make_env
from robolearn.loop import create_store
from robolearn_core.progress import track


def _make(env_id: str, overrides: dict[str, Any]) -> RobotEnv:
    if env_id not in ENVS:
        raise KeyError(f"unknown environment {env_id!r}; known: {', '.join(ENVS)}")
    return make_env(**{**ENVS[env_id], **overrides})


def make_vector_env(env_id: str, num_envs: int, *, asynchronous: bool = True,
                    **overrides: Any) -> VectorEnv:
    """``num_envs`` copies of a registered environment, in worker processes when
    ``asynchronous``. Finished sub-environments reset in the same step (the returned
    observation is the new episode's first; the last one is in ``info["final_obs"]``)."""
    fns = [functools.partial(_make, env_id, overrides) for _ in range(num_envs)]
    if asynchronous:
        return AsyncVectorEnv(fns, context="forkserver", autoreset_mode=AutoresetMode.SAME_STEP)
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def collect_scripted(env_id: str, store_path: str, episodes: int, num_envs: int = 2, *,
                     seed: int = 0, progress: bool = True, **overrides: Any) -> EpisodeStore:
    """Record ``episodes`` scripted-expert episodes of ``env_id`` into a new store, running
    ``num_envs`` environments in parallel. Returns the store, open for writing."""
    probe = _make(env_id, overrides)
    task = probe.task.description or probe.task.name
    store = create_store(store_path, probe, env_id, overrides)
    probe.close()
    envs: Any = make_vector_env(env_id, num_envs, **overrides)
    try:
        obs, _ = envs.reset(seed=[seed + i for i in range(num_envs)])
        buffers: list[list[tuple[dict[str, np.ndarray], np.ndarray, float]]] = \
            [[] for _ in range(num_envs)]
        done = 0
        with store.recorder(task=task, source=Source.SCRIPTED) as rec, \
                _bar(episodes, progress) as bar:
            while done < episodes:
                actions = np.stack(envs.call("expert_action"))
                nxt, reward, term, trunc, info = envs.step(actions)
                for i in range(num_envs):
                    step_info = info.get("final_info", info) if (term[i] or trunc[i]) else info
                    sent = step_info["action_sent"][i]
                    buffers[i].append(({k: v[i] for k, v in obs.items()}, sent,
                                       float(reward[i])))
                    if (term[i] or trunc[i]) and done < episodes:
                        for o, a, r in buffers[i]:
                            rec.add({**o, "action": a, "next.reward": np.float32(r)})
                        final = info.get("final_info", info)  # SAME_STEP: info is reset's
                        rec.end_episode(success=bool(final["success"][i]), env_index=i,
                                        terminated=bool(term[i]))  # vs cut by the step limit
                        done += 1
                        bar(1)
                    if term[i] or trunc[i]:
                        buffers[i] = []
                obs = nxt
    finally:
        envs.close()
    return store


class _bar:
    def __init__(self, total: int, enabled: bool) -> None:
        self._it = iter(track(range(total), "collecting episodes", enabled=enabled))
        self._n = 0

    def __enter__(self) -> _bar:
        return self

    def __call__(self, n: int) -> None:
        for _ in range(n):
            next(self._it, None)

    def __exit__(self, *exc: object) -> None:
        for _ in self._it:
            pass
