"""Teleop devices and mappers: the keyboard through a real pseudo-terminal, the gamepad through
an SDL virtual game controller (when pygame is installed), the SpaceMouse through its HID report
bytes over a packet socket, mappers and the intervention hold with a fake clock."""

from __future__ import annotations

import ctypes
import os
import re
import select
import socket
import termios
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hardware.teleop import (
    TELEOPS,
    ArmMapper,
    ArmMapperConfig,
    CarMapper,
    CarMapperConfig,
    DeviceError,
    DeviceState,
    Teleop,
    TeleopConfig,
    device_for,
    make_teleop,
)
from hardware.teleop.base import deadzone
from hardware.teleop.gamepad import BUTTONS, GamepadConfig, normalise
from hardware.teleop.keyboard import KeyboardConfig, KeyboardDevice, parse_keys
from hardware.teleop.keys import keys_markdown
from hardware.teleop.spacemouse import SpaceMouseConfig, SpaceMouseDevice, parse_report
from robolearn.robot import make_robot
from robolearn_core.config import ConfigError, InvalidValue
from robolearn_core.registry import resolve
from sim.arm.model import ARM_JOINTS, HOME, JOINTS

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def car():  # type: ignore[no-untyped-def]
    return make_robot("sim_car")


@pytest.fixture(scope="module")
def arm():  # type: ignore[no-untyped-def]
    return make_robot("sim_arm")


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """(master fd to type into, path of the slave terminal the device opens)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def arm_obs(q: np.ndarray | tuple[float, ...]) -> dict[str, np.ndarray]:
    return {"observation.state": np.concatenate([q, np.zeros(6)]).astype(np.float32)}


def typed(master: int, teleop: Teleop, keys: bytes) -> None:
    """Type ``keys`` and wait until the device's terminal has them to read."""
    os.write(master, keys)
    assert select.select([teleop.device.fd], [], [], 2.0)[0], "pty delivered nothing"


# devices of axes and buttons (a leader arm maps its own pose: tests/test_leader_arms.py)
AXIS_DEVICES = sorted(n for n in TELEOPS if "car" in resolve(TELEOPS, n, "teleop").kinds)


# --------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", AXIS_DEVICES)
def test_every_device_maps_onto_car_and_arm(name: str, car, arm) -> None:  # type: ignore[no-untyped-def]
    t_car = make_teleop(name, car)
    assert isinstance(t_car.mapper, CarMapper) and t_car.device.name == name
    t_arm = make_teleop(name, arm)
    assert isinstance(t_arm.mapper, ArmMapper)
    cfg = t_arm.mapper.cfg
    assert set(cfg.axes) == set(ARM_JOINTS), "every arm joint has an axis"
    assert cfg.gripper_open and cfg.gripper_close and cfg.gripper_open != cfg.gripper_close
    assert t_arm.mapper.state_index == list(range(6))  # <joint>.pos come first in sim_arm


def test_unknown_device_lists_known_ones(car) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="^teleop: .*gamepad, keyboard, .*spacemouse"):
        make_teleop("joystick", car)


@pytest.mark.parametrize("name", sorted(TELEOPS))
def test_every_device_has_keys_to_start_end_and_decide(name: str) -> None:
    """Before an episode a key starts it (nothing is recorded until then) and one quits; after
    it keys keep and discard. A key ends the episode while driving, except on the SpaceMouse
    driving an arm, whose two buttons hold the gripper (its episodes run to the step limit)."""
    for kind in resolve(TELEOPS, name, "teleop").kinds:
        device = device_for(name, kind)
        assert {"start", "quit"} <= set(device.event_map("ready").values())
        assert {"keep", "discard"} <= set(device.event_map("review").values())
        if (name, kind) != ("spacemouse", "arm"):
            assert "end" in device.event_map("drive").values()


