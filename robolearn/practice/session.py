"""``robolearn practice``: a learner and N actors on this machine, each its own process.

The same processes ``robolearn learner`` and ``robolearn actor`` start on separate machines; here
the learner binds a free loopback port and prints it, and each actor gets it. The learner learns
while the actors act (two processes: a gradient step never delays a robot's step). The session
ends when every actor has spent its ``env_steps`` (the learner then takes its last checkpoint) or
on Ctrl-C, which stops every robot first. Output: ``output/learner/`` and ``output/actorK/``.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robolearn.env import ENVS, unknown_env
from robolearn.rundir import check_output, start_output
from robolearn_core.config import ConfigError, InvalidValue

log = logging.getLogger("robolearn.practice")


@dataclass
class PracticeConfig:
    output: str = "outputs/practice"  # learner/ and actor0/, actor1/... under it
    env: str = "robolearn/SimCar-v0"  # the robot and task every actor practises
    actors: int = 1  # robots practising at once (simulated: one process each)
    env_steps: int = 24_000  # per actor (20 min of robot time at the car's 20 Hz)
    time_scale: float = 1.0  # simulated robots: run each loop this many times real time
    policy: str = "rlpd"  # sac | rlpd
    dataset: str | None = None  # demonstrations (RLPD's offline half)
    seed: int = 0  # the learner's; actor k gets seed * 100 + k
    learner_args: list[str] = field(default_factory=list)  # more learner key=value settings
    actor_args: list[str] = field(default_factory=list)  # more settings for every actor

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise InvalidValue("env", unknown_env(self.env))
        if self.actors < 1:
            raise InvalidValue("actors", f"must be >= 1, got {self.actors}")
        if self.actors > 1 and "scene=person" in self.actor_args:
            # every actor here shares this terminal: one person cannot answer for several arms
            raise InvalidValue("actors", "scene=person needs one terminal per robot: run one "
                                         "`robolearn actor` per robot, or actors=1")


ENTRIES = ("learner", *(f"actor{i}" for i in range(64)))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "robolearn.cli", *args]


def start_learner(args: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen[str], str]:
    """``robolearn learner ARGS`` as a child process; returns it and the address it bound."""
    proc = subprocess.Popen(_cli("learner", *args), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise ConfigError(f"the learner exited ({proc.wait()}) before listening; its "
                              "error is above")
        if line.startswith("learner listening on "):
            return proc, line.split()[-1]
    proc.kill()
    raise ConfigError(f"the learner did not listen within {timeout:.0f} s")


def run(cfg: PracticeConfig) -> int:
    out = Path(cfg.output)
    check_output(out, wipe=False, entries=ENTRIES)
    start_output(out, wipe=False, entries=ENTRIES, kind="practice")
    learner_args = [f"output={out / 'learner'}", "address=127.0.0.1:0", f"policy={cfg.policy}",
                    f"seed={cfg.seed}", *([f"dataset={cfg.dataset}"] if cfg.dataset else []),
                    *cfg.learner_args]
    procs: list[subprocess.Popen[Any]] = []
    learner, address = start_learner(learner_args)
    try:
        for i in range(cfg.actors):
            procs.append(subprocess.Popen(_cli(
                "actor", f"learner={address}", f"actor_id=actor{i}", f"env={cfg.env}",
                f"output={out / f'actor{i}'}", f"env_steps={cfg.env_steps}",
                f"time_scale={cfg.time_scale}", f"seed={cfg.seed * 100 + i}",
                *cfg.actor_args)))
        log.info("practice: learner at %s, %d actor(s); Ctrl-C stops every robot", address,
                 cfg.actors)
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        codes = [1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # the actor stops its robot, commits, exits
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        learner.send_signal(signal.SIGTERM)  # last checkpoint
        try:
            learner.wait(timeout=120)
        except subprocess.TimeoutExpired:
            learner.kill()
    bad = [f"actor{i} exited {c}" for i, c in enumerate(codes) if c]
    if bad:
        log.error("practice: %s", ", ".join(bad))
        return 1
    return 0
