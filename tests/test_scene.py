"""What a real arm's practice needs beyond the simulator: the cube's position from a fixed camera
(``robot.cube_camera``), and a scene set and judged by someone between episodes
(``robolearn.scene``: a person at the terminal; the emulated SO-101's experimenter)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import sim  # noqa: F401  (the headless GL backend, before mujoco loads)
from robolearn.env import ENVS, RobotEnv, make_env
from sim import require_rendering

LIFT = "robolearn/SimArmLift-v0"


def _arm(**kw: object) -> RobotEnv:
    return make_env(**{**ENVS[LIFT], "robot_kwargs": {"cameras": ["front"], **kw}})


def _errors(pose: list[float] | None, seeds: range) -> np.ndarray:
    """xy distance (m) between the finder's cube and the true one, over fresh layouts."""
    from sim.arm.cube_finder import CubeFinder

    env = make_env(**{**ENVS[LIFT], "robot_kwargs": {"cameras": ["front"]}})
    finder = CubeFinder(pose)
    try:
        out = []
        for s in seeds:
            obs, _ = env.reset(seed=s)
            found = finder.locate(obs["observation.images.front"])
            assert found is not None, f"seed {s}: the cube was not seen"
            out.append(np.linalg.norm(found[:2] - obs["observation.environment_state"][:2]))
        return np.asarray(out)
    finally:
        env.close()


def test_the_cube_is_found_where_it_is_from_the_front_camera() -> None:
    """From the 64x64 front frame alone the cube's table position is within millimetres of the
    truth; a camera pose 4 cm off (a badly measured set-up) misplaces it by centimetres."""
    require_rendering("test")
    from sim.arm.cube_finder import scene_camera_pose

    err = _errors(None, range(30))
    assert np.median(err) < 0.006 and err.max() < 0.025, err
    wrong = scene_camera_pose()
    wrong[1] += 0.04  # the camera measured 4 cm to the side of where it is
    assert np.median(_errors(wrong, range(10))) > 0.025


def test_the_arm_observes_the_found_cube_instead_of_the_true_pose() -> None:
    """``cube_camera=front``: ``observation.environment_state`` is the finder's 7 values (cube,
    seen, cube minus the tool centre point from the joints), close to the simulator's truth."""
    require_rendering("test")
    truth_env, env = _arm(), _arm(cube_camera="front")
    try:
        feat = env.features["observation.environment_state"]
        assert feat.shape == (7,) and feat.names is not None and feat.names[3] == "seen"
        for s in range(5):
            seen, _ = env.reset(seed=s)
            truth, _ = truth_env.reset(seed=s)
            est, real = seen["observation.environment_state"], \
                truth["observation.environment_state"]
            assert est[3] == 1.0
            assert np.linalg.norm(est[:2] - real[:2]) < 0.025
            assert np.linalg.norm(est[4:7] - real[10:13]) < 0.03  # cube - tcp
    finally:
        env.close()
        truth_env.close()


def test_a_cube_out_of_sight_reads_unseen_at_its_last_place() -> None:
    require_rendering("test")
    from sim.arm.cube_finder import CubeFinder

    env = _arm()
    try:
        obs, _ = env.reset(seed=3)
        finder = CubeFinder()
        q = obs["observation.state"][:6]
        first = finder.observe(obs["observation.images.front"], q)
        grey = np.full_like(obs["observation.images.front"], 128)  # the arm in the way
        hidden = finder.observe(grey, q)
    finally:
        env.close()
    assert first[3] == 1.0 and hidden[3] == 0.0
    np.testing.assert_array_equal(hidden[:3], first[:3])
    assert finder.unseen == 1 and finder.frames == 2


def test_cube_camera_settings_are_checked() -> None:
    from robolearn.robot import make_robot

    with pytest.raises(ValueError, match="cube_camera: 'wrist' is not an observed camera"):
        make_robot("sim_arm", cameras=["front"], cube_camera="wrist")
    with pytest.raises(ValueError, match="cube_camera_pose: need 10 finite numbers"):
        make_robot("sim_arm", cameras=["front"], cube_camera="front",
                   cube_camera_pose=[0.5, 0, 0.3])
    with pytest.raises(ValueError, match="cube_camera_pose is set but cube_camera is not"):
        make_robot("so101", port="/dev/null", cube_camera_pose=[0] * 10)


