"""Every registered hardware arm, driven by robolearn's driver through lerobot's bus code over a
real pseudo-terminal to its device emulator (a separate process speaking the servo protocol,
backed by the simulated arm).

Parametrised over the registry: a new hardware robot with an ``emulator`` is tested here
without a new test. Calibration goes through ``robolearn calibrate`` (lerobot's own flow), with
the emulator's "hand" doing what a person does at each prompt.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("lerobot")

from robolearn.arm_cmds import calibrated_robots, hardware_robots  # noqa: E402
from robolearn.robot import ROBOTS, RobotError, make_robot  # noqa: E402
from robolearn_core.registry import resolve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


class Emulator:
    """``python -m <robot's emulator> <its args> --hand``: the port, hand commands, its end."""

    def __init__(self, robot: str) -> None:
        cls = resolve(ROBOTS, robot, "robot")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", cls.emulator, *cls.emulator_args, "--hand"], cwd=ROOT,
            env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        assert self.proc.stdout is not None
        self.port = self.proc.stdout.readline().strip()
        assert self.port.startswith("/dev/"), self.stderr()

    def hand(self, command: str, timeout: float = 15.0) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        word = command.split()[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.strip() == f"hand: {word} done":
                return
            assert line, f"emulator ended: {self.stderr()}"
        raise AssertionError(f"hand {command!r} never finished")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> str:
        """SIGTERM; returns what it said on the way out (its counters)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        return err

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def _read_until(proc: subprocess.Popen[bytes], text: str, timeout: float = 60.0) -> str:
    """The calibrating process's output up to ``text`` (its prompts end without a newline)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"never saw {text!r}; got {seen[-400:]!r}"
        if select.select([proc.stdout], [], [], 0.5)[0]:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:  # it ended: say why (its stderr), not only what it printed
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise AssertionError(f"calibrate ended before {text!r}: {seen[-400:]!r}; "
                                     f"stderr: {err[-1500:]}")
            seen += chunk
    return seen.decode(errors="replace")


def calibrate(robot: str, emu: Emulator, cal_dir: Path, key: str = "robot",
              release: bool = True) -> Path:
    """``robolearn calibrate`` as a user runs it, the emulator's hand doing the moving;
    ``key="teleop"`` for a leader arm; ``release=False`` keeps the hand holding the arm."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "robolearn.cli", "calibrate", f"{key}={robot}",
         f"{key}.port={emu.port}", f"{key}.calibration_dir={cal_dir}", f"{key}.id=test"],
        cwd=ROOT, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        _read_until(proc, "middle of its range of motion")
        emu.hand("middle")
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        _read_until(proc, "Recording positions")
        emu.hand("sweep 1.0")
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    if release:
        emu.hand("release")
    path = cal_dir / "test.json"
    assert path.is_file()
    return path


@pytest.fixture(scope="module", params=calibrated_robots())
def calibrated(request: Any, tmp_path_factory: Any) -> Iterator[tuple[str, Path]]:
    """A robot name and the directory of its calibration, made through lerobot's flow."""
    robot = request.param
    cal_dir = tmp_path_factory.mktemp(f"cal_{robot}")
    emu = Emulator(robot)
    try:
        calibrate(robot, emu, cal_dir)
    finally:
        emu.stop()
    yield robot, cal_dir


def _arm(robot: str, cal_dir: Path, port: str, **kw: Any) -> Any:
    return make_robot(robot, port=port, calibration_dir=str(cal_dir), id="test", home_s=0.5, **kw)


def test_calibration_maps_to_the_simulated_arm(calibrated: tuple[str, Path]) -> None:
    """After lerobot's calibration, the driver's bounds are the simulated joint limits (the
    emulated arm's whole range was swept) and the arm moves where it is told, in radians."""
    robot, cal_dir = calibrated
    from sim.arm.model import JOINT_LIMITS, JOINTS

    emu = Emulator(robot)
    try:
        arm = _arm(robot, cal_dir, emu.port)
        with arm:
            low, high = arm.action_bounds
            sim_low = np.array([JOINT_LIMITS[j][0] for j in JOINTS])
            sim_high = np.array([JOINT_LIMITS[j][1] for j in JOINTS])
            assert np.allclose(low, sim_low, atol=0.01) and np.allclose(high, sim_high, atol=0.01)
            obs = arm.reset()
            home = np.asarray(arm.cfg.home)
            # reached home within a few degrees (gravity sag of position servos)
            assert np.abs(obs["observation.state"][:6] - home).max() < 0.1
            target = home + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0])
            for _ in range(45):
                sent = arm.act(target)
                time.sleep(1 / 30)
            q = arm.observe()["observation.state"][:6]
            assert abs(q[0] - 0.4) < 0.03, q  # the pan joint turned 0.4 rad, as in simulation
            assert np.allclose(sent, target, atol=0.003)  # 4096-step quantisation
    finally:
        emu.stop()


