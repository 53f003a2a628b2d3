"""Several environments in parallel processes (gymnasium's ``AsyncVectorEnv``), and scripted
data collection from them into one episode store.

Scripted collection runs each episode through the control loop (:class:`ControlLoop`, as
``collect``, ``eval``, ``deploy`` and practice do: safety filter, the sent action recorded, the
robot stopped at the end) in a pool of worker processes. Each worker owns one robot and its
scripted expert (``RobotEnv.expert_action``); episode ``i`` has seed ``seed + i`` whichever
worker runs it, so the store is the same for any number of workers (and the same as
``robolearn collect`` records with one). The store has one writer, the main process, which
commits the episodes in order as they come back.
"""

from __future__ import annotations

import functools
import multiprocessing
from typing import Any

import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from data.schema import Source
from data.store import EpisodeStore
from robolearn.env import ENVS, RobotEnv, make_env
from robolearn.experts import DartExpert, LabelledRecorder
from robolearn.loop import ControlLoop, LoopConfig, create_store
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


class _Episode:
    """A recorder for one episode in a worker: the loop's rows, kept to send to the writer."""

    def __init__(self) -> None:
        self.rows: list[tuple[dict[str, np.ndarray], Source]] = []
        self.ending: dict[str, Any] | None = None

    @property
    def num_steps(self) -> int:
        return len(self.rows)

    @property
    def in_episode(self) -> bool:
        return True  # one episode from its creation: the loop need not start one

    def start_episode(self) -> None:
        """Nothing to start: rows are kept in memory until the writer takes them."""

    def add(self, row: dict[str, np.ndarray], source: Source = Source.SCRIPTED) -> None:
        self.rows.append((row, source))

    def end_episode(self, success: bool | None = None, **kwargs: Any) -> None:
        self.ending = {"success": success, **kwargs}

    def discard_episode(self) -> None:
        self.rows, self.ending = [], None


class _Worker:
    def __init__(self, env_id: str, overrides: dict[str, Any], dart_noise: float = 0.0) -> None:
        self.env = _make(env_id, overrides)
        self.loop = ControlLoop(self.env, LoopConfig(realtime=False))
        self.dart = DartExpert(self.env, dart_noise) if dart_noise > 0 else None

    def episode(self, seed: int) -> _Episode:
        ep = _Episode()
        run_scripted_episode(self.loop, ep, seed, self.dart)
        return ep


def run_scripted_episode(loop: ControlLoop, recorder: Any, seed: int,
                         dart: DartExpert | None = None) -> None:
    """One scripted episode through ``loop`` into ``recorder``: the env's expert drives, or with
    ``dart`` the noisy DART expert drives and its clean labels are recorded."""
    env = loop.env
    loop.recorder = recorder if dart is None else LabelledRecorder(recorder, dart)
    loop.run_episode(dart or (lambda obs: env.expert_action()), seed=seed,
                     source=Source.SCRIPTED)


_worker: _Worker | None = None  # the pool process's


def _start_worker(env_id: str, overrides: dict[str, Any], dart_noise: float = 0.0) -> None:
    global _worker
    _worker = _Worker(env_id, overrides, dart_noise)


def _run_episode(seed: int) -> _Episode:
    assert _worker is not None
    return _worker.episode(seed)


def collect_scripted(env_id: str, store_path: str, episodes: int, num_envs: int = 2, *,
                     seed: int = 0, progress: bool = True, dart_noise: float = 0.0,
                     **overrides: Any) -> EpisodeStore:
    """Record ``episodes`` scripted-expert episodes of ``env_id`` into a new store, running
    ``num_envs`` worker processes (1: in this process). ``dart_noise`` > 0: DART episodes
    (:class:`robolearn.experts.DartExpert`). Returns the store, open for writing."""
    probe = _make(env_id, overrides)
    task = probe.task.description or probe.task.name
    store = create_store(store_path, probe, env_id, overrides)
    probe.close()
    seeds = [seed + i for i in range(episodes)]
    pool: Any = None
    local: _Worker | None = None
    try:
        if num_envs > 1:
            pool = multiprocessing.get_context("forkserver").Pool(
                num_envs, _start_worker, (env_id, overrides, dart_noise))
            results = pool.imap(_run_episode, seeds)  # in order, as they finish
        else:
            local = _Worker(env_id, overrides, dart_noise)
            results = map(local.episode, seeds)
        with store.recorder(task=task, source=Source.SCRIPTED) as rec, \
                _bar(episodes, progress) as bar:
            for ep in results:
                if ep.ending is None:  # the loop kept no episode (it always does today)
                    continue
                for row, source in ep.rows:
                    rec.add(row, source=source)
                rec.end_episode(**ep.ending)
                bar(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if local is not None:
            local.env.close()
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
