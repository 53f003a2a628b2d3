"""Helpers shared by the interactive-imitation tests (``test_improve.py``, ``test_rlif.py``):
the practice setting on the technical track and a session's rounds (their small start is the
``tiny_demo`` fixture in ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

SETTING = ["env=robolearn/SimCarTechnical-v0", "max_steps=400",
           "robot_kwargs={reset_lateral_noise: 0.4, reset_yaw_noise: 0.5}",
           "ensemble.steps=600", "ensemble.members=3", "-q"]


def rounds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