def test_goals_outside_the_calibrated_limits_never_reach_the_bus(
        calibrated: tuple[str, Path]) -> None:
    robot, cal_dir = calibrated
    emu = Emulator(robot)
    try:
        with _arm(robot, cal_dir, emu.port) as arm:
            low, high = arm.action_bounds
            rng = np.random.default_rng(0)
            for _ in range(60):
                wild = rng.uniform(low - 3.0, high + 3.0)
                sent = arm.act(wild)
                assert np.all(sent >= low - 1e-6) and np.all(sent <= high + 1e-6)
            with pytest.raises(RobotError, match="non-finite"):
                arm.act(np.full(6, np.nan))
    finally:
        said = emu.stop()
    assert "goals outside limits: 0;" in said, said


def test_uncalibrated_arm_is_refused_with_the_command(tmp_path: Path) -> None:
    robot = calibrated_robots()[0]
    emu = Emulator(robot)
    try:
        arm = _arm(robot, tmp_path, emu.port)
        with pytest.raises(RobotError, match=f"robolearn calibrate robot={robot}"):
            arm.connect()
        assert not arm.is_connected
    finally:
        emu.stop()


@pytest.mark.parametrize("how", ["killed", "unplugged"])
def test_link_loss_is_named_within_100ms(calibrated: tuple[str, Path], how: str) -> None:
    """The emulator SIGKILLed, or the cable pulled: the next bus call fails as a RobotError
    naming the port, within 100 ms of the loss."""
    robot, cal_dir = calibrated
    emu = Emulator(robot)
    arm = _arm(robot, cal_dir, emu.port)
    arm.connect()
    try:
        arm.observe()
        if how == "killed":
            emu.kill()
        else:
            emu.hand("unplug")
        lost = time.monotonic()
        with pytest.raises(RobotError, match=f"link lost.*{emu.port}|{emu.port}.*link lost"):
            for _ in range(100):
                arm.observe()
                arm.act(np.asarray(arm.cfg.home))
        assert time.monotonic() - lost < 0.1
    finally:
        arm.disconnect()
        if emu.proc.poll() is None:
            emu.stop()


def test_the_arms_env_passes_gymnasium_checks(calibrated: tuple[str, Path]) -> None:
    """The registered env of the arm (task ``unscored``: no reward, success unknown) with its
    driver on the emulator, through gymnasium's own checks of spaces, reset and step (not its
    determinism check: a real arm's reset is not reproducible)."""
    import gymnasium as gym
    from gymnasium.utils.passive_env_checker import (
        check_action_space,
        check_observation_space,
        env_reset_passive_checker,
        env_step_passive_checker,
    )

    from robolearn.env import ENVS

    robot, cal_dir = calibrated
    env_id = next(i for i, spec in ENVS.items() if spec["robot"] == robot)
    emu = Emulator(robot)
    try:
        env = gym.make(f"robolearn.envs:{env_id}", robot_kwargs={
            "port": emu.port, "calibration_dir": str(cal_dir), "id": "test", "home_s": 0.2})
        try:
            raw = env.unwrapped
            check_observation_space(raw.observation_space)
            check_action_space(raw.action_space)
            obs, _ = env_reset_passive_checker(raw, seed=0)
            assert raw.observation_space.contains(obs)
            obs, reward, terminated, truncated, info = env_step_passive_checker(
                raw, raw.action_space.sample())
            assert raw.observation_space.contains(obs)
            assert reward == 0.0 and not terminated and not info["success"]
        finally:
            env.close()
    finally:
        emu.stop()