def test_readme_lists_the_keys_of_the_code() -> None:
    """README "### Teleop keys" holds the tables generated from the devices' key maps
    (``python -m hardware.teleop.keys`` prints them): a changed key changes the README."""
    readme = (ROOT / "README.md").read_text()
    assert "\n### Teleop keys\n" in readme, "README.md lacks the section '### Teleop keys'"
    section = re.split(r"\n#{1,3} ", readme.split("\n### Teleop keys\n", 1)[1], maxsplit=1)[0]
    assert keys_markdown(JOINTS).strip() in section, \
        "README's teleop key tables differ from the code's: paste python -m hardware.teleop.keys"


def test_teleop_config_errors_name_their_key(car) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"^teleop_config\.ttyy: .*known: layout, tty"):
        make_teleop("keyboard", car, ttyy="/dev/pts/1")
    with pytest.raises(ConfigError, match=r"^teleop_config\.review_events: .*'fly'"):
        make_teleop("gamepad", car, review_events={"a": "fly"})
    with pytest.raises(ConfigError, match=r"^teleop_config\.mapper\.deadzon: "):
        make_teleop("keyboard", car, mapper={"deadzon": 0.1})
    with pytest.raises(ConfigError, match=r"^teleop_config\.hold_s: must be >= 0"):
        make_teleop("keyboard", car, hold_s=-1.0)


def test_mapper_overrides_and_validation(car) -> None:  # type: ignore[no-untyped-def]
    t = make_teleop("keyboard", car, hold_s=0.2, mapper={"deadzone": 0.3})
    assert t.mapper.cfg.deadzone == 0.3 and t.cfg.hold_s == 0.2
    with pytest.raises(InvalidValue, match="deadzone"):
        CarMapperConfig(deadzone=1.0)
    with pytest.raises(InvalidValue, match="also drive the robot"):
        KeyboardConfig(layout="car", events={"w": "end"})
    with pytest.raises(InvalidValue, match="do not exist in drive mode"):
        KeyboardConfig(layout="car", events={"k": "keep"})
    with pytest.raises(InvalidValue, match="also drive the robot"):
        GamepadConfig(events={"rb": "end"})  # the car's deadman
    with pytest.raises(InvalidValue, match="gripper"):
        SpaceMouseConfig(layout="arm", events={"btn0": "end"})
    with pytest.raises(InvalidValue, match="hold_s"):
        TeleopConfig(hold_s=-1)


# --------------------------------------------------------------------------- keyboard (pty)
def test_parse_keys_escape_sequences() -> None:
    assert parse_keys("w\x1b[A\x1bOD \r\n") == (["w", "up", "left", "space", "enter",
                                                    "enter"], "")
    assert parse_keys("a\x1b[") == (["a"], "\x1b[")  # split sequence: finish on the next read
    assert parse_keys("\x1bx") == (["esc", "x"], "")


