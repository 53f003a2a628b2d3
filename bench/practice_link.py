"""The actor-learner link measured (``python -m bench.practice link|kill``): weight latency and
transition rate against an in-process queue, and a learner SIGKILLed under a practising actor."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.practice import ENV


def _car_actor_weights() -> dict[str, np.ndarray]:
    """The SAC actor's weights for the car (what a practice session publishes)."""
    import sim  # noqa: F401
    from policies.rl import agent_class
    from robolearn.env import ENVS, make_env
    from robolearn.practice.actor import robot_spec
    from robolearn.practice.learner import actor_state, build_agent

    env = make_env(**ENVS[ENV])
    agent = build_agent("sac", agent_class("sac").config_class(device="cpu"),
                        robot_spec(env, ENV))
    env.close()
    return actor_state(agent)


def link(args: argparse.Namespace) -> dict[str, Any]:
    """gRPC link vs an in-process queue.Queue, same payloads, same serialisation
    (safetensors), both ends in this process (the link over real loopback TCP)."""
    import queue
    import threading

    from robolearn.practice.link import ActorLink, LinkServer
    from robolearn.practice.wire import pack, stack_rows, unpack

    car = _car_actor_weights()
    big = {"w": np.random.default_rng(0).standard_normal(5_000_000).astype(np.float32)}
    report: dict[str, Any] = {"weights": {}, "transitions": {}}
    n_rows = 20_000
    rows = [{"obs/observation.state": np.full(15, i, np.float32), "action": np.zeros(2,
             np.float32), "reward": np.float32(i), "done": np.float32(0),
             "next_obs/observation.state": np.full(15, i + 1, np.float32)}
            for i in range(n_rows)]
    got_rows = [0]

    def hello(aid: str, spec: dict[str, Any], resend_from: int) -> tuple[int, int, str]:
        return got_rows[0], got_rows[0], "{}"

    def receive(aid: str, first: int, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        got_rows[0] = first + len(arrays["reward"])
        return got_rows[0], got_rows[0]

    server = LinkServer("127.0.0.1:0", hello, receive).start()
    actor = ActorLink(server.address, "bench", {}).start()
    assert actor.wait_up(10)
    for name, w in (("car_sac_actor", car), ("20MB", big)):
        nbytes = len(pack(w))
        lat_link = []
        for i in range(args.reps):
            n0 = actor.stats.weight_versions
            server.publish(w, i)
            while actor.stats.weight_versions == n0:
                time.sleep(0.0005)
            lat_link.append(actor.stats.latencies_ms[-1])
            actor.latest()
            time.sleep(0.02)
        q: queue.Queue[tuple[float, bytes]] = queue.Queue()
        lat_q: list[float] = []

        def consume(q: queue.Queue[tuple[float, bytes]] = q, lat_q: list[float] = lat_q,
                    n: int = args.reps) -> None:
            for _ in range(n):
                t, data = q.get()
                unpack(data, "weights")
                lat_q.append(1000 * (time.time() - t))

        t = threading.Thread(target=consume)
        t.start()
        for _ in range(args.reps):
            q.put((time.time(), pack(w)))  # publish packs once, like the link
            time.sleep(0.02)
        t.join()
        p = {k: float(np.percentile(v, pct)) for k, v, pct in
             (("link_p50_ms", lat_link, 50), ("link_p99_ms", lat_link, 99),
              ("queue_p50_ms", lat_q, 50), ("queue_p99_ms", lat_q, 99))}
        p["bytes"] = nbytes
        p["p50_ratio_link_over_queue"] = p["link_p50_ms"] / p["queue_p50_ms"]
        report["weights"][name] = p
        print(name, json.dumps(p), flush=True)
    t0 = time.perf_counter()
    for r in rows:
        actor.push(r)
    while actor.acked() < n_rows:
        time.sleep(0.001)
    link_rate = n_rows / (time.perf_counter() - t0)
    q2: queue.Queue[bytes | None] = queue.Queue()
    seen = [0]

    def drain() -> None:
        while (data := q2.get()) is not None:
            seen[0] += len(unpack(data, "batch")["reward"])

    t = threading.Thread(target=drain)
    t.start()
    t0 = time.perf_counter()
    for i in range(0, n_rows, 64):  # the link's own batching
        q2.put(pack(stack_rows(rows[i:i + 64])))
    q2.put(None)
    t.join()
    queue_rate = n_rows / (time.perf_counter() - t0)
    report["transitions"] = {"link_per_s": link_rate, "queue_per_s": queue_rate,
                             "ratio_link_over_queue": link_rate / queue_rate, "n": n_rows}
    print(json.dumps(report["transitions"]), flush=True)
    actor.close()
    server.stop(0)
    return report


def _events(actor_out: Path, name: str) -> list[dict[str, Any]]:
    f = actor_out / "events.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []
    return [r for r in rows if r["event"] == name]


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.01)


def kill(args: argparse.Namespace) -> dict[str, Any]:
    """The learner SIGKILLed ``--kills`` times under a practising actor (simulated car)."""
    import shutil
    import signal
    import socket
    import subprocess

    import torch

    from data import EpisodeStore
    from robolearn.practice.session import start_learner

    out = args.out / "kill"
    shutil.rmtree(out, ignore_errors=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    largs = [str(out / "learner"), f"address=127.0.0.1:{port}", "policy=sac", "threads=1",
             "start_after=500", "checkpoint_every_s=2"]
    learner, _ = start_learner(largs)
    actor = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "actor",
                              f"127.0.0.1:{port}", f"output={out / 'a0'}", "time_scale=2"])
    a0 = out / "a0"
    kills = []
    try:
        _wait(lambda: _events(a0, "first_step"), 120)
        for k in range(args.kills):
            time.sleep(args.kill_every)
            t_kill = time.time()
            learner.send_signal(signal.SIGKILL)
            learner.wait()
            _wait(lambda k=k: len(_events(a0, "link_down")) == k + 1, 30)
            time.sleep(1.0)  # down for a while
            learner, _ = start_learner(largs)
            t_listen = time.time()
            _wait(lambda k=k: len(_events(a0, "first_step")) == k + 2, 30)
            down, up = _events(a0, "link_down")[-1], _events(a0, "link_up")[-1]
            first = _events(a0, "first_step")[-1]
            kills.append({"detect_s": down["time"] - t_kill,
                          "resume_s": first["time"] - t_listen,
                          "steps_while_down": up["steps"] - down["steps"]})
            print(json.dumps(kills[-1]), flush=True)
        time.sleep(args.kill_every)
    finally:
        actor.send_signal(signal.SIGTERM)  # stops the car, commits, flushes to the learner
        actor.wait(timeout=60)
        learner.send_signal(signal.SIGTERM)  # last checkpoint
        learner.wait(timeout=120)
    rep = json.loads((a0 / "actor.json").read_text())
    state = torch.load(out / "learner/checkpoints/last/training_state.pt", weights_only=False)
    with EpisodeStore.open(a0 / "episodes.zarr", "r") as store:
        stored = store.num_frames
    resume = [k["resume_s"] for k in kills]
    return {"kills": kills, "actor_steps": rep["steps"], "stored_steps": stored,
            "learner_has": int(state["next_seq"]["actor0"]),
            "lost": rep["steps"] - int(state["next_seq"]["actor0"]),
            "resent": rep["resent"], "connects": rep["connects"],
            "resume_s_max": max(resume), "resume_s_median": float(np.median(resume)),
            "detect_s_max": max(k["detect_s"] for k in kills),
            "steps_while_down_total": sum(k["steps_while_down"] for k in kills)}