@pytest.mark.parametrize("verify", [True, False])
def test_damaged_replies_are_never_taken_as_readings(calibrated: tuple[str, Path],
                                                     verify: bool) -> None:
    """Replies damaged on the wire (bit flips, cut short, noise, lost, and forged ones whose
    checksum matches): every reading the driver accepts is the simulation's truth, every
    refusal a named RobotError, no goal outside the limits. Without verified reads (reading
    twice), forged replies do get through: the check is what stops them."""
    robot, cal_dir = calibrated
    if robot not in ("so101", "so100"):
        pytest.skip("reply damage is emulated on the Feetech bus (8-bit checksum)")
    from hardware.emulators.feetech import make_bus
    from hardware.emulators.so101_plant import SO101Plant

    plant = SO101Plant()
    bus = make_bus(6, plant, seed=3).start()
    arm = _arm(robot, cal_dir, bus.port, verify_reads=verify)
    wrong = accepted = refused = 0
    try:
        arm.connect()
        arm.reset()
        home = arm.hold_action()
        time.sleep(0.4)
        truth = plant.joint_angles()
        bus.corrupt = 0.1
        while bus.stats["damaged_forged"] < 30:
            try:
                q = arm.positions()
                arm.act(home)
            except RobotError as exc:
                assert str(exc).startswith(f"{robot} on {bus.port}: ")
                refused += 1
                continue
            accepted += 1
            wrong += int(np.abs(q[:5] - truth[:5]).max() > 0.02)
        bus.corrupt = 0.0
    finally:
        arm.disconnect()
        bus.stop()
    assert accepted > 20 and refused > 0
    assert sum(s.goals_outside_limits for s in bus.servos) == 0
    if verify:
        assert wrong == 0
    else:
        assert wrong > 0  # forged replies pass lerobot's checks: reading twice is what stops them


@pytest.mark.parametrize("robot", hardware_robots())
def test_robolearn_emulate_prints_a_port_and_stops_on_ctrl_c(robot: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "emulate", robot], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/") and os.path.exists(port), proc.stderr
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        served = "served 0 frames" if robot in calibrated_robots() else "served "
        assert proc.returncode == 0 and served in err, err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_koch_servos_stop_by_themselves_when_the_host_goes_silent(
        calibrated: tuple[str, Path]) -> None:
    """The Koch driver turns Dynamixel's Bus_Watchdog on at connect (80 ms): a host that hangs
    or dies leaves servos that stop within the period plus one 20 ms tick, with no host help.
    (The SO-101's STS3215 have no such register: they hold their last goal.)"""
    robot, cal_dir = calibrated
    if robot != "koch":
        pytest.skip("a bus watchdog is a Dynamixel X-series register")
    from hardware.emulators.dynamixel import make_bus
    from hardware.emulators.so101_plant import KOCH_SERVO_JOINTS, SO101Plant

    plant = SO101Plant(servo_map=KOCH_SERVO_JOINTS)
    with make_bus(6, plant) as bus:
        arm = _arm(robot, cal_dir, bus.port)
        arm.connect()
        try:
            arm.reset()
            target = np.asarray(arm.cfg.home) + np.array([0.5, 0, 0, 0, 0, 0])
            for _ in range(5):
                arm.act(target)
                time.sleep(1 / 30)
            silent = time.monotonic()  # the host hangs here: no more packets
            time.sleep(0.3)
            with bus.lock:
                fired = [bus.servo(i).watchdog_fired_at for i in range(1, 7)]
            assert all(t is not None for t in fired), fired
            # the period, one 20 ms tick, and 40 ms for the emulator's thread to be scheduled
            # on a busy 2-core host (a watchdog that never fires, or fires a period late, fails)
            assert max(t - silent for t in fired if t is not None) < 0.08 + 0.02 + 0.04
            # stopped: the pan joint stays where it was when the watchdog fired
            q0 = plant.joint_angles()[0]
            time.sleep(0.2)
            assert abs(plant.joint_angles()[0] - q0) < 0.01
            # the driver says so (going on would drive nothing: goals are refused) ...
            with pytest.raises(RobotError, match="bus watchdog stopped"):
                arm.observe()
            # ... and its next reset re-arms the servos
            arm.reset()
            arm.observe()
        finally:
            arm.disconnect()
        again = _arm(robot, cal_dir, bus.port)
        with again:
            again.act(np.asarray(again.cfg.home))
            with bus.lock:
                assert not any(bus.servo(i).watchdog_fired for i in range(1, 7))


