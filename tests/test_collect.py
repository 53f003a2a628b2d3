"""``robolearn collect``: scripted episodes appended to a store, and a human driving the car
through the keyboard device over a real pseudo-terminal, in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data import EpisodeStore
from robolearn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_scripted_collect_appends_to_an_existing_store(tmp_path: Path) -> None:
    out = tmp_path / "reach.zarr"
    args = ["collect", str(out), "env=robolearn/SimArmReach-v0", "-q"]
    assert main([*args, "episodes=2"]) == 0
    assert main([*args, "episodes=2", "seed=2"]) == 0
    with EpisodeStore.open(out) as store:
        assert len(store) == 4 and store.verify() == []
        assert all(i.success and i.sources == {"scripted": i.length} for i in store.infos())
        assert store.metadata["env_id"] == "robolearn/SimArmReach-v0"
        seeds = [i.metadata["seed"] for i in store.infos()]
    assert seeds == [0, 1, 2, 3]
    # another env's schema is refused instead of mixing data
    assert main(["collect", str(out), "env=robolearn/SimCar-v0", "episodes=1", "-q"]) == 1
    assert len(EpisodeStore.open(out)) == 4


def test_keyboard_teleop_drives_the_car_through_a_pty(tmp_path: Path) -> None:
    master, slave = os.openpty()
    out = tmp_path / "teleop.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robolearn.cli", "collect", str(out), "source=teleop",
         "teleop=keyboard", f"teleop_config.tty={os.ttyname(slave)}", "env=robolearn/SimCar-v0",
         "episodes=1", "-q"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.time() + 60
        while not (out / "inflight.json").exists() and time.time() < deadline:
            os.write(master, b"w")  # throttle, as a held key auto-repeats
            time.sleep(0.05)
        for _ in range(20):  # one more second of driving after the first flush
            os.write(master, b"w")
            time.sleep(0.05)
        os.write(master, b"k")  # keep: ends the episode and keeps it
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err[-2000:]
    with EpisodeStore.open(out) as store:
        assert len(store) == 1
        ep = store.episode(0)
        assert ep.info.sources.get("teleop", 0) == ep.info.length > 20
        throttle = ep["action"][:, 1]
        assert throttle.max() > 0.5  # the w key reached the car
        speed = np.abs(ep["observation.state"][:, 4])  # forward speed
        assert speed[-1] > speed[0]
