"""``robolearn collect``: scripted episodes appended to a store, and a human driving the car
through the keyboard device over a real pseudo-terminal, in a real subprocess."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from data import EpisodeStore
from robolearn.cli import main

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Z]|[=>78])")


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


class Terminal:
    """A command run in a pseudo-terminal as a user runs it in a shell: stdin, stdout and
    stderr are the terminal (120x40); what it writes is collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", *args], cwd=ROOT,
                                     stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self._out = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            self._out += data

    @property
    def text(self) -> str:
        """Everything shown so far, escape sequences removed."""
        return ANSI.sub("", self._out.decode("utf-8", errors="replace"))

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.text}"
            time.sleep(0.05)

    def type(self, keys: bytes, times: int = 1, every: float = 0.05) -> None:
        for _ in range(times):
            os.write(self.master, keys)
            time.sleep(every)

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.proc.kill()
            self._reader.join(timeout=5)
            os.close(self.master)


def test_keyboard_teleop_in_a_terminal(tmp_path: Path) -> None:
    """Drive the car from the keyboard of the terminal collect runs in: the key table and a
    readable prompt are shown, nothing is recorded before the start key, a status line shows
    the car while driving, d discards (not steering: driving keys are off after an episode)
    and s keeps as a success."""
    out = tmp_path / "teleop.zarr"
    term = Terminal(["collect", str(out), "source=teleop", "teleop=keyboard",
                     "env=robolearn/SimCar-v0", "episodes=1"])
    try:
        term.wait_for("episode 1 of 1 (seed 0): enter: start  [q]uit  [h]elp")
        assert "teleop=keyboard keys (car)" in term.text and "after an episode" in term.text
        term.type(b"w", times=60)  # 3 s of throttle before the start key: not recorded
        assert not (out / "inflight.json").exists()
        term.type(b"\r")
        term.type(b"w", times=20)  # 1 s of driving
        term.wait_for("speed ")
        term.type(b"\r")
        term.wait_for("[k]eep  [s]uccess  [f]ailure  [d]iscard  [r]e-record  [h]elp")
        assert "episode over (you ended it)" in term.text
        time.sleep(0.5)  # the w key's auto-repeat would have ended (settle_s)
        term.type(b"d")
        term.wait_for("episode 1 of 1 (seed 1)")
        term.type(b"\r")
        term.type(b"w", times=20)
        term.type(b"\r")
        term.wait_for("episode over (you ended it)", timeout=30)
        time.sleep(0.5)
        term.type(b"s")
        rc = term.close()
    finally:
        term.proc.kill()
    assert rc == 0, term.text
    text = term.text
    assert "m/s" in text and "throttle +" in text and "REC episode 1/1" in text, text
    assert "eep, iscard" not in text
    with EpisodeStore.open(out) as store:
        assert len(store) == 1
        ep = store.episode(0)
        assert ep.info.success is True and ep.info.metadata["seed"] == 1
        assert ep.info.sources.get("teleop", 0) == ep.info.length
        # about 1 s of driving at 20 Hz; the 3 s before the start key would add 60 steps
        assert 5 < ep.info.length < 50, ep.info.length
        assert ep["action"][:, 1].max() > 0.5  # the w key reached the car
        speed = np.abs(ep["observation.state"][:, 4])  # forward speed
        assert speed[-1] > speed[0]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing-empty-dir"])
def test_quit_before_any_episode_leaves_no_empty_store(tmp_path: Path, existing: bool) -> None:
    """q before the first episode: a store this run created stays empty and is removed; a
    directory that was there before is not robolearn's to delete."""
    out = tmp_path / "teleop.zarr"
    if existing:
        out.mkdir()
    term = Terminal(["collect", str(out), "source=teleop", "env=robolearn/SimCar-v0"])
    try:
        term.wait_for("[q]uit")
        term.type(b"q")
        assert term.close() == 0, term.text
    finally:
        term.proc.kill()
    assert out.exists() == existing
    assert [p.name for p in tmp_path.iterdir()] == (["teleop.zarr"] if existing else [])