def test_a_person_sets_each_scene_and_judges_each_episode(tmp_path: Path) -> None:
    """``scene=person``: the actor waits for Enter after the arm homed, and records the
    person's answer as each episode's success (y, n, or unknown), not the simulator's."""
    from data import EpisodeStore
    from robolearn.practice.actor import Actor, ActorConfig
    from robolearn.practice.link import LinkServer
    from robolearn.scene import PersonScene
    from tests.practice_util import FakeLearner

    said = io.StringIO()
    person = PersonScene("arm", stdin=io.StringIO("\ny\n\nmaybe\nn\n\n\n"), stdout=said)
    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive).start()
    try:
        cfg = ActorConfig(learner=server.address, env=LIFT, output=str(tmp_path / "a"),
                          env_steps=15, max_episode_steps=5, time_scale=10)
        assert Actor(cfg, scene=person).run() == 0
    finally:
        server.stop(0)
    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        verdicts = [info.success for info in store.infos()]
    assert verdicts == [True, False, None]
    text = said.getvalue()
    assert text.count("set the scene") == 3 and text.count("did it succeed") == 4, text


def test_a_person_who_does_not_answer_is_named() -> None:
    from robolearn.scene import PersonScene

    with pytest.raises(EOFError, match="no one answered .*set the scene"):
        PersonScene("arm", stdin=io.StringIO(""), stdout=io.StringIO()).set_up(0)


def test_a_scene_task_sets_each_scene_from_the_episode_or_a_given_layout_seed() -> None:
    """The scene's layout seed comes from the episode's seed (the same episode seed, the
    same scene), or is the one set in ``layout_seed`` (a bench matching the simulated
    evaluation of that seed)."""
    from robolearn.scene import Scene, SceneTask

    class Layouts(Scene):  # a scene that only notes the layouts it was asked for
        def __init__(self) -> None:
            self.seeds: list[int] = []

        def set_up(self, seed: int) -> None:
            self.seeds.append(seed)

    env = make_env(**ENVS[LIFT])
    try:
        scene = Layouts()
        env.task = task = SceneTask(env.task, scene)
        env.reset(seed=5)
        env.reset(seed=5)
        env.reset(seed=6)
        task.layout_seed = 100_000
        env.reset(seed=5)
    finally:
        env.close()
    drawn = scene.seeds[:3]
    assert drawn[0] == drawn[1] != drawn[2] and scene.seeds[3] == 100_000, scene.seeds


def test_a_stop_ends_the_wait_for_a_person_without_losing_lines() -> None:
    """On a pipe (a terminal's file descriptor), answers typed ahead in one write are each
    read by their own prompt; a stop while waiting ends set_up with SceneStopped and a
    verdict as unknown, within a poll, instead of blocking on a readline."""
    import os
    import threading
    import time

    from robolearn.scene import PersonScene, SceneStopped

    r, w = os.pipe()
    stop = threading.Event()
    with os.fdopen(r) as stdin:
        person = PersonScene("arm", stdin=stdin, stdout=io.StringIO(), stop=stop)
        os.write(w, b"\ny\nn\n")
        person.set_up(0)
        assert person.verdict(False) is True and person.verdict(True) is False
        threading.Timer(0.3, stop.set).start()
        t0 = time.monotonic()
        with pytest.raises(SceneStopped, match="set the scene"):
            person.set_up(1)
        assert 0.25 < time.monotonic() - t0 < 2.0
        assert person.verdict(True) is None  # stopped: recorded as unknown
    os.close(w)


def test_a_stopped_actor_does_not_wait_for_the_person(tmp_path: Path) -> None:
    """The practice actor (SIGTERM sets its stop) waiting for a person to set the scene
    stops within a poll, halts the robot and exits 0, with nothing recorded."""
    import os
    import signal
    import threading
    import time

    from data import EpisodeStore
    from robolearn.practice.actor import Actor, ActorConfig
    from robolearn.practice.link import LinkServer
    from robolearn.scene import PersonScene
    from tests.practice_util import FakeLearner

    class Said(io.StringIO):
        asked = threading.Event()

        def write(self, text: str) -> int:
            if "set the scene" in text:
                self.asked.set()
            return super().write(text)

    r, w = os.pipe()
    said = Said()
    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive).start()
    stopped_at = [0.0]
    try:
        with os.fdopen(r) as stdin:
            cfg = ActorConfig(learner=server.address, env=LIFT, output=str(tmp_path / "a"),
                              env_steps=15, max_episode_steps=5, time_scale=10)
            actor = Actor(cfg, scene=PersonScene("arm", stdin=stdin, stdout=said))

            def sigterm_while_asked() -> None:
                assert said.asked.wait(60)
                time.sleep(0.5)  # the person has not answered yet
                stopped_at[0] = time.monotonic()
                actor.stop.set()  # what the actor's SIGTERM handler does

            threading.Thread(target=sigterm_while_asked, daemon=True).start()
            before = signal.getsignal(signal.SIGTERM)
            assert actor.run() == 0
            assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
            took = time.monotonic() - stopped_at[0]
            assert stopped_at[0] > 0 and took < 5, took
    finally:
        server.stop(0)
        os.close(w)
    assert said.getvalue().count("set the scene") == 1
    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        assert len(store) == 0