def test_keyboard_car_through_pty(pty_pair: tuple[int, str], car) -> None:  # type: ignore[no-untyped-def]
    master, path = pty_pair
    clock = FakeClock()
    teleop = make_teleop("keyboard", car, tty=path)
    teleop.clock = teleop.device.clock = clock
    before = termios.tcgetattr(master)
    obs: dict[str, np.ndarray] = {}
    with teleop:
        lflag = termios.tcgetattr(teleop.device.fd)[3]
        assert not lflag & termios.ICANON and not lflag & termios.ECHO, "cbreak mode"
        assert lflag & termios.ISIG, "Ctrl-C must still interrupt"
        assert teleop.get_action(obs) is None, "no key: hands off"
        typed(master, teleop, b"w")
        np.testing.assert_allclose(teleop.get_action(obs), [0.0, 1.0])
        clock.t = 0.1
        np.testing.assert_allclose(teleop.get_action(obs), [0.0, 1.0])  # key held (hold_s)
        clock.t = 0.25  # decays: exp(-1) = 0.368, rescaled past the 0.05 deadzone
        np.testing.assert_allclose(teleop.get_action(obs), [0.0, (np.exp(-1) - 0.05) / 0.95],
                                   rtol=1e-5)
        clock.t = 0.7  # decayed below the deadzone, but within 0.5 s of the last input
        np.testing.assert_allclose(teleop.get_action(obs), [0.0, 0.0])
        clock.t = 0.8
        assert teleop.get_action(obs) is None, "intervention ends 0.5 s after the last input"
        clock.t = 10.0
        typed(master, teleop, b"\x1b[D")  # left arrow: steer left = +1
        np.testing.assert_allclose(teleop.get_action(obs), [1.0, 0.0])
        clock.t = 20.0
        typed(master, teleop, b"\x1b[")  # right arrow, split over two reads
        assert teleop.get_action(obs) is None
        typed(master, teleop, b"C")
        np.testing.assert_allclose(teleop.get_action(obs), [-1.0, 0.0])
        typed(master, teleop, b"kq\r h?")  # driving: only enter, space, h and ? send events
        teleop.get_action(obs)
        assert teleop.poll_events() == ["end", "takeover", "help", "help"]
        assert teleop.poll_events() == []
        teleop.set_mode("review")  # s and d decide once driving is over, in either case
        clock.t = 21.0
        typed(master, teleop, b"kSDrfq\r")
        assert teleop.device.read().events == ("keep", "success", "discard", "rerecord",
                                               "failure")
        teleop.set_mode("ready")
        typed(master, teleop, b"wQ\r")
        assert teleop.device.read().events == ("quit", "start")
    assert termios.tcgetattr(master) == before
    slave = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        lflag = termios.tcgetattr(slave)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO, "terminal restored"
    finally:
        os.close(slave)


def test_keyboard_arm_through_pty(pty_pair: tuple[int, str], arm) -> None:  # type: ignore[no-untyped-def]
    master, path = pty_pair
    clock = FakeClock()
    teleop = make_teleop("keyboard", arm, tty=path)
    teleop.clock = teleop.device.clock = clock
    dt = 1.0 / arm.fps
    q0 = np.array(HOME)
    with teleop:
        assert teleop.get_action(arm_obs(q0)) is None
        typed(master, teleop, b"to\x1b[A")  # elbow +, gripper open, shoulder_lift + (up)
        a1 = teleop.get_action(arm_obs(q0))
        expect = q0 + dt * np.array([0, 0.5, 0.5, 0, 0, 1.5])
        np.testing.assert_allclose(a1, expect, atol=1e-6)
        clock.t = 0.05  # integrates from the target, not from the (unchanged) observation
        a2 = teleop.get_action(arm_obs(q0))
        np.testing.assert_allclose(a2, q0 + 2 * dt * np.array([0, 0.5, 0.5, 0, 0, 1.5]),
                                   atol=1e-6)
        sent = arm.act(a2)  # a valid action for the robot itself
        assert sent.shape == (6,)
        clock.t = 5.0
        assert teleop.get_action(arm_obs(q0)) is None  # released
        # a new intervention starts from the robot's current joints, clamped to the bounds
        high = arm.action_bounds[1]
        q1 = q0.copy()
        q1[JOINTS.index("wrist_flex")] = high[JOINTS.index("wrist_flex")] - 0.01
        typed(master, teleop, b"y")
        a3 = teleop.get_action(arm_obs(q1))
        assert a3[JOINTS.index("wrist_flex")] == pytest.approx(high[3], abs=1e-6)
        np.testing.assert_allclose(np.delete(a3, 3), np.delete(q1, 3), atol=1e-6)
        # takeover (space) holds the action with no input; ? shows the keys (h drives here)
        typed(master, teleop, b" ?")
        clock.t = 20.0
        held = teleop.get_action(arm_obs(q0))
        assert held is not None and teleop.takeover
        np.testing.assert_allclose(held, a3, atol=1e-6)
        typed(master, teleop, b" ")
        assert teleop.get_action(arm_obs(q0)) is None and not teleop.takeover
        assert teleop.poll_events() == ["takeover", "help", "takeover"]


