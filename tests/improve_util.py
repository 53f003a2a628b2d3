"""Helpers shared by the interactive-imitation tests (``test_improve.py``,
``test_improve_chunks.py``, ``test_rlif.py``): the practice setting on the technical track, a
session's rounds (their small start is the ``tiny_demo`` fixture in ``conftest.py``), and a
person at a keyboard beside the car."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SETTING = ["env=robolearn/SimCarTechnical-v0", "max_steps=400",
           "robot_kwargs={reset_lateral_noise: 0.4, reset_yaw_noise: 0.5}",
           "ensemble.steps=600", "ensemble.members=3", "-q"]


def rounds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def person_at_the_car(query_timeout_s: float) -> Iterator[Person]:
    """The technical-track car reset at seed 0 and a person at a keyboard on a real terminal
    (a pseudo-terminal the keyboard device opens, connected): a :class:`HumanTeacher` whose
    prompts land in ``said``; the test types at ``master``, or queues ``answers`` typed when
    a plan is shown (a key typed earlier would be read while driving)."""
    import threading

    from hardware.teleop import make_teleop
    from robolearn.env import ENVS, make_env
    from robolearn.teacher import HumanTeacher

    master, slave = os.openpty()
    env = make_env(**ENVS["robolearn/SimCarTechnical-v0"])
    said: list[str] = []
    answers: list[bytes] = []

    def reads(text: str) -> None:  # the person answers once the plan is shown, not before
        said.append(text)
        if text.startswith("I plan to do this") and answers:
            threading.Timer(0.05, os.write, (master, answers.pop(0))).start()

    try:
        obs, _ = env.reset(seed=0)
        teleop = make_teleop("keyboard", env.robot, tty=os.ttyname(slave))
        person = HumanTeacher(teleop, ["steering", "throttle"], query_timeout_s=query_timeout_s,
                              say=reads)
        with teleop:
            yield Person(env, obs, person, teleop, master, said, answers)
    finally:
        env.close()
        os.close(master)
        os.close(slave)


@dataclass
class Person:
    env: Any
    obs: dict[str, Any]
    teacher: Any  # HumanTeacher
    teleop: Any
    master: int  # type here: what the person presses
    said: list[str]
    answers: list[bytes]  # keys typed at the next prompts, one each, once it is shown
