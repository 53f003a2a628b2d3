"""``robolearn course DEMO_STORE``: a car's course (FastRLAP's goal checkpoints) from one
recorded demonstration lap, so nobody types coordinates in.

FastRLAP's released code records a goal at each joystick-button press and hard-codes the lists
(``inference/goal_graph.py``). Here the checkpoints are spaced every ``spacing`` metres along the
first lap of the demo's recorded path (``observation.state``'s ``x`` and ``y``: the car's pose
from its simulator or its localisation stream), and written as a course file that
``robot.course=FILE`` gives the car: its observation and its lap task then use them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data import EpisodeStore, StoreError
from robolearn_core.config import ConfigError, InvalidValue

log = logging.getLogger("robolearn.course")


@dataclass
class CourseConfig:
    store: str = ""  # episode store holding the demonstration lap
    output: str = "course.json"  # the course file to write (refuses to overwrite another file)
    episode: int = 0  # which episode of the store is the demo lap
    spacing: float = 1.0  # m between checkpoints along the driven path
    checkpoint_radius: float | None = None  # m; None: the track's (0.75 x its width)
    overwrite: bool = False  # replace an existing course file

    def __post_init__(self) -> None:
        if not self.store:
            raise InvalidValue("store", "name the episode store of the demo lap")
        if self.spacing <= 0:
            raise InvalidValue("spacing", f"must be > 0, got {self.spacing}")


def demo_path(store_path: str, episode: int) -> np.ndarray:
    """The ``(T, 2)`` positions of one episode, from ``observation.state``'s x and y."""
    try:
        with EpisodeStore.open(store_path, "r") as store:
            feat = store.features.get("observation.state")
            names = list(feat.names or ()) if feat is not None else []
            if "x" not in names or "y" not in names:
                raise ConfigError(f"store: {store_path} has no observation.state with x and y "
                                  f"(a car's pose); it has {sorted(store.features)}")
            if not 0 <= episode < len(store):
                raise ConfigError(f"episode: {store_path} has episodes 0..{len(store) - 1}, "
                                  f"not {episode}")
            state = store.episode(episode, ["observation.state"])["observation.state"]
    except (StoreError, OSError) as exc:
        raise ConfigError(f"store: {store_path}: {exc}") from None
    return np.asarray(state[:, [names.index("x"), names.index("y")]], np.float64)


def run(cfg: CourseConfig) -> int:
    from sim.car.tracks import TrackError, course_from_path

    out = Path(cfg.output)
    if out.exists() and not cfg.overwrite:
        raise ConfigError(f"output: {out} exists (overwrite=true replaces it)")
    xy = demo_path(cfg.store, cfg.episode)
    try:
        cps = course_from_path(xy, cfg.spacing)
    except TrackError as exc:
        raise ConfigError(f"store: {cfg.store} episode {cfg.episode}: {exc}") from None
    out.write_text(json.dumps({
        "checkpoints": cps.round(4).tolist(), "checkpoint_radius": cfg.checkpoint_radius,
        "source": {"store": str(cfg.store), "episode": cfg.episode, "spacing": cfg.spacing}},
        indent=1))
    log.info("course: %d checkpoints every %.2f m from %s episode %d -> %s", len(cps),
             cfg.spacing, cfg.store, cfg.episode, out)
    return 0