def test_the_emulated_arm_sees_the_cube_its_experimenter_placed(tmp_path: Path) -> None:
    """The emulated SO-101 through its driver (lerobot's bus and network camera, JPEG frames):
    after the experimenter sets each scene, the driver's camera-found cube is where the
    emulator's simulation has it; the experimenter judges an untouched cube not lifted."""
    require_rendering("test")
    from hardware.emulators.rig import calibrated_so101
    from hardware.emulators.scene import Experimenter
    from robolearn.robot import make_robot

    with calibrated_so101(str(tmp_path), "scene", ["front"]) as rig:
        plant = rig.plant
        arm = make_robot("so101", port=rig.port, calibration_dir=str(tmp_path), id="scene",
                         cameras=rig.cameras, capture_width=64, capture_height=64,
                         cube_camera="front", home_s=0.3)
        judge = Experimenter(plant)
        try:
            with arm:
                m = plant.model
                adr = m.jnt_qposadr[m.joint("cube").id]
                for seed in (1, 2, 3):
                    arm.reset()
                    judge.set_up(seed)
                    est = arm.observe()["observation.environment_state"]
                    cube = plant.data.qpos[adr:adr + 3]
                    assert est[3] == 1.0, f"seed {seed}: cube not seen"
                    assert np.linalg.norm(est[:2] - cube[:2]) < 0.025, (seed, est, cube)
                    assert not judge.success()
        finally:
            judge.close()
    assert judge.placed == 3


def test_one_person_is_not_asked_to_answer_for_several_arms() -> None:
    from robolearn.practice.actor import ActorConfig
    from robolearn.practice.session import PracticeConfig
    from robolearn_core.config import InvalidValue

    with pytest.raises(InvalidValue, match="one terminal per robot"):
        PracticeConfig(env=LIFT, actors=2, actor_args=["scene=person"])
    with pytest.raises(InvalidValue, match="scene.*none or person"):
        ActorConfig(env=LIFT, scene="robot")
    # a leader arm takes over during practice as in deploy; an unknown device is named
    assert ActorConfig(env=LIFT, teleop="so101_leader").teleop == "so101_leader"
    with pytest.raises(InvalidValue, match="so101_leader.*got 'joystick'"):
        ActorConfig(env=LIFT, teleop="joystick")
    # a person answering the scene and a keyboard driving cannot share one terminal
    with pytest.raises(InvalidValue, match="both read this terminal"):
        ActorConfig(env=LIFT, teleop="keyboard", scene="person")
    assert ActorConfig(env=LIFT, teleop="keyboard", scene="person",
                       teleop_config={"tty": "/dev/pts/7"}).scene == "person"


def test_the_practice_actor_on_the_emulated_arm_sees_each_new_scene(tmp_path: Path) -> None:
    """The actor practising on the emulated SO-101 with its experimenter as the scene: each
    episode's first observation already shows the cube where the experimenter just put it (not
    the previous scene's last frame), and each episode's recorded success is the
    experimenter's verdict (random actions lift nothing: False, not unknown)."""
    require_rendering("test")
    from data import EpisodeStore
    from hardware.emulators.rig import calibrated_so101
    from hardware.emulators.scene import Experimenter
    from robolearn.practice.actor import Actor, ActorConfig
    from robolearn.practice.link import LinkServer
    from tests.practice_util import FakeLearner

    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive).start()
    with calibrated_so101(str(tmp_path / "cal"), "act", ["front"]) as rig:
        judge = Experimenter(rig.plant)
        try:
            cfg = ActorConfig(
                learner=server.address, env="robolearn/SO101-v0", robot={
                    "port": rig.port, "calibration_dir": str(tmp_path / "cal"), "id": "act",
                    "cameras": rig.cameras, "capture_width": 64, "capture_height": 64,
                    "cube_camera": "front", "home_s": 0.3},
                output=str(tmp_path / "a"), env_steps=24, max_episode_steps=8,
                observations=["observation.state", "observation.environment_state"])
            assert Actor(cfg, scene=judge).run() == 0
        finally:
            judge.close()
            server.stop(0)
    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        firsts = [np.asarray(store.episode(i, ["observation.environment_state"])[
            "observation.environment_state"])[0] for i in range(len(store))]
        verdicts = [info.success for info in store.infos()]
    assert len(firsts) == 3 and judge.placed == 3 and verdicts == [False] * 3
    for k, (seen, put) in enumerate(zip(firsts, judge.placements, strict=True)):
        assert seen[3] == 1.0 and np.linalg.norm(seen[:2] - np.asarray(put[:2])) < 0.025, \
            (k, seen, put)