def test_a_policy_trained_on_sim_arm_deploys_on_the_arm_unchanged(
        calibrated: tuple[str, Path], tmp_path: Path) -> None:
    """A policy trained in simulation on what a real arm senses (observation.state: joint
    angles and velocities) runs through ``robolearn deploy`` on the emulated arm: the feature
    check passes (same names, units, shapes), every step is recorded as the policy's, the
    store names the arm, and the goals stay within the calibrated limits."""
    from data import EpisodeStore, Source
    from robolearn.cli import main
    from robolearn.vector import collect_scripted

    robot, cal_dir = calibrated
    store = tmp_path / "demos.zarr"
    collect_scripted("robolearn/SimArmLift-v0", str(store), episodes=2, num_envs=1,
                     progress=False, max_steps=30).close()
    run = tmp_path / "run"
    assert main(["train", f"dataset={store}", f"output={run}", "policy=mlp", "steps=2",
                 "batch_size=4", "num_workers=0", "save_every=2",
                 "observations=[observation.state]", "-q"]) == 0
    emu = Emulator(robot)
    out = tmp_path / "deployed"
    try:
        assert main(["deploy", str(run), f"robot={robot}", f"robot.port={emu.port}",
                     f"robot.calibration_dir={cal_dir}", "robot.id=test", "robot.home_s=0.3",
                     "episodes=1", "max_steps=20", f"output={out}", "-q"]) == 0
    finally:
        said = emu.stop()
    assert "goals outside limits: 0;" in said, said
    with EpisodeStore.open(out) as deployed:
        assert len(deployed) == 1 and deployed.robot_type == robot
        sources = [Source(s) for s in deployed.episode(0, ["source"])["source"]]
        assert len(sources) == 20 and set(sources) == {Source.POLICY}


def test_a_stop_from_the_watchdogs_thread_waits_for_the_bus(
        calibrated: tuple[str, Path]) -> None:
    """The control loop's watchdog stops the robot from its own thread while the loop may be
    mid-transaction; lerobot's port handler refuses a second user ("Port is in use!"), which
    the emulated SO-101 deploy bench hit. The driver serialises its bus transactions."""
    import threading

    robot, cal_dir = calibrated
    emu = Emulator(robot)
    try:
        with _arm(robot, cal_dir, emu.port) as arm:
            arm.reset()
            errors: list[BaseException] = []
            done = threading.Event()

            def watchdog() -> None:
                while not done.is_set():
                    try:
                        arm.stop()
                    except BaseException as exc:  # noqa: BLE001 (collected, asserted below)
                        errors.append(exc)
                    time.sleep(0.003)

            thread = threading.Thread(target=watchdog)
            thread.start()
            try:
                for _ in range(60):
                    arm.observe()
                    arm.act(np.asarray(arm.cfg.home))
            finally:
                done.set()
                thread.join()
            assert errors == []
    finally:
        emu.stop()
