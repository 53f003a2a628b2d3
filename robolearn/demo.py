"""``robolearn quickstart``: the data layer end to end, until the simulated quickstart lands.

1. A scripted controller drives a 2-D point mass to random goals; every step (state, a 64x64
   top-down camera frame, action, action source) streams into a new episode store.
2. A second recorder runs in a real subprocess and is killed with SIGKILL mid-episode; the store
   is reopened, the committed episodes are intact and the interrupted one is recovered.
3. The store is verified, summarised, and sampled as training windows through a torch DataLoader.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data import EpisodeStore, Source
from data.sampling import WindowSampler, WindowSpec, split_episodes
from robolearn.config import InvalidValue
from robolearn.progress import track

log = logging.getLogger("robolearn.demo")


@dataclass
class QuickstartConfig:
    output: str = "outputs/quickstart"  # directory for the store and the report (replaced)
    episodes: int = 30  # scripted episodes to record
    max_steps: int = 150  # step limit per episode
    fps: float = 20.0  # control rate of the point mass, Hz
    image_size: int = 64  # side of the square camera frame, pixels
    crash_test: bool = True  # kill a recorder subprocess mid-episode and recover
    seed: int = 0  # seeds goals, noise and sampling

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise InvalidValue("episodes", f"must be >= 1, got {self.episodes}")
        if not 16 <= self.image_size <= 512:
            raise InvalidValue("image_size", f"must be in [16, 512], got {self.image_size}")
        if self.fps <= 0:
            raise InvalidValue("fps", f"must be > 0, got {self.fps}")


def features(size: int) -> dict[str, dict]:
    return {
        "observation.state": {"dtype": "float32", "shape": [6],
                              "names": ["x", "y", "vx", "vy", "goal_x", "goal_y"]},
        "observation.images.top": {"dtype": "uint8", "shape": [size, size, 3]},
        "action": {"dtype": "float32", "shape": [2], "names": ["force_x", "force_y"]},
    }


class PointMass:
    """A unit point mass in a [-1, 1]^2 arena with damping; success within 0.05 of the goal."""

    def __init__(self, rng: np.random.Generator, fps: float, size: int) -> None:
        self.rng, self.dt, self.size = rng, 1.0 / fps, size
        yy, xx = np.mgrid[0:size, 0:size]
        self._grid = np.stack([xx, yy], -1) / (size - 1) * 2 - 1
        self._floor = (((xx // 8 + yy // 8) % 2) * 30 + 40).astype(np.uint8)

    def reset(self) -> np.ndarray:
        self.pos: np.ndarray = self.rng.uniform(-0.8, 0.8, 2)
        self.vel: np.ndarray = np.zeros(2)
        self.goal = self.rng.uniform(-0.8, 0.8, 2)
        return self.state()

    def state(self) -> np.ndarray:
        return np.concatenate([self.pos, self.vel, self.goal]).astype(np.float32)

    def render(self) -> np.ndarray:
        img = np.repeat(self._floor[..., None], 3, axis=2)
        for centre, colour, radius in ((self.goal, (40, 200, 60), 0.08),
                                       (self.pos, (220, 60, 40), 0.06)):
            mask = np.linalg.norm(self._grid - centre, axis=-1) < radius
            img[mask] = colour
        return img

    def step(self, action: np.ndarray) -> bool:
        force = np.clip(action, -1.0, 1.0)
        self.vel = 0.9 * self.vel + force * self.dt * 2
        self.pos = np.clip(self.pos + self.vel * self.dt, -1, 1)
        return bool(np.linalg.norm(self.pos - self.goal) < 0.05)

    def expert(self) -> np.ndarray:
        return np.clip(2.0 * (self.goal - self.pos) - 1.0 * self.vel
                       + self.rng.normal(0, 0.05, 2), -1, 1)


def record(store: EpisodeStore, cfg: QuickstartConfig, n: int, seed: int,
           progress: bool = True) -> None:
    env = PointMass(np.random.default_rng(seed), cfg.fps, cfg.image_size)
    with store.recorder(task="reach the green goal", source=Source.SCRIPTED) as rec:
        for _ in track(range(n), "recording episodes", enabled=progress):
            env.reset()
            success = False
            for _ in range(cfg.max_steps):
                action = env.expert()
                rec.add({"observation.state": env.state(), "action": action,
                         "observation.images.top": env.render()})
                if env.step(action):
                    success = True
                    break
            rec.end_episode(success=success, seed=seed)


def crash_and_recover(path: Path, cfg: QuickstartConfig) -> dict[str, int]:
    """Record in a subprocess, SIGKILL it mid-episode, reopen and recover."""
    before = len(EpisodeStore.open(path, "r"))
    child = subprocess.Popen(
        [sys.executable, "-m", "robolearn.demo", str(path), json.dumps(asdict(cfg))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with EpisodeStore.open(path, "r") as reader:  # read while the child writes
        deadline = time.time() + 60
        while reader.refresh() == 0 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let it get into the next episode
        reader.refresh()
        seen_while_recording = len(reader) - before
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with EpisodeStore.open(path, "a") as store:  # recovers the in-flight episode
        recovered = len(store.select(tags=["recovered"]))
        total = len(store)
    return {"episodes_before": before, "seen_by_reader_while_recording": seen_while_recording,
            "recovered_incomplete": recovered, "episodes_after": total}


def run(cfg: QuickstartConfig) -> int:
    out = Path(cfg.output)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    path = out / "demos.zarr"
    t0 = time.perf_counter()
    with EpisodeStore.create(path, features(cfg.image_size), cfg.fps, robot_type="point_mass",
                             tasks=["reach the green goal"], generator="robolearn quickstart") \
            as store:
        record(store, cfg, cfg.episodes, cfg.seed)
        steps = store.num_frames
    rec_s = time.perf_counter() - t0
    report: dict = {"record_steps_per_s": steps / rec_s}
    if cfg.crash_test:
        report["crash_test"] = crash_and_recover(path, cfg)
    with EpisodeStore.open(path, "r") as store:
        problems = store.verify()
        report["verify_problems"] = problems
        report["summary"] = {k: v for k, v in store.summary().items() if k != "features"}
        train, val = split_episodes(store, 0.2, seed=cfg.seed)
        sampler = WindowSampler(store, WindowSpec(2, 16), train)
        rng = np.random.default_rng(cfg.seed)
        t0 = time.perf_counter()
        for _ in range(10):
            batch = sampler.sample(256, rng)
        report["sample_windows_per_s"] = 2560 / (time.perf_counter() - t0)
        report["train_episodes"], report["val_episodes"] = len(train), len(val)
        report["batch_shapes"] = {k: list(v.shape) for k, v in batch.items()}
        sampler.close()
    (out / "report.json").write_text(json.dumps(report, indent=1))
    _print(report, path, out)
    return 1 if problems else 0


def _print(report: dict, path: Path, out: Path) -> None:
    from rich.console import Console

    c = Console()
    s = report["summary"]
    c.print(f"[bold]episode store[/] {path}: {s['episodes']} episodes, {s['frames']} steps, "
            f"{s['success']} successful, {s['incomplete']} incomplete, "
            f"{s['bytes_on_disk'] / 2**20:.1f} MiB on disk")
    c.print(f"recording: {report['record_steps_per_s']:.0f} steps/s (state + camera, one core)")
    if "crash_test" in report:
        ct = report["crash_test"]
        c.print(f"crash test: a reader saw {ct['seen_by_reader_while_recording']} new episode(s) "
                f"while a subprocess recorded; after SIGKILL, {ct['episodes_after']} episodes "
                f"open intact, {ct['recovered_incomplete']} recovered as incomplete")
    c.print(f"verify: {'OK' if not report['verify_problems'] else report['verify_problems']}")
    c.print(f"sampling: {report['sample_windows_per_s']:.0f} windows/s (batches of 256, 2 past "
            f"observations incl. camera, 16 future actions); train/val episodes "
            f"{report['train_episodes']}/{report['val_episodes']}")
    c.print(f"report: {out / 'report.json'}   inspect: robolearn data info {path}")


if __name__ == "__main__":  # the crash-test child: records until killed
    _cfg = QuickstartConfig(**json.loads(sys.argv[2]))
    with EpisodeStore.open(sys.argv[1], "a") as _store:
        record(_store, _cfg, 10_000, seed=_cfg.seed + 1, progress=False)