def test_keyboard_restores_terminal_on_exception(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    device = KeyboardDevice(KeyboardConfig(tty=path))
    with pytest.raises(ZeroDivisionError), device:
        assert not termios.tcgetattr(device.fd)[3] & termios.ICANON
        1 / 0  # noqa: B018
    assert device.fd is None
    slave = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        assert termios.tcgetattr(slave)[3] & termios.ICANON
    finally:
        os.close(slave)


def test_keyboard_keys_held_while_driving_do_not_decide(pty_pair: tuple[int, str]) -> None:
    """A terminal repeats a held key: braking with s, then ending with enter, must not keep
    the episode as a success. After driving, a driving key counts once none has come for
    settle_s; other keys count at once."""
    master, path = pty_pair
    clock = FakeClock()
    device = KeyboardDevice(KeyboardConfig(layout="car", tty=path), clock=clock)
    with device:
        os.write(master, b"ss\r")
        assert select.select([device.fd], [], [], 2.0)[0]
        assert device.read().events == ("end",)
        device.set_mode("review")  # at t = 0: settles until 0.4
        for t in (0.2, 0.5):  # s still repeating: each byte moves the end of the settling
            clock.t = t
            os.write(master, b"s")
            assert select.select([device.fd], [], [], 2.0)[0]
            assert device.read().events == ()
        clock.t = 0.6
        os.write(master, b"f")  # not a driving key: counts at once
        assert select.select([device.fd], [], [], 2.0)[0]
        assert device.read().events == ("failure",)
        clock.t = 1.0
        os.write(master, b"s")  # released for 0.5 s: now s means success
        assert select.select([device.fd], [], [], 2.0)[0]
        assert device.read().events == ("success",)


def test_keyboard_refuses_a_non_terminal() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(DeviceError, match="not a terminal"):
            KeyboardDevice(fd=r).connect()
    finally:
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------------- mappers
class ScriptedDevice:
    """Returns the queued states, then no input."""

    def __init__(self, *states: DeviceState) -> None:
        self.states = list(states)

    def read(self) -> DeviceState:
        return self.states.pop(0) if self.states else DeviceState()


def test_deadzone_rescales() -> None:
    assert deadzone(0.05, 0.05) == 0.0 and deadzone(-0.04, 0.05) == 0.0
    assert deadzone(0.525, 0.05) == pytest.approx(0.5)
    assert deadzone(-2.0, 0.1) == -1.0


def test_car_mapper_deadman_deadzone_and_bounds() -> None:
    low, high = np.array([-0.5, -0.2]), np.array([0.5, 0.3])
    m = CarMapper(CarMapperConfig("-lx", "ly", deadzone=0.1, enable_button="rb"), low, high)
    full = {"lx": -1.0, "ly": -1.0}
    action, active = m(DeviceState(full), {})
    assert not active and np.all(action == 0), "no deadman: no drive"
    action, active = m(DeviceState(full, frozenset({"rb"})), {})
    assert active
    np.testing.assert_allclose(action, [0.5, -0.2])  # clipped to the bounds
    action, active = m(DeviceState({"lx": 0.05}, frozenset({"rb"})), {})
    assert active and np.all(action == 0)  # deadman held: the human holds the car still
    free = CarMapper(CarMapperConfig("steer", "throttle", deadzone=0.1), -np.ones(2), np.ones(2))
    assert not free(DeviceState({"steer": 0.09, "throttle": -0.09}), {})[1]


def test_arm_mapper_integrates_from_current_joints() -> None:
    joints = ("a", "b", "g")
    cfg = ArmMapperConfig(axes={"a": "x", "b": "-y"}, joint_rate=2.0, gripper_joint="g",
                          gripper_open="o", gripper_close="c", gripper_rate=1.0, deadzone=0.0)
    m = ArmMapper(cfg, joints, np.array([-1.0, -1.0, 0.0]), np.array([1.0, 1.0, 1.0]),
                  dt=0.1, state_index=[3, 4, 5])
    obs = {"observation.state": np.array([9, 9, 9, 0.5, 0.0, 0.2])}
    a, active = m(DeviceState({"x": 1.0, "y": 0.5}, frozenset({"c"})), obs)
    assert active
    np.testing.assert_allclose(a, [0.7, -0.1, 0.1])
    for _ in range(5):
        a, _ = m(DeviceState({"x": 1.0, "y": 0.5}, frozenset({"c"})), obs)
    np.testing.assert_allclose(a, [1.0, -0.6, 0.0])  # a and the gripper clamped at bounds
    a, active = m(DeviceState(), obs)
    assert not active
    np.testing.assert_allclose(a, [1.0, -0.6, 0.0])  # no input: the target stays
    m.release()
    a, _ = m(DeviceState(), obs)
    np.testing.assert_allclose(a, [0.5, 0.0, 0.2])  # released: from the joints again
    with pytest.raises(ValueError, match="unknown joint"):
        ArmMapper(ArmMapperConfig(axes={"elbow": "x"}), joints, np.zeros(3), np.ones(3), 0.1)


def test_intervention_held_half_a_second_after_last_input() -> None:
    clock = FakeClock()
    go = DeviceState({"steer": 1.0})
    teleop = Teleop(ScriptedDevice(go, DeviceState(), DeviceState(), DeviceState()),  # type: ignore[arg-type]
                    CarMapper(CarMapperConfig(), -np.ones(2), np.ones(2)), clock=clock)
    np.testing.assert_allclose(teleop.get_action({}), [1.0, 0.0])
    clock.t = 0.3
    np.testing.assert_allclose(teleop.get_action({}), [0.0, 0.0])  # held, hands off the stick
    clock.t = 0.5
    assert teleop.get_action({}) is not None
    clock.t = 0.51
    assert teleop.get_action({}) is None


# --------------------------------------------------------------------------- SpaceMouse
# Reports as the hidraw node delivers them (report ID first), bytes as in pyspacemouse's
# devices.toml: SpaceMouse Compact translation / rotation / buttons, SpaceMouse Wireless 13 bytes.
COMPACT_TRANSLATION = bytes.fromhex("01 5e01 38ff 0000")  # x=350, y=-200, z=0
COMPACT_ROTATION = bytes.fromhex("02 0000 0000 9cff")  # rx=0, ry=0, rz=-100
COMPACT_BUTTONS = bytes.fromhex("03 02 00")  # right button
WIRELESS = bytes.fromhex("01 0a00 0000 e803 0000 afff 0100")  # x=10 z=1000 ry=-81 rz=1


def test_spacemouse_report_parser() -> None:
    assert parse_report(COMPACT_TRANSLATION).axes == {"x": 350, "y": 200, "z": 0}
    assert parse_report(COMPACT_ROTATION).axes == {"pitch": 0, "roll": 0, "yaw": -100}
    assert parse_report(COMPACT_BUTTONS).buttons == frozenset({1})
    assert parse_report(bytes.fromhex("03 00 00")).buttons == frozenset()
    assert parse_report(WIRELESS).axes == {"x": 10, "y": 0, "z": -1000, "pitch": 0,
                                           "roll": 81, "yaw": 1}
    assert parse_report(bytes.fromhex("17 5f")) is None  # battery level: ignored
    assert parse_report(b"\x01\x00") is None  # truncated


def test_spacemouse_device_over_packet_socket(arm) -> None:  # type: ignore[no-untyped-def]
    ours, dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    cfg = SpaceMouseConfig(layout="car", events={"btn2": "takeover"})
    try:
        with SpaceMouseDevice(cfg, fd=dev.fileno()) as device:
            for report in (COMPACT_TRANSLATION, COMPACT_ROTATION, COMPACT_BUTTONS):
                ours.send(report)
            state = device.read()
            assert state.axes["x"] == 1.0 and state.axes["y"] == pytest.approx(200 / 350)
            assert state.axes["yaw"] == pytest.approx(-100 / 350)
            assert state.buttons == {"btn1"} and state.events == ()
            ours.send(bytes.fromhex("03 06 00"))
            assert device.read().events == ("takeover",)
            assert device.read().events == (), "one event per press"
            device.set_mode("review")
            ours.send(bytes.fromhex("03 00 00"))
            ours.send(bytes.fromhex("03 01 00"))  # left button after an episode: discard
            assert device.read().events == ("discard",)
            ours.send(WIRELESS)
            assert device.read().axes["z"] == -1.0  # clipped
    finally:
        ours.close()
        dev.close()
    mapper = make_teleop("spacemouse", arm).mapper
    q = np.array(HOME)
    a, active = mapper(DeviceState({"yaw": 1.0}, frozenset({"btn1"})), arm_obs(q))
    assert active
    assert a[0] == pytest.approx(q[0] + 0.5 / arm.fps)
    assert a[5] == pytest.approx(q[5] + 1.5 / arm.fps)


# --------------------------------------------------------------------------- gamepad
def test_gamepad_normalises_sdl_readings() -> None:
    axes, held = normalise([-32768, -32767, 16384, 0, 32767, 0],
                           [b in ("a", "rb") for b in BUTTONS])
    assert axes["lx"] == -1.0 and axes["ly"] == 1.0 and axes["rx"] == pytest.approx(16384 / 32767)
    assert axes["lt"] == 1.0 and axes["trig"] == -1.0
    assert held == {"a", "rb"}


def test_gamepad_through_sdl_virtual_controller(car) -> None:  # type: ignore[no-untyped-def]
    """A virtual game controller attached inside SDL (SDL_JoystickAttachVirtual, SDL >= 2.0.14)
    through pygame's own SDL library: the device reads it exactly as a USB pad."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    pygame = pytest.importorskip("pygame")
    pygame.quit()  # whatever an earlier test left initialised: start SDL's subsystems afresh
    pygame.display.init()
    pygame.joystick.init()
    with open("/proc/self/maps") as f:  # pygame's own SDL (another library may map another)
        libs = {line.split()[-1] for line in f if "libSDL2-2" in line or "libSDL2.so" in line}
    libs = {p for p in libs if "pygame" in p} or libs
    if not libs:
        pytest.skip("cannot find pygame's SDL library")
    sdl = ctypes.CDLL(sorted(libs)[0])
    sdl.SDL_JoystickOpen.restype = ctypes.c_void_p
    sdl.SDL_JoystickSetVirtualAxis.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int16]
    sdl.SDL_JoystickSetVirtualButton.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint8]
    index = sdl.SDL_JoystickAttachVirtual(1, 6, 15, 0)  # type 1: SDL_JOYSTICK_TYPE_GAMECONTROLLER
    if index < 0:
        pytest.skip("this SDL has no virtual joysticks")
    joy = sdl.SDL_JoystickOpen(index)
    try:
        teleop = make_teleop("gamepad", car, index=index)
        with teleop:
            assert teleop.get_action({}) is None
            sdl.SDL_JoystickSetVirtualAxis(joy, 0, -32768)  # left stick full left
            sdl.SDL_JoystickSetVirtualAxis(joy, 1, -16384)  # half up (SDL: y down positive)
            assert teleop.get_action({}) is None, "deadman (rb) not held"
            sdl.SDL_JoystickSetVirtualButton(joy, BUTTONS.index("rb"), 1)
            sdl.SDL_JoystickSetVirtualButton(joy, BUTTONS.index("start"), 1)
            sdl.SDL_JoystickSetVirtualButton(joy, BUTTONS.index("y"), 1)  # nothing while driving
            a = teleop.get_action({})
            np.testing.assert_allclose(a, [1.0, (16384 / 32767 - 0.1) / 0.9], rtol=1e-4)
            teleop.get_action({})
            assert teleop.poll_events() == ["end"], "one event per press"
            teleop.set_mode("review")
            assert teleop.device.read().events == (), "a button held from driving: no event"
            sdl.SDL_JoystickSetVirtualButton(joy, BUTTONS.index("y"), 0)
            teleop.device.read()
            sdl.SDL_JoystickSetVirtualButton(joy, BUTTONS.index("y"), 1)
            assert teleop.device.read().events == ("success",)
    finally:
        sdl.SDL_JoystickDetachVirtual(index)
