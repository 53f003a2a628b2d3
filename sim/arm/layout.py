"""Randomised placement of the cube, the bin and the reach target on the table.

Positions are sampled in polar coordinates around the arm's base (radius from the pan axis,
angle from ``+x``), inside the workspace where the gripper can point straight down. The bin is
kept clear of the cube by a minimum angular separation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.arm.model import CUBE_HALF


def _check_range(name: str, rng: tuple[float, float]) -> None:
    if len(rng) != 2 or rng[0] > rng[1]:
        raise ValueError(f"LayoutConfig.{name}: expected (low, high) with low <= high, got {rng}")


@dataclass
class LayoutConfig:
    cube_radius: tuple[float, float] = (0.13, 0.21)  # m, cube distance from the pan axis
    cube_angle: tuple[float, float] = (-0.7, 0.7)  # rad, cube bearing from +x
    cube_yaw: tuple[float, float] = (-math.pi / 4, math.pi / 4)  # rad, cube rotation about z
    bin_radius: tuple[float, float] = (0.15, 0.20)  # m, bin centre distance from the pan axis
    bin_angle: tuple[float, float] = (-1.2, 1.2)  # rad, bin bearing from +x
    min_separation: float = 0.75  # rad, smallest bearing difference between cube and bin
    target_radius: tuple[float, float] = (0.12, 0.24)  # m, reach target distance from the axis
    target_angle: tuple[float, float] = (-1.0, 1.0)  # rad, reach target bearing
    target_height: tuple[float, float] = (0.05, 0.18)  # m, reach target height above the table

    def __post_init__(self) -> None:
        for name in ("cube_radius", "cube_angle", "cube_yaw", "bin_radius", "bin_angle",
                     "target_radius", "target_angle", "target_height"):
            value = tuple(float(v) for v in getattr(self, name))
            _check_range(name, value)  # type: ignore[arg-type]
            setattr(self, name, value)
        if self.min_separation < 0:
            raise ValueError("LayoutConfig.min_separation must be >= 0")
        if self.cube_radius[0] <= 0.08 or self.bin_radius[0] <= 0.1:
            raise ValueError("LayoutConfig: cube/bin too close to the arm's base")


def _polar(r: float, a: float, z: float) -> np.ndarray:
    return np.array([r * math.cos(a), r * math.sin(a), z])


def sample_layout(rng: np.random.Generator, cfg: LayoutConfig) -> dict[str, Any]:
    """Reset options ``{"cube_pos": (3,), "cube_yaw": float, "bin_pos": (3,), "target": (3,)}``
    drawn from ``rng``."""
    ca = float(rng.uniform(*cfg.cube_angle))
    cube = _polar(float(rng.uniform(*cfg.cube_radius)), ca, CUBE_HALF)
    yaw = float(rng.uniform(*cfg.cube_yaw))
    for _ in range(100):  # rejection sampling; the default ranges accept within a few draws
        ba = float(rng.uniform(*cfg.bin_angle))
        if abs(ba - ca) >= cfg.min_separation:
            break
    else:  # no valid bearing in range: put the bin on the far side of the cube
        ba = cfg.bin_angle[0] if ca > 0 else cfg.bin_angle[1]
    bin_pos = _polar(float(rng.uniform(*cfg.bin_radius)), ba, 0.0)
    target = _polar(float(rng.uniform(*cfg.target_radius)), float(rng.uniform(*cfg.target_angle)),
                    float(rng.uniform(*cfg.target_height)))
    return {"cube_pos": cube, "cube_yaw": yaw, "bin_pos": bin_pos, "target": target}
