"""Leader arms as teleop devices, read through lerobot's own teleoperators over a real
pseudo-terminal from the servo emulator (a separate process), its "hand" holding the leader.

Each registered leader (one per lerobot teleoperator class) is calibrated through
``robolearn calibrate teleop=...`` (lerobot's flow) as a user does it, then: its action follows
its joints in sim_arm's radians; ``robolearn collect`` records what it drives; and during a
policy run it takes over when moved and hands back when still, recorded as interventions.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lerobot")

from data import EpisodeStore, Source  # noqa: E402
from hardware.arms.lerobot_util import GRIPPER_SPAN_RAD  # noqa: E402
from hardware.emulators.so101_plant import angle_to_steps  # noqa: E402
from hardware.teleop import TELEOPS, DeviceError, make_teleop  # noqa: E402
from robolearn.arm_cmds import leader_teleops  # noqa: E402
from robolearn.cli import main  # noqa: E402
from robolearn.env import ENVS, make_env  # noqa: E402
from robolearn.loop import ControlLoop, LoopConfig, create_store  # noqa: E402
from robolearn.robot import make_robot  # noqa: E402
from robolearn.safety import SafetyConfig  # noqa: E402
from robolearn_core.config import ConfigError  # noqa: E402
from robolearn_core.registry import resolve  # noqa: E402
from sim.arm.model import HOME, JOINT_LIMITS, JOINTS  # noqa: E402
from tests.test_arm_drivers import ENV, ROOT, Emulator, calibrate  # noqa: E402
from tests.test_collect import Terminal  # noqa: E402

LIFT = "robolearn/SimArmLift-v0"


def _distinct_leaders() -> list[str]:
    """One leader per lerobot teleoperator (so100_leader is so101_leader's class renamed)."""
    seen, names = set(), []
    for name in leader_teleops():
        cls = resolve(TELEOPS, name, "teleop")
        if cls.make_lerobot not in seen:
            seen.add(cls.make_lerobot)
            names.append(name)
    return names


# settings an emulated leader needs: lerobot sets the Koch leader's elbow servo to reverse
# (Drive_Mode), as it is mounted the other way round on the real leader; the emulator moves
# the follower's kinematics, so there it reads mirrored and the units table's sign undoes it
EMULATED = {"koch_leader": {"signs": [1, 1, -1, 1, 1, 1]}}


class LeaderEmulator(Emulator):
    """``python -m <the leader's emulator> <its args> --hand``."""

    def __init__(self, cls: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", cls.emulator, *cls.emulator_args, "--hand"], cwd=ROOT,
            env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().strip()
        assert self.port.startswith("/dev/"), self.stderr()


class Leader:
    """A calibrated leader on its emulator: the port, its calibration, the hand."""

    def __init__(self, name: str, emu: Emulator, cal_dir: Path) -> None:
        self.name, self.emu, self.cal_dir = name, emu, cal_dir
        self.cfg = resolve(TELEOPS, name, "teleop").config_class()

    def settings(self, **kw: Any) -> dict[str, Any]:
        return {"port": self.emu.port, "calibration_dir": str(self.cal_dir), "id": "test",
                **EMULATED.get(self.name, {}), **kw}

    def hold(self, angles: np.ndarray) -> None:
        """The hand holds the leader's joints at these simulated angles (rad)."""
        steps = [angle_to_steps(i + 1, a) for i, a in enumerate(angles)]
        self.emu.hand("pose " + " ".join(f"{s:.1f}" for s in steps))

    def expected(self, angles: np.ndarray) -> np.ndarray:
        """What the leader reads held at ``angles``: those, except a gripper that is a
        spring-back trigger (Koch: its servo holds ``gripper_open_pos``, stronger than the
        hand)."""
        out = np.array(angles, dtype=np.float64)
        if hasattr(self.cfg, "gripper_open_pos"):
            out[-1] = self.cfg.gripper_open_pos / 100 * GRIPPER_SPAN_RAD
        return out


def calibrate_leader(name: str, emu: Emulator, cal_dir: Path) -> None:
    """``robolearn calibrate teleop=NAME`` as a user runs it, the emulator's hand moving."""
    calibrate(name, emu, cal_dir, key="teleop", release=False)


@pytest.fixture(scope="module", params=_distinct_leaders())
def leader(request: Any, tmp_path_factory: Any) -> Iterator[Leader]:
    name = request.param
    emu = LeaderEmulator(resolve(TELEOPS, name, "teleop"))
    try:
        cal_dir = tmp_path_factory.mktemp(f"cal_{name}")
        calibrate_leader(name, emu, cal_dir)
        yield Leader(name, emu, cal_dir)
    finally:
        emu.stop()


def poses(n: int, seed: int) -> np.ndarray:
    """``n`` joint poses (rad) well inside the simulated arm's ranges, ``(n, 6)``."""
    lo = np.array([JOINT_LIMITS[j][0] for j in JOINTS])
    hi = np.array([JOINT_LIMITS[j][1] for j in JOINTS])
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return mid + 0.8 * half * np.random.default_rng(seed).uniform(-1, 1, (n, len(JOINTS)))


# encoder quantisation (1 step = 0.0015 rad) and lerobot's degrees over 4095 steps a turn
ATOL = 0.005


def test_leader_action_follows_its_joints_in_sim_radians(leader: Leader) -> None:
    """Wherever the hand holds the leader, its action is that pose in sim_arm's radians (the
    follower's units table), clipped to the driven robot's bounds, with no policy."""
    arm = make_robot("sim_arm")
    teleop = make_teleop(leader.name, arm, **leader.settings(keys="none"))
    teleop.alone = True  # as collect sets it: no policy
    low, high = arm.action_bounds
    with teleop:
        for pose in poses(3, seed=1):
            leader.hold(pose)
            action = teleop.get_action({})
            assert action is not None and action.shape == (6,)
            np.testing.assert_allclose(action, np.clip(leader.expected(pose), low, high),
                                       atol=ATOL)
        wide = np.array([2.2, 0.0, 0.0, 0.0, 0.0, 0.5])  # pan past the robot's 1.92 rad
        leader.hold(wide)
        action = teleop.get_action({})
        assert action is not None and abs(action[0] - high[0]) < 1e-6, (action, high)
        np.testing.assert_allclose(action[1:], leader.expected(wide)[1:], atol=ATOL)


def test_uncalibrated_leader_is_refused_with_the_command(leader: Leader,
                                                        tmp_path: Path) -> None:
    arm = make_robot("sim_arm")
    teleop = make_teleop(leader.name, arm, **{**leader.settings(keys="none"),
                                              "calibration_dir": str(tmp_path)})
    with pytest.raises(DeviceError, match=f"run: robolearn calibrate teleop={leader.name} "
                                          f"teleop.port={leader.emu.port} teleop.id=test"):
        teleop.device.connect()


def test_collect_records_what_the_leader_drives(leader: Leader, tmp_path: Path) -> None:
    """``robolearn collect source=teleop teleop=<leader>`` in a terminal: Enter starts, the
    leader drives sim_arm every step (moved in the middle of the episode), Enter ends, k
    keeps; the recorded actions are the leader's poses."""
    first, second = poses(2, seed=2)
    leader.hold(first)
    out = tmp_path / "leader.zarr"
    term = Terminal(["collect", str(out), "source=teleop", f"teleop={leader.name}",
                     f"env={LIFT}", "episodes=1", "max_steps=300",
                     *(f"teleop_config.{k}={v}" for k, v in leader.settings().items())])
    try:
        term.wait_for("episode 1 of 1 (seed 0): enter: start")
        assert f"teleop={leader.name} keys (arm)" in term.text and "leader arm" in term.text
        term.type(b"\r")
        term.wait_for("REC episode 1/1")
        time.sleep(0.4)
        leader.hold(second)
        time.sleep(0.4)
        term.type(b"\r")
        term.wait_for("[k]eep")
        term.type(b"k")
        rc = term.close()
    finally:
        term.proc.kill()
    assert rc == 0, term.text
    with EpisodeStore.open(out) as store:
        assert len(store) == 1
        info = store.infos()[0]
        assert info.sources == {"teleop": info.length}
        actions = np.asarray(store.episode(0)["action"], np.float64)
    assert 10 < len(actions) < 300, len(actions)  # about 0.8 s at 30 Hz, ended by Enter
    first, second = leader.expected(first), leader.expected(second)
    # a spring-back gripper (Koch) is still settling on its held position within 0.1 rad
    atol = np.full(6, ATOL)
    atol[-1] = 0.1 if hasattr(leader.cfg, "gripper_open_pos") else ATOL
    assert np.all(np.abs(actions[0] - first) <= atol), (actions[0], first)
    assert np.all(np.abs(actions[-1] - second) <= atol), (actions[-1], second)
    # each joint was at the first pose, then at the second (the hand moves one joint at a time)
    at_first = np.abs(actions - first) < atol
    at_second = np.abs(actions - second) < atol
    assert np.all(at_first | at_second)
    assert at_first[:, 0].sum() >= 5 and at_second[:, 0].sum() >= 5


def test_takeover_during_a_policy_run_is_recorded_as_interventions(
        leader: Leader, tmp_path: Path) -> None:
    """A policy holds sim_arm at HOME. The leader rests elsewhere (still: the policy drives),
    then is moved: it takes over, every step it drives is an intervention with the jump from
    the policy's pose limited by the safety filter's max_delta; still for hold_s, it hands
    back and the policy drives again."""
    fps, hold_s, max_delta = 30.0, 0.3, 0.1
    rest = np.array(HOME) + np.array([0.6, 0.3, -0.3, -0.4, 0.5, 0.3])
    moved = np.array(HOME) + np.array([0.3, 0.1, -0.1, -0.2, 0.2, 0.2])
    leader.hold(rest)
    env = make_env(**ENVS[LIFT])
    teleop = make_teleop(leader.name, env.robot, hold_s=hold_s,
                         **leader.settings(keys="none"))
    home = np.clip(np.array(HOME), *env.robot.action_bounds)
    loop_cfg = LoopConfig(fps=fps, max_steps=60, safety=SafetyConfig(max_delta=max_delta))
    mover = threading.Thread(target=leader.hold, args=(moved,))
    calls = []

    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        calls.append(1)
        if len(calls) == 20:  # the person picks the leader up while the policy runs
            mover.start()
        return home

    try:
        with create_store(str(tmp_path / "deploy.zarr"), env, LIFT, {}) as store, \
                store.recorder(task="lift") as rec, teleop:
            loop = ControlLoop(env, loop_cfg, rec)
            result = loop.run_episode(policy, teleop, seed=0)
            ep = store.episode(0)
            actions = np.asarray(ep["action"], np.float64)
            sources = [Source(int(s)).name.lower() for s in ep["source"]]
    finally:
        if mover.is_alive():
            mover.join()
        env.close()
    assert result.sources.get("intervention", 0) > 0, result.sources
    first = sources.index("intervention")
    last = len(sources) - 1 - sources[::-1].index("intervention")
    assert first >= 20, "the leader resting away from the policy's pose did not take over"
    assert set(sources[first:last + 1]) == {"intervention"}, "one takeover, one hand-back"
    assert set(sources[:first]) == set(sources[last + 1:]) == {"policy"}
    assert last < len(sources) - 5, "the policy got the arm back"
    # the takeover lasts while the leader moves plus hold_s still (a few steps of the hand)
    assert hold_s * fps - 2 <= last - first + 1 <= hold_s * fps + 8, (first, last)
    np.testing.assert_allclose(actions[:first], np.tile(home, (first, 1)), atol=1e-6)
    assert np.all(np.abs(np.diff(actions, axis=0)) <= max_delta + 1e-5), "jump not limited"
    np.testing.assert_allclose(actions[last], leader.expected(moved), atol=ATOL)  # reached it
    np.testing.assert_allclose(actions[-1], home, atol=1e-6)  # and the policy's again


# --------------------------------------------------------------------------- without hardware
def test_a_leader_drives_arms_only_and_keys_its_config() -> None:
    car, arm = make_robot("sim_car"), make_robot("sim_arm")
    for name in leader_teleops():
        with pytest.raises(ConfigError, match=f"^teleop={name} drives arm robots, not a car"):
            make_teleop(name, car)
        with pytest.raises(ConfigError, match=r"^teleop_config\.mapper\.deadzone: "):
            make_teleop(name, arm, mapper={"deadzone": 0.1})
        with pytest.raises(ConfigError, match=r"^teleop_config\.keys: must be one of"):
            make_teleop(name, arm, keys="pad")
        teleop = make_teleop(name, arm)
        assert teleop.cfg.hold_s == 1.0 and teleop.mapper.absolute
        assert {"start", "quit"} <= set(teleop.device.event_map("ready").values())


def test_collect_with_a_leader_and_no_terminal_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """stdin is not a terminal: one line naming the fixes; keys=none: collect refuses it (it
    could never start an episode). Neither touches the (absent) arm or leaves a store."""
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    out = tmp_path / "demos.zarr"
    for extra, says in (([], "a leader arm has no buttons"),
                        (["teleop_config.keys=none"], "collect needs keys")):
        rc = main(["collect", str(out), "source=teleop", "teleop=so101_leader", f"env={LIFT}",
                   "teleop_config.port=/dev/null", *extra])
        lines = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, lines
        assert lines[0].startswith("robolearn collect: config error: teleop=so101_leader: ")
        assert says in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_calibrate_chooses_a_robot_or_a_leader(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "robot=so101", "teleop=so101_leader"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["calibrate", "teleop=keyboard"]) == 2
    assert "is not a leader arm; known: so101_leader" in capsys.readouterr().err
    assert main(["calibrate", "teleop=koch_leader", "--help"]) == 0
    assert "teleop.gripper_open_pos" in capsys.readouterr().out


def test_hand_pose_takes_one_position_per_servo() -> None:
    from hardware.emulators.hand import parse_pose

    assert parse_pose(["2048", "100.5"], [1, 2]) == {1: 2048.0, 2: 100.5}
    with pytest.raises(ValueError, match="pose takes 2 positions"):
        parse_pose(["2048"], [1, 2])
    with pytest.raises(ValueError, match="takes numbers"):
        parse_pose(["2048", "up"], [1, 2])


def test_a_leader_whose_servos_do_not_answer_is_tried_again_then_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """lerobot's motor check finding no servos is transient on a busy link (a lost status
    packet): connect tries again before it names the failure. (It was raised as final at
    once: a full test run lost a leader's collect to it.)"""
    import logging

    from hardware.emulators.feetech import make_bus
    from hardware.teleop.leader import CONNECT_ATTEMPTS

    arm = make_robot("sim_arm")
    with make_bus(6, corrupt=1.0, seed=0) as bus:  # every reply damaged or lost
        teleop = make_teleop("so101_leader", arm, port=bus.port, keys="none", id="test",
                             calibration_dir=str(tmp_path))
        with caplog.at_level(logging.WARNING), \
                pytest.raises(DeviceError, match="the leader's servos did not answer"):
            teleop.device.connect()
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == CONNECT_ATTEMPTS - 1, [r.getMessage() for r in caplog.records]
