"""Practice across processes: the gRPC link (real gRPC over loopback, real TLS), the learner
and actors as real subprocesses killed with SIGKILL, FastRLAP's course from a demo lap.
HIL-SERL's reward and interventions: ``test_hilserl.py``."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robolearn.practice.link import ActorLink, LinkServer
from robolearn.practice.security import Security
from robolearn_core.config import ConfigError
from tests.practice_util import ROOT, FakeLearner, cli, frames, row, wait


def test_the_generated_grpc_code_matches_link_proto(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
                    f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", "robolearn/practice/link.proto"],
                   cwd=ROOT, check=True)
    for name in ("link_pb2.py", "link_pb2.pyi", "link_pb2_grpc.py"):
        assert (tmp_path / "robolearn/practice" / name).read_text() == \
            (ROOT / "robolearn/practice" / name).read_text(), f"regenerate {name} (link.proto)"


def test_every_actor_gets_every_weight_version_in_chunks() -> None:
    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive, chunk_bytes=64 << 10,
                        max_actors=4).start()
    links: list[ActorLink] = []
    try:
        # one actor before the first publish, two after: LeRobot's shared queue hands each push
        # to one stream; here each stream tracks its own version
        links.append(ActorLink(server.address, "a0", {}).start())
        assert links[0].wait_up(10)
        w1 = np.random.default_rng(0).standard_normal(1_500_000).astype(np.float32)  # 6 MB
        server.publish({"w": w1}, learner_step=1)
        links += [ActorLink(server.address, f"a{i}", {}).start() for i in (1, 2)]
        got = {}
        for link in links:
            wait(lambda link=link: link.stats.weight_versions >= 1, what="version 1")
            got[link.actor_id] = link.latest()
        for r in got.values():
            assert r is not None and r.version == 1 and np.array_equal(r.state["w"], w1)
        server.publish({"w": w1 + 1}, learner_step=2)
        for link in links:
            wait(lambda link=link: link.stats.weight_versions >= 2, what="version 2")
            r2 = link.latest()
            assert r2 is not None and r2.version == 2 and np.array_equal(r2.state["w"], w1 + 1)
    finally:
        for link in links:
            link.close()
        server.stop(0)


def test_more_actors_than_allowed_are_refused_not_left_hanging() -> None:
    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive, max_actors=1).start()
    a = ActorLink(server.address, "a", {}).start()
    assert a.wait_up(10)
    b = ActorLink(server.address, "b", {}).start()
    try:
        wait(lambda: "at most 1 actors" in b.stats.last_error, what="b's refusal")
        assert not b.up
    finally:
        a.close()
        b.close()
        server.stop(0)


def test_a_wrong_token_is_refused_and_an_open_bind_needs_tls_and_a_token() -> None:
    learner = FakeLearner()
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive,
                        security=Security(token="s3cret")).start()
    bad = ActorLink(server.address, "bad", {}, security=Security(token="guess")).start()
    good = ActorLink(server.address, "good", {}, security=Security(token="s3cret")).start()
    try:
        assert good.wait_up(10)
        wait(lambda: "wrong or missing token" in bad.stats.last_error, what="refusal")
        assert not bad.up and "bad" not in learner.rows
    finally:
        bad.close()
        good.close()
        server.stop(0)
    with pytest.raises(ConfigError, match="only with TLS and a shared token"):
        LinkServer("0.0.0.0:0", learner.hello, learner.receive, security=Security(token="x"))


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test cert")
def test_tls_with_a_token_off_loopback(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    learner = FakeLearner()
    sec = Security(token="t", tls_cert=str(cert), tls_key=str(key))
    server = LinkServer("0.0.0.0:0", learner.hello, learner.receive, security=sec).start()
    addr = f"localhost:{server.port}"
    tls = ActorLink(addr, "tls", {}, security=Security(token="t", tls_ca=str(cert))).start()
    plain = ActorLink(addr, "plain", {}, security=Security(token="t")).start()
    try:
        assert tls.wait_up(10)
        server.publish({"w": np.arange(4, dtype=np.float32)}, 1)
        wait(lambda: tls.stats.weight_versions == 1, what="weights over TLS")
        for i in range(10):
            tls.push(row(i))
        wait(lambda: tls.acked() == 10, what="acks over TLS")
        assert not plain.wait_up(1.5), "a plaintext client reached a TLS learner"
    finally:
        tls.close()
        plain.close()
        server.stop(0)


def test_a_restarted_learner_gets_every_transition_it_lacked_exactly_once() -> None:
    first = FakeLearner(durable=0)
    server = LinkServer("127.0.0.1:0", first.hello, first.receive).start()
    port = server.port
    link = ActorLink(server.address, "a", {}, liveness_s=1.0).start()
    try:
        assert link.wait_up(10)
        for i in range(300):
            link.push(row(i))
        wait(lambda: link.acked() == 300, what="300 acks")
        first.durable = 120  # a checkpoint took the first 120
        link.push(row(300))
        wait(lambda: link.acked() == 301 and link.held <= 301 - 120, what="durable ack")
        server.stop(0)  # the learner dies; its successor restores the checkpoint's 120
        wait(lambda: not link.up, what="link down")
        for i in range(301, 350):  # an actor that outlives its learner keeps what it makes
            link.push(row(i))
        second = FakeLearner({"a": [float(i) for i in range(120)]}, durable=120)
        server = LinkServer(f"127.0.0.1:{port}", second.hello, second.receive).start()
        assert link.wait_up(10)
        wait(lambda: link.acked() == 350, what="resend")
        assert second.rows["a"] == [float(i) for i in range(350)]
        assert link.stats.resent >= 301 - 120 and link.stats.disconnects == 1
    finally:
        link.close()
        server.stop(0)


# ---------------------------------------------------------------------- real processes

def start_learner(out: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cli("learner", str(out), f"address=127.0.0.1:{port}",
                                 "policy=sac", "start_after=200", "policy_config.batch_size=32",
                                 "checkpoint_every_s=0.5", "threads=1", *extra),
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("learner listening on"), line
    return proc


def start_actor(out: Path, port: int, aid: str, steps: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli("actor", f"127.0.0.1:{port}", f"actor_id={aid}",
                                 f"output={out}", f"env_steps={steps}", "time_scale=2",
                                 "liveness_s=1.0", f"seed={len(aid)}"), cwd=ROOT)


def events(actor_out: Path, name: str) -> list[dict[str, Any]]:
    f = actor_out / "events.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []
    return [r for r in rows if r["event"] == name]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def learner_counts(out: Path) -> dict[str, int]:
    import torch

    state = torch.load(out / "checkpoints" / "last" / "training_state.pt", weights_only=False)
    return {k: int(v) for k, v in state["next_seq"].items()}


def test_a_sigkilled_learner_loses_nothing_and_holds_the_robot_while_gone(tmp_path: Path
                                                                          ) -> None:
    port = _free_port()
    learner = start_learner(tmp_path / "learner", port)
    actor = start_actor(tmp_path / "a0", port, "a0", 700)
    store = tmp_path / "a0" / "episodes.zarr"
    try:
        wait(lambda: (store / "zarr.json").exists() and frames(store) > 100, 60, "steps")
        for k in (1, 2):
            time.sleep(1.0)
            learner.send_signal(signal.SIGKILL)
            learner.wait()
            wait(lambda k=k: len(events(tmp_path / "a0", "link_down")) == k, 10, "detection")
            time.sleep(1.0)
            learner = start_learner(tmp_path / "learner", port)
            t_back = time.time()  # it listens
            wait(lambda k=k: len(events(tmp_path / "a0", "first_step")) == k + 1, 20,
                 "resume")  # (+ the first connection's)
            down = events(tmp_path / "a0", "link_down")[-1]
            up = events(tmp_path / "a0", "link_up")[-1]
            first = events(tmp_path / "a0", "first_step")[-1]
            assert down["steps"] == up["steps"] == first["steps"] - 1, \
                "the robot acted while its learner was gone"
            assert first["time"] - t_back < 3.0  # 2 s is the target: bench.practice kill
        assert actor.wait(timeout=120) == 0
    finally:
        if actor.poll() is None:
            actor.kill()
        learner.send_signal(signal.SIGTERM)
        learner.wait(timeout=60)
    report = json.loads((tmp_path / "a0" / "actor.json").read_text())
    assert report["steps"] == 700 == report["sent"] == report["acked"] == frames(store)
    assert report["connects"] == 3 and report["disconnects"] == 2
    assert learner_counts(tmp_path / "learner") == {"a0": 700}


def test_a_sigkilled_actor_leaves_the_learner_serving_the_others(tmp_path: Path) -> None:
    port = _free_port()
    learner = start_learner(tmp_path / "learner", port)
    a = start_actor(tmp_path / "a", port, "a", 100_000)
    b = start_actor(tmp_path / "b", port, "bb", 400)
    try:
        wait(lambda: events(tmp_path / "a", "first_step"), 60, "actor a acting")
        time.sleep(1.0)
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert b.wait(timeout=120) == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        learner.send_signal(signal.SIGTERM)
        assert learner.wait(timeout=60) == 0
    counts = learner_counts(tmp_path / "learner")
    assert counts["bb"] == 400 and counts["a"] > 0


def test_practice_runs_a_learner_and_two_actors(tmp_path: Path) -> None:
    code = subprocess.run(cli("practice", str(tmp_path / "p"), "actors=2", "env_steps=300",
                               "time_scale=3", "policy=sac",
                               "learner_args=[start_after=100,policy_config.batch_size=32,"
                               "threads=1,publish_every_s=0.2]"), cwd=ROOT).returncode
    assert code == 0
    reports = [json.loads((tmp_path / "p" / f"actor{i}" / "actor.json").read_text())
               for i in (0, 1)]
    assert [r["acked"] for r in reports] == [300, 300]
    assert all(r["weight_versions"] >= 2 for r in reports), reports  # both got updates
    rows = [json.loads(x) for x in (tmp_path / "p" / "learner" / "metrics.jsonl")
            .read_text().splitlines()]
    assert rows and rows[-1]["received"] == 600 and rows[-1]["updates"] > 0


# ---------------------------------------------------------------------- FastRLAP's course
def test_a_course_from_a_demo_lap_drives_the_cars_checkpoints(tmp_path: Path) -> None:
    from bench.practice import record_demo
    from robolearn.env import ENVS, make_env
    from robolearn.practice.course import CourseConfig
    from robolearn.practice.course import run as make_course
    from sim.car.driver import PurePursuitDriver

    demo = tmp_path / "demo.zarr"
    lap = record_demo(demo, speed=2.0)
    course = tmp_path / "course.json"
    assert make_course(CourseConfig(store=str(demo), output=str(course), spacing=2.0)) == 0
    cps = np.asarray(json.loads(course.read_text())["checkpoints"])
    assert 12 <= len(cps) <= 15  # the oval is 27.6 m around
    with pytest.raises(ConfigError, match="exists"):
        make_course(CourseConfig(store=str(demo), output=str(course)))
    env = make_env(**{**ENVS["robolearn/SimCar-v0"],
                      "robot_kwargs": {"course": str(course)}})
    assert np.allclose(env.robot.state()["checkpoints"], cps[np.argsort(
        [env.robot.track.progress(p) for p in cps])])
    driver = PurePursuitDriver.for_robot(env.robot, speed=2.0)
    env.reset(seed=0)
    for _ in range(400):
        *_, info = env.step(driver(env.robot.state()))
        if env.task.laps:
            break
    assert env.task.laps == 1 and abs(env.task.lap_times[0] - lap) < 1.5
    env.close()


def test_a_path_that_never_closes_is_named(tmp_path: Path) -> None:
    from sim.car.tracks import TrackError, course_from_path

    with pytest.raises(TrackError, match="never comes back"):
        course_from_path(np.stack([np.linspace(0, 30, 100), np.zeros(100)], 1), 1.0)


def test_the_in_process_rl_runner_refuses_a_real_robot(tmp_path: Path) -> None:
    out = subprocess.run(cli("train", "policy=sac", "env=robolearn/RCCar-v0",
                              f"output={tmp_path / 'rl'}", "robot.port=/dev/null"),
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "robolearn practice" in out.stderr
    assert not (tmp_path / "rl").exists()
