"""The scene between episodes: who puts the objects back, and who says whether it worked.

A simulated robot's reset places its objects; a real robot's cannot. Practising on a real arm
(HIL-SERL) needs a person to put the cube back after each episode and, for the reward
classifier's review rounds, to say which episodes succeeded. A :class:`Scene` is that person's
part, and :class:`SceneTask` puts it into any task:

- ``set_up(seed)``: after the robot homed, before the episode's first observation (the person
  places the objects; the emulator's experimenter puts them where ``seed`` says);
- ``success()``: during the episode, True ends it as a success (a person's "it worked" key; the
  emulator's judge);
- ``verdict(success)``: at the end, the success recorded in the episode store (None: unknown).

:class:`PersonScene` asks on the terminal (``robolearn actor ... scene=person``); the emulated
SO-101's experimenter (:mod:`hardware.emulators.scene`) plays the person in benchmarks.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from typing import Any, TextIO

import numpy as np

from data.schema import Feature
from robolearn.robot import Robot
from robolearn.task import Task


class Scene:
    """Nobody there: nothing is set up, nothing judged (the base of the others)."""

    def set_up(self, seed: int) -> None:
        """Set the scene for the episode about to start."""

    def success(self) -> bool:
        """Whether the episode has succeeded (checked after every step)."""
        return False

    def verdict(self, success: bool) -> bool | None:
        """The episode's recorded success, given what :meth:`success` said last."""
        return success


class SceneStopped(Exception):
    """The session was asked to stop (SIGTERM) while the scene waited for a person."""


class PersonScene(Scene):
    """A person at the terminal: sets the scene when asked, then says whether it worked.
    ``ask=False`` skips the verdict (success unknown). ``stop``: set, it ends a wait for the
    person (the actor's SIGTERM): :meth:`set_up` raises :class:`SceneStopped` and
    :meth:`verdict` records the episode's success as unknown, so a stopped session neither
    waits for an Enter nor loses the episode it just drove."""

    def __init__(self, name: str = "robot", ask: bool = True, stdin: TextIO | None = None,
                 stdout: TextIO | None = None, stop: threading.Event | None = None) -> None:
        self.name, self.ask, self.stop = name, ask, stop
        self.stdin, self.stdout = stdin or sys.stdin, stdout or sys.stderr

    def _line(self, prompt: str) -> str:
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self._read_line(prompt)
        if not line:  # end of input: nobody there to answer
            raise EOFError(f"{self.name}: no one answered {prompt.strip()!r} (stdin closed)")
        return line.strip().lower()

    def _read_line(self, prompt: str) -> str:
        """One line of the person's input. With ``stop``, a terminal or pipe is read from its
        file descriptor a byte at a time between checks of ``stop`` (a buffered readline
        would block past a stop, and ``select`` cannot see what a buffer already holds)."""
        try:
            fd = self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1  # an in-memory stream: readline never waits
        if self.stop is None or fd < 0:
            return self.stdin.readline()
        got = bytearray()
        while not got.endswith(b"\n"):
            if not select.select([fd], [], [], 0.2)[0]:
                if self.stop.is_set():
                    raise SceneStopped(f"{self.name}: stopped while waiting for "
                                       f"{prompt.strip()!r}")
                continue
            byte = os.read(fd, 1)
            if not byte:
                break
            got += byte
        return got.decode(errors="replace")

    def set_up(self, seed: int) -> None:
        self._line(f"{self.name}: the arm is home; set the scene, then press Enter ")

    def verdict(self, success: bool) -> bool | None:
        if not self.ask:
            return None
        while True:
            try:
                said = self._line(f"{self.name}: did it succeed? [y/n, Enter: unknown] ")
            except SceneStopped:
                return None  # the episode is kept; its success is unknown
            if said in ("y", "yes"):
                return True
            if said in ("n", "no"):
                return False
            if said == "":
                return None


class SceneTask(Task):
    """``task`` with ``scene`` doing what a simulator's reset and judge would: the scene is set
    after the robot's reset, and its success (live, then its verdict) is the episode's."""

    judges_success = True

    def __init__(self, task: Task, scene: Scene) -> None:
        self.inner, self.scene = task, scene
        self.name, self.description = task.name, task.description
        self.weights = task.weights
        self._seed = 0
        # set before a reset: that episode's scene is this layout seed's (a bench sets the
        # episode's own seed, so the scene is the simulated evaluation's of that seed); None:
        # drawn from the episode's seed
        self.layout_seed: int | None = None

    def default_weights(self) -> dict[str, float]:
        return self.inner.default_weights()

    def observation_features(self, robot: Robot) -> dict[str, Feature]:
        return self.inner.observation_features(robot)

    def reset_options(self, robot: Robot, rng: np.random.Generator) -> dict[str, Any]:
        drawn = int(rng.integers(2**31))  # the scene's layout, from the episode's seed
        self._seed = drawn if self.layout_seed is None else self.layout_seed
        return self.inner.reset_options(robot, rng)

    def reset(self, robot: Robot) -> None:
        self.inner.reset(robot)
        self.judges_success = True
        self.scene.set_up(self._seed)

    def verdict(self, success: bool) -> bool | None:
        """The scene's verdict at the episode's end (the control loop's ``review``); None
        leaves the episode's success unknown in the store."""
        said = self.scene.verdict(success)
        self.judges_success = said is not None
        return said

    def observe(self, robot: Robot) -> dict[str, np.ndarray]:
        return self.inner.observe(robot)

    def reward_terms(self, robot: Robot, action: np.ndarray) -> dict[str, float]:
        return self.inner.reward_terms(robot, action)

    def success(self, robot: Robot) -> bool:
        return self.scene.success()

    def failure(self, robot: Robot) -> bool:
        return self.inner.failure(robot)

    def info(self) -> dict[str, Any]:
        return self.inner.info()