def _no_spacemouse() -> bool:
    from hardware.teleop.spacemouse import find_hidraw

    return find_hidraw() is None


@pytest.mark.parametrize(("device", "settings", "env"), [
    ("keyboard", [], {}),  # stdin is not a terminal
    ("gamepad", [], {"SDL_GAMECONTROLLER_IGNORE_DEVICES_EXCEPT": "0x0000/0x0000"}),
    pytest.param("spacemouse", [], {}, marks=pytest.mark.skipif(
        not _no_spacemouse(), reason="a SpaceMouse is plugged in")),
    ("spacemouse", ["teleop_config.path=NODE"], {}),  # a hidraw node that does not exist
], ids=["keyboard-no-terminal", "gamepad-none", "spacemouse-none", "spacemouse-bad-path"])
def test_collect_without_its_device_fails_in_one_line_and_leaves_nothing(
        tmp_path: Path, device: str, settings: list[str], env: dict[str, str]) -> None:
    out = tmp_path / "demos.zarr"
    settings = [s.replace("NODE", str(tmp_path / "hidraw9")) for s in settings]
    proc = subprocess.run(
        [sys.executable, "-m", "robolearn.cli", "collect", str(out), "source=teleop",
         f"teleop={device}", "env=robolearn/SimArmReach-v0", *settings],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"robolearn collect: config error: teleop={device}: "), lines
    assert list(tmp_path.iterdir()) == [], "no store, no temporary directory"


def _dart_stats(path: Path) -> tuple[float, float]:
    """(std of the joints' second differences, std of the recorded arm actions' differences)
    over a store's episodes: how much noise reached the arm, and how much is in the labels."""
    dq, da = [], []
    with EpisodeStore.open(path) as store:
        for i in range(len(store)):
            info = store.info(i)
            q = store.read("observation.state", info.start, info.start + info.length, info)
            a = store.read("action", info.start, info.start + info.length, info)
            dq.append(np.diff(q[:, :5], 2, axis=0).ravel())
            da.append(np.diff(a[:, :5], axis=0).ravel())
    return float(np.std(np.concatenate(dq))), float(np.std(np.concatenate(da)))


def test_dart_collect_drives_noisy_and_records_clean_labels(tmp_path: Path) -> None:
    """``collect dart_noise=0.05``: the noise reaches the arm (its joints jitter 3x more than
    under the plain expert), the recorded actions are the expert's clean labels (their step
    changes stay far below the sent actions' sqrt(2) x 0.05 = 0.07), the expert still lifts,
    and the worker pool records the same store as one process (the noise is seeded by the
    episode's seed). A non-scripted source is refused in one line."""
    common = ["collect", "env=robolearn/SimArmLift-v0", "episodes=3", "-q"]
    assert main([*common, f"output={tmp_path / 'plain'}"]) == 0
    assert main([*common, f"output={tmp_path / 'dart'}", "dart_noise=0.05"]) == 0
    assert main([*common, f"output={tmp_path / 'dart2'}", "dart_noise=0.05", "num_envs=2"]) == 0
    plain_dq, _ = _dart_stats(tmp_path / "plain")
    dart_dq, dart_da = _dart_stats(tmp_path / "dart")
    assert dart_dq > 3 * plain_dq, (dart_dq, plain_dq)
    assert dart_da < 0.04, dart_da
    with EpisodeStore.open(tmp_path / "dart") as one, EpisodeStore.open(tmp_path / "dart2") as two:
        assert [one.info(i).success for i in range(3)] == [True] * 3
        np.testing.assert_array_equal(one.read("action", 0, one.num_frames),
                                      two.read("action", 0, two.num_frames))
    assert main([*common, f"output={tmp_path / 'bad'}", "dart_noise=0.05",
                 "source=teleop"]) == 2
    assert not (tmp_path / "bad").exists()
