"""A scripted driver for demos: pure pursuit on the track's centreline at a chosen speed.

Steering: the classic pure-pursuit law from the rear axle to a point ``lookahead + gain * v``
metres ahead on the centreline, ``delta = atan(2 L sin(alpha) / l_d)``. Speed: ``speed``,
lowered ahead of tight turns so the lateral acceleration stays under ``max_lat_accel``;
throttle = feed-forward ``v / max_speed`` plus a proportional speed correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.car.tracks import RESAMPLE_DS, Track


@dataclass
class PurePursuitConfig:
    speed: float = 2.0  # m/s, cruise speed on straights
    lookahead: float = 0.45  # m, look-ahead distance at standstill
    lookahead_gain: float = 0.2  # s, extra look-ahead per m/s of speed
    max_lat_accel: float = 3.5  # m/s^2, slow down so that v^2 * curvature stays below this
    preview_time: float = 0.8  # s, how far ahead (at the current speed) turns slow the car
    speed_gain: float = 0.4  # throttle per m/s of speed error
    wheelbase: float = 0.32  # m, must match the car (SimCarConfig.wheelbase)
    max_steer: float = 0.5  # rad at steering 1 (SimCarConfig.max_steer)
    max_speed: float = 5.0  # m/s at throttle 1 (SimCarConfig.max_speed)

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"PurePursuitConfig.{key} must be > 0, got {value!r}")


class PurePursuitDriver:
    """``driver(obs_or_state) -> action (2,)`` for :class:`sim.car.robot.SimCar`.

    Accepts an observation dict (``observation.state``), the robot's ``state()`` dict, or the
    state vector itself. Call :meth:`reset` at each episode start (or it re-finds the car).
    """

    def __init__(self, track: Track | str, **kwargs: Any) -> None:
        self.track = track if isinstance(track, Track) else Track.load(track)
        self.config = PurePursuitConfig(**kwargs)
        self._idx: int | None = None

    @classmethod
    def for_robot(cls, robot: Any, **kwargs: Any) -> PurePursuitDriver:
        """A driver matched to ``robot``'s track and car geometry (a SimCar)."""
        c = robot.config
        return cls(robot.track, **{"wheelbase": c.wheelbase, "max_steer": c.max_steer,
                                   "max_speed": c.max_speed, **kwargs})

    def reset(self) -> None:
        self._idx = None

    @staticmethod
    def _pose(x: Any) -> tuple[float, float, float, float, float]:
        """(x, y, sin yaw, cos yaw, forward speed) from any accepted input."""
        if isinstance(x, dict) and "pos" in x:
            yaw = float(x["yaw"])
            return (float(x["pos"][0]), float(x["pos"][1]), math.sin(yaw), math.cos(yaw),
                    float(x["v_body"][0]))
        v = x["observation.state"] if isinstance(x, dict) else x
        return float(v[0]), float(v[1]), float(v[2]), float(v[3]), float(v[4])

    def __call__(self, obs_or_state: Any) -> np.ndarray:
        cfg, tr = self.config, self.track
        x, y, s, c, v = self._pose(obs_or_state)
        rx, ry = x - c * cfg.wheelbase / 2, y - s * cfg.wheelbase / 2  # rear axle
        xy = np.array((x, y))
        idx = tr.project(xy, self._idx)
        if self._idx is None or np.hypot(*(tr.centreline[idx] - xy)) > tr.width:
            idx = tr.project(xy)
        self._idx = idx
        n = len(tr.centreline)
        ld = cfg.lookahead + cfg.lookahead_gain * max(v, 0.0)
        tx, ty = tr.centreline[(idx + int(round(ld / RESAMPLE_DS))) % n]
        dx, dy = tx - rx, ty - ry
        alpha = math.atan2(-s * dx + c * dy, c * dx + s * dy)
        dist = max(math.hypot(dx, dy), 1e-3)
        delta = math.atan(2 * cfg.wheelbase * math.sin(alpha) / dist)
        steer = max(-1.0, min(1.0, delta / cfg.max_steer))
        preview = int(round((0.3 + cfg.preview_time * max(v, 0.0)) / RESAMPLE_DS))
        kappa = float(np.abs(tr.curvature[(idx + np.arange(preview + 1)) % n]).max())
        target = min(cfg.speed, math.sqrt(cfg.max_lat_accel / max(kappa, 1e-6)))
        throttle = target / cfg.max_speed + cfg.speed_gain * (target - v)
        return np.array((steer, max(-1.0, min(1.0, throttle))))
