"""The simulated car: gymnasium contract, determinism, action limits, the scripted driver, and
FastRLAP's collision / flip / stuck detection and recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robolearn.env import make_env
from sim.car.__main__ import driver_success_rate
from sim.car.robot import STATE_NAMES, SimCar
from sim.car.tracks import Track, TrackError, available_tracks

TRACKS = ["oval", "chicane", "technical"]


def car_env(track: str = "oval", **robot_kwargs):
    return make_env(robot="sim_car", task="car_laps", max_steps=200,
                    robot_kwargs={"track": track, **robot_kwargs})


@pytest.fixture
def robot():
    r = SimCar(track="oval")
    r.connect()
    yield r
    r.disconnect()


def test_tracks_are_data():
    assert set(TRACKS) <= set(available_tracks())
    lengths = {}
    for name in TRACKS:
        tr = Track.load(name)
        lengths[name] = tr.length
        # the walls sit width/2 either side of a closed, evenly sampled centreline
        assert np.allclose(np.linalg.norm(tr.left_wall - tr.right_wall, axis=1), tr.width)
        gaps = np.linalg.norm(np.diff(np.vstack([tr.centreline, tr.centreline[:1]]), axis=0),
                              axis=1)
        assert gaps.max() < 0.06
        assert len(tr.checkpoints) >= 20
        assert tr.progress(tr.checkpoints[5]) == pytest.approx(tr.checkpoint_s[5], abs=0.06)
    # difficulty: the technical track's tightest turn is tighter than the oval's
    rmin = {n: 1 / np.abs(Track.load(n).curvature).max() for n in TRACKS}
    assert rmin["technical"] < rmin["chicane"] < rmin["oval"]


@pytest.mark.parametrize("track", TRACKS)
def test_check_env(track):
    env = car_env(track)
    check_env(env.unwrapped, skip_render_check=True)
    names = env.robot.observation_features["observation.state"].names
    assert names == STATE_NAMES and env.action_space.shape == (2,)
    env.close()


def test_check_env_camera():
    env = car_env("oval", camera=True)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    img = obs["observation.images.front"]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert img.std() > 5  # not a blank frame: floor, sky and walls are in view
    frame = env.robot.render("overview")
    assert frame.shape == (240, 320, 3) and frame.std() > 5
    env.close()


def rollout(env, seed: int, n: int = 60) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    states = [obs["observation.state"]]
    for _ in range(n):
        obs, *_ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        states.append(obs["observation.state"])
    return np.stack(states)


def test_seeded_reset_reproduces():
    env = car_env("chicane")
    a, b, c = rollout(env, 7), rollout(env, 7), rollout(env, 8)
    assert np.array_equal(a, b)
    assert np.array_equal(a, rollout(car_env("chicane"), 7))  # and in a fresh env
    assert not np.allclose(a[0], c[0])  # another seed starts somewhere else
    assert np.abs(a[-1, :2] - a[0, :2]).max() > 0.05  # and the car did move
    env.close()


def test_actions_clipped_rate_limited_and_nan_safe(robot):
    robot.reset(seed=0)
    sent = robot.act(np.array([5.0, -7.0]))
    assert np.all(np.abs(sent) <= 1.0)
    assert np.allclose(sent, [0.2, -0.2])  # at most 0.2 per step from the (0, 0) start
    for _ in range(10):
        sent = robot.act(np.array([5.0, 7.0]))
    assert np.allclose(sent, [1.0, 1.0])
    assert np.abs(robot.data.ctrl[:2]).max() <= robot.config.max_steer + 0.2  # Ackermann
    sent = robot.act(np.array([np.nan, 0.5]))
    assert sent[0] == pytest.approx(1.0) and sent[1] == 0.0  # stop: hold steer, no throttle
    assert np.isfinite(robot.data.ctrl).all() and robot.data.ctrl[2:].tolist() == [0.0, 0.0]
    robot.act(np.array([0.3, np.inf]))
    assert np.isfinite(robot.data.ctrl).all() and np.isfinite(robot.data.qpos).all()
    free = SimCar(track="oval", max_action_delta=0.0)
    free.reset(seed=0)
    assert np.array_equal(free.act(np.array([3.0, -3.0])), [1.0, -1.0])


@pytest.mark.parametrize("track", TRACKS)
def test_driver_completes_laps(track):
    r = driver_success_rate(track, episodes=2, seed=10)
    assert r["success_rate"] == 1.0
    length = Track.load(track).length
    assert length / 5.0 < r["mean_lap_time"] < length / 1.0  # between max and a crawl speed


def test_tyres_slide_at_speed(robot):
    """Full steering: near the kinematic (no-slip) yaw rate slowly, far below it at speed."""
    cfg = robot.config
    ratio = {}
    for throttle in (0.2, 0.6):  # ~1 m/s and ~3 m/s on the oval's first straight
        robot.reset(seed=0, options={"checkpoint": 0, "lateral": 0.0, "yaw": 0.19})
        for _ in range(25):
            robot.act(np.array([0.0, throttle]))
        for _ in range(6):
            robot.act(np.array([1.0, throttle]))
        st = robot.state()
        kinematic = st["v_body"][0] * np.tan(cfg.max_steer) / cfg.wheelbase
        ratio[throttle] = st["yaw_rate"] / kinematic
    assert ratio[0.2] > 0.6 and ratio[0.6] < 0.5 * ratio[0.2]


def drive_into_wall(env) -> list[dict]:
    env.reset(seed=0, options={"checkpoint": 0, "lateral": 0.0, "yaw": 1.0})
    infos = []
    for _ in range(40):
        _, reward, _, _, info = env.step(np.array([0.0, 0.5], dtype=np.float32))
        infos.append({**info, "reward": reward})
        if info["reward_terms"]["collision"]:
            break
    return infos


def test_driving_into_wall_is_a_collision():
    env = car_env("oval")
    infos = drive_into_wall(env)
    assert infos[0]["reward_terms"]["collision"] == 0.0
    assert infos[-1]["reward_terms"]["collision"] == 1.0
    assert env.robot.state()["collision"]
    # the collision weight makes that step's reward lower than its progress alone
    assert infos[-1]["reward"] < infos[-1]["reward_terms"]["progress"]
    env.close()


def test_recovery_backs_away_from_wall():
    env = car_env("oval")
    drive_into_wall(env)
    robot = env.robot
    half = robot.track.width / 2
    before = half - abs(robot.state()["lateral"])  # m from the wall (centre of chassis)
    robot.recover()
    st = robot.state()
    assert not st["collision"] and not st["stuck"]
    assert half - abs(st["lateral"]) > before + 0.2
    env.close()


def test_flip_detected_and_righted(robot):
    robot.reset(seed=0)
    assert not robot.state()["flipped"]
    robot.data.qpos[2] = 0.3
    robot.data.qpos[3:7] = [0.0, 1.0, 0.0, 0.0]  # upside down (pi about x)
    robot.refresh()
    assert robot.state()["flipped"]
    env = car_env("oval")
    env.reset(seed=0)
    env.robot.data.qpos[3:7] = [0.0, 1.0, 0.0, 0.0]
    env.robot.data.qpos[2] = 0.3
    *_, terminated, _, info = env.step(np.zeros(2, dtype=np.float32))
    assert terminated and info["failure"]
    t = env.robot.state()["time"]
    env.robot.recover()
    st = env.robot.state()
    assert not st["flipped"] and abs(st["lateral"]) < 0.05 and st["time"] > t
    env.close()


def test_stuck_after_standing_still(robot):
    robot.reset(seed=0)
    for t in range(40):
        robot.act(np.array([0.0, 0.0]))
        if t < 25:
            assert not robot.state()["stuck"]
    assert robot.state()["stuck"]
    robot.reset(seed=0)
    for _ in range(40):  # driving away is not stuck
        robot.act(np.array([0.0, 0.4]))
    assert not robot.state()["stuck"]


def test_a_car_restored_from_a_snapshot_steps_as_if_nothing_was_tried(robot):
    """Lookahead (the teacher's value rule) plays actions forward and restores: the episode
    then goes on bit for bit as without it, through wall contacts and the stuck window."""
    def drive(lookahead: bool) -> list[tuple]:
        robot.reset(seed=3)
        out = []
        for i in range(150):
            if lookahead:
                snap = robot.snapshot()
                for _ in range(30):  # full lock and throttle: into a wall
                    robot.act(np.array([1.0, 1.0]))
                tried = robot.state()
                robot.restore(snap)
                assert not np.array_equal(tried["pos"], robot.state()["pos"])
            robot.act(np.array([np.sin(i / 10), 0.6]))
            s = robot.state()
            out.append((robot.observe()["observation.state"].copy(), s["collision"],
                        s["stuck"], s["progress"], s["time"]))
        return out

    plain, tried = drive(False), drive(True)
    assert sum(row[1] for row in plain) > 0  # it did touch walls on the way
    for a, b in zip(plain, tried, strict=True):
        assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]


def write_track(tmp_path: Path, spec: object, name: str = "bad.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return p


GOOD = {"width": 1.5, "checkpoint_spacing": 1.0,
        "points": [[0, 0], [5, 0], [8, 3], [5, 6], [0, 6], [-3, 3]]}


@pytest.mark.parametrize("change,field", [
    ({"width": -1.0}, "width"),
    ({"width": None}, "width"),
    ({"points": [[0, 0], [1, 0]]}, "points"),
    ({"points": "oval"}, "points"),
    ({"checkpoint_spacing": 0}, "checkpoint_spacing"),
    ({"wdith": 1.5}, "wdith"),
    ({"points": [[0, 0], [4, 0], [4.3, 0.3], [4, 0.6], [0, 4]]}, "points"),  # too tight
])
def test_bad_track_names_file_and_field(tmp_path, change, field):
    spec = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    p = write_track(tmp_path, spec)
    with pytest.raises(TrackError, match=field) as e:
        Track.load(p)
    assert str(p) in str(e.value)
    with pytest.raises(TrackError, match="bad.json"):
        SimCar(track=str(p))


def test_bad_track_json_and_unknown_name(tmp_path):
    p = write_track(tmp_path, "{not json", "broken.json")
    with pytest.raises(TrackError, match="broken.json"):
        Track.load(p)
    with pytest.raises(TrackError, match="oval"):  # lists the known tracks
        Track.load("nurburgring")
    assert Track.load(write_track(tmp_path, GOOD, "good.json")).length > 10
