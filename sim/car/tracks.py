"""Race tracks described as data: ``sim/car/tracks/<name>.json`` -> :class:`Track`.

A track file holds the centreline's control points in metres (a closed loop, listed in driving
order, the first point not repeated), the track width and the checkpoint spacing::

    {"name": "oval", "width": 1.5, "checkpoint_spacing": 1.0,
     "points": [[-3.0, -2.5], [0.0, -2.5], ...]}

Optional fields: ``checkpoint_radius`` (m, default ``0.75 * width``), ``wall_thickness`` (m),
``description``. The control points are joined by a closed centripetal Catmull-Rom spline and
resampled every ``RESAMPLE_DS`` metres; the walls run parallel to it at ``width / 2``. Shapes:
``centreline (N, 2)``, ``s (N,)`` arc length, ``checkpoints (C, 2)``, ``left_wall/right_wall
(N, 2)`` (inner faces).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

TRACK_DIR = Path(__file__).parent / "tracks"
RESAMPLE_DS = 0.05  # m between resampled centreline points
_FIELDS = {"name", "width", "checkpoint_spacing", "points", "checkpoint_radius",
           "wall_thickness", "description"}


def car_frame(points: list[list[float]], x: float, y: float, s: float, c: float
              ) -> list[float]:
    """World points ``[[px, py], ...]`` as ``[dx0, dy0, dx1, ...]`` in the frame of a car at
    ``(x, y)`` heading ``(sin, cos) = (s, c)`` (x forward, y left): how the cars' observations
    give their next checkpoints."""
    return [v for px, py in points
            for v in (c * (px - x) + s * (py - y), c * (py - y) - s * (px - x))]


class TrackError(ValueError):
    """A track file is missing, unreadable or inconsistent; the message names file and field."""


def available_tracks() -> list[str]:
    return sorted(p.stem for p in TRACK_DIR.glob("*.json"))


def _catmull_rom_closed(points: np.ndarray, samples: int = 40) -> np.ndarray:
    """Dense samples ``(len(points) * samples, 2)`` of the closed centripetal Catmull-Rom spline."""
    out = []
    n = len(points)
    for i in range(n):
        p0, p1, p2, p3 = (points[(i + k) % n] for k in (-1, 0, 1, 2))
        t0 = 0.0
        t1 = t0 + np.linalg.norm(p1 - p0) ** 0.5
        t2 = t1 + np.linalg.norm(p2 - p1) ** 0.5
        t3 = t2 + np.linalg.norm(p3 - p2) ** 0.5
        t = np.linspace(t1, t2, samples, endpoint=False)[:, None]
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        out.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    return np.concatenate(out)


def _resample_closed(dense: np.ndarray, ds: float) -> np.ndarray:
    loop = np.vstack([dense, dense[:1]])
    seg = np.linalg.norm(np.diff(loop, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(int(round(s[-1] / ds)), 8)
    s_new = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(s_new, s, loop[:, 0]), np.interp(s_new, s, loop[:, 1])], axis=1)


class Track:
    """A closed track: centreline, walls, checkpoints and progress along the centreline."""

    def __init__(self, name: str, points: np.ndarray, width: float, checkpoint_spacing: float,
                 checkpoint_radius: float | None = None, wall_thickness: float = 0.05,
                 description: str = "", source: str = "<memory>") -> None:
        self.name, self.width, self.source = name, float(width), source
        self.description = description
        self.wall_thickness = float(wall_thickness)
        self.control_points = np.asarray(points, dtype=np.float64)
        c = _resample_closed(_catmull_rom_closed(self.control_points), RESAMPLE_DS)
        self.centreline = c  # (N, 2)
        seg = np.linalg.norm(np.roll(c, -1, axis=0) - c, axis=1)
        self.length = float(seg.sum())  # m, one lap along the centreline
        self.s = np.concatenate([[0.0], np.cumsum(seg)[:-1]])  # (N,) arc length of each point
        d = np.roll(c, -1, axis=0) - np.roll(c, 1, axis=0)
        self.tangent = d / np.linalg.norm(d, axis=1, keepdims=True)  # (N, 2) unit, driving dir
        self.normal = np.stack([-self.tangent[:, 1], self.tangent[:, 0]], axis=1)  # left
        self.heading = np.arctan2(self.tangent[:, 1], self.tangent[:, 0])  # (N,) rad
        dh = np.angle(np.exp(1j * (np.roll(self.heading, -1) - np.roll(self.heading, 1))))
        self.curvature = dh / (2 * RESAMPLE_DS)  # (N,) 1/m, positive = left turn
        half = self.width / 2
        self.left_wall = c + half * self.normal  # (N, 2) inner face of the left wall
        self.right_wall = c - half * self.normal
        n_cp = max(int(round(self.length / checkpoint_spacing)), 4)
        self.checkpoint_s = np.arange(n_cp) * (self.length / n_cp)  # (C,) arc length
        self.checkpoint_index = np.searchsorted(self.s, self.checkpoint_s).clip(0, len(c) - 1)
        self.checkpoints = c[self.checkpoint_index]  # (C, 2)
        self.checkpoints_ext = np.vstack([self.checkpoints] * 2)  # (2C, 2): [k:k+K] wraps
        self._window = 12  # points searched either side of a hint (0.6 m; a step is < 0.3 m)
        w = self._window
        self._padded = np.vstack([c[-w:], c, c[:w]])  # (N + 2w, 2) for wrap-free slices
        self.checkpoint_radius = float(checkpoint_radius or 0.75 * self.width)
        self._check_geometry()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> Track:
        """A track by name (``"oval"``) or path to a JSON file; a bad file raises TrackError."""
        p = Path(name_or_path)
        if p.suffix != ".json":
            p = TRACK_DIR / f"{name_or_path}.json"
            if not p.exists():
                raise TrackError(f"unknown track {str(name_or_path)!r}; known: "
                                 f"{', '.join(available_tracks())}")
        try:
            spec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TrackError(f"track file {p}: cannot read JSON: {e}") from e
        return cls.from_dict(spec, source=str(p), default_name=p.stem)

    @classmethod
    def from_dict(cls, spec: Any, source: str = "<memory>", default_name: str = "track"
                  ) -> Track:
        def bad(field: str, msg: str) -> TrackError:
            return TrackError(f"track file {source}: field {field!r}: {msg}")

        if not isinstance(spec, dict):
            raise TrackError(f"track file {source}: expected a JSON object, got "
                             f"{type(spec).__name__}")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise bad(sorted(unknown)[0], f"unknown field; expected {sorted(_FIELDS)}")
        for key in ("width", "checkpoint_spacing", "points"):
            if key not in spec:
                raise bad(key, "missing")

        def positive(key: str) -> float:
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise bad(key, f"must be a positive number (m), got {v!r}")
            return float(v)

        width, spacing = positive("width"), positive("checkpoint_spacing")
        radius = positive("checkpoint_radius") if "checkpoint_radius" in spec else None
        thick = positive("wall_thickness") if "wall_thickness" in spec else 0.05
        try:
            pts = np.asarray(spec["points"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise bad("points", f"must be a list of [x, y] pairs in metres ({e})") from e
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 4:
            raise bad("points", f"must be a list of at least 4 [x, y] pairs, got shape "
                      f"{pts.shape}")
        if not np.isfinite(pts).all():
            raise bad("points", "must be finite numbers")
        if (np.linalg.norm(np.roll(pts, -1, axis=0) - pts, axis=1) < 1e-6).any():
            raise bad("points", "consecutive points coincide (do not repeat the first point)")
        try:
            return cls(str(spec.get("name", default_name)), pts, width, spacing, radius, thick,
                       str(spec.get("description", "")), source)
        except TrackError as e:
            raise bad("points", str(e)) from None

    def _check_geometry(self) -> None:
        """Walls must not cross: turn radius > width / 2 and distant parts stay apart."""
        rmin = 1.0 / max(np.abs(self.curvature).max(), 1e-9)
        if rmin <= self.width / 2 + 0.05:
            i = int(np.abs(self.curvature).argmax())
            raise TrackError(f"turn radius {rmin:.2f} m near ({self.centreline[i, 0]:.2f}, "
                             f"{self.centreline[i, 1]:.2f}) is below width/2 + 0.05 m")
        c = self.centreline[::4]
        s = self.s[::4]
        d = np.linalg.norm(c[:, None] - c[None], axis=2)
        ds = np.abs(s[:, None] - s[None])
        ds = np.minimum(ds, self.length - ds)
        clash = (d < self.width + 2 * self.wall_thickness + 0.1) & (ds > 1.6 * self.width + 0.5)
        if clash.any():
            i, _ = np.argwhere(clash)[0]
            raise TrackError(f"the track comes within {d[clash].min():.2f} m of itself near "
                             f"({c[i, 0]:.2f}, {c[i, 1]:.2f}); walls would overlap")

    # ------------------------------------------------------------------ queries
    def project(self, xy: Any, hint: int | None = None) -> int:
        """Index of the centreline point closest to ``xy``; searches 0.6 m either side of
        ``hint`` (the previous index) when given, else the whole centreline."""
        if hint is None:
            return int(np.argmin(((self.centreline - np.asarray(xy)) ** 2).sum(axis=1)))
        d = self._padded[hint:hint + 2 * self._window + 1] - xy
        return (hint - self._window + int(np.argmin(d[:, 0] ** 2 + d[:, 1] ** 2))) \
            % len(self.centreline)

    def progress(self, xy: np.ndarray, hint: int | None = None) -> float:
        """Arc length (m, in [0, length)) of the closest centreline point."""
        return float(self.s[self.project(xy, hint)])

    def wrap_ds(self, ds: float) -> float:
        """An arc-length difference wrapped to ``[-length/2, length/2)`` (crosses the line)."""
        return (ds + self.length / 2) % self.length - self.length / 2

    def next_checkpoint(self, s: float) -> int:
        """Index of the first checkpoint strictly ahead of arc length ``s``."""
        return int(np.searchsorted(self.checkpoint_s, s, side="right")) % len(self.checkpoints)

    def with_checkpoints(self, points: Any, radius: float | None = None) -> Track:
        """This track with ``points (C, 2)`` as its checkpoints (a course recorded by driving:
        FastRLAP's goals), in driving order; each is placed at the arc length of its closest
        centreline point. ``radius``: reach distance (default: the track's)."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 4:
            raise TrackError(f"a course needs at least 4 checkpoints (x, y), got shape "
                             f"{pts.shape}")
        idx = np.array([self.project(p) for p in pts])
        order = np.argsort(self.s[idx], kind="stable")
        if len(set(idx.tolist())) < len(idx):
            raise TrackError("two checkpoints of the course share a centreline point; record "
                             "the course with a larger spacing")
        t = copy.copy(self)
        t.checkpoint_index = idx[order]
        t.checkpoint_s = self.s[t.checkpoint_index]
        t.checkpoints = pts[order]
        t.checkpoints_ext = np.vstack([t.checkpoints] * 2)
        if radius is not None:
            t.checkpoint_radius = float(radius)
        return t

    def wall_segments(self, spacing: float = 0.25) -> np.ndarray:
        """Wall centre-lines as segments ``(M, 2, 2)`` (both walls), offset by half the
        thickness so the inner faces lie at ``width / 2``."""
        step = max(int(round(spacing / RESAMPLE_DS)), 1)
        off = self.width / 2 + self.wall_thickness / 2
        segs = []
        for sign in (1.0, -1.0):
            w = (self.centreline + sign * off * self.normal)[::step]
            segs.append(np.stack([w, np.roll(w, -1, axis=0)], axis=1))
        return np.concatenate(segs)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest (x, y) of the track including walls."""
        pts = np.vstack([self.left_wall, self.right_wall])
        margin = self.wall_thickness
        return pts.min(axis=0) - margin, pts.max(axis=0) + margin


def course_from_path(xy: Any, spacing: float) -> np.ndarray:
    """Checkpoints ``(C, 2)`` every ``spacing`` metres along the first lap of a driven path
    ``xy (T, 2)`` (FastRLAP's goals, which its code has a person enter by hand). The lap ends
    where the path, having gone at least ``4 * spacing`` away, comes back within ``spacing`` of
    its start; a path that never closes is an error."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) < 3:
        raise TrackError(f"a driven path needs (T >= 3, 2) positions, got shape {xy.shape}")
    if spacing <= 0:
        raise TrackError(f"checkpoint spacing must be > 0, got {spacing}")
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    back = np.linalg.norm(xy - xy[0], axis=1)
    away = np.flatnonzero(back > 4 * spacing)
    closing = np.flatnonzero((back < spacing) & (np.arange(len(xy)) > (away[0] if len(away)
                                                                        else len(xy))))
    if not len(closing):
        raise TrackError(f"the path ({s[-1]:.1f} m) never comes back to its start: record "
                         "one whole lap")
    end = int(closing[0])
    n = max(int(round(s[end] / spacing)), 4)
    at = np.arange(n) * (s[end] / n)
    return np.stack([np.interp(at, s[:end + 1], xy[:end + 1, 0]),
                     np.interp(at, s[:end + 1], xy[:end + 1, 1])], axis=1)


def load_course(path: str | Path) -> tuple[np.ndarray, float | None]:
    """A course file (``robolearn course``): ``{"checkpoints": [[x, y], ...],
    "checkpoint_radius": r | null, ...}`` -> (checkpoints, radius)."""
    try:
        spec = json.loads(Path(path).read_text())
        return np.asarray(spec["checkpoints"], dtype=np.float64), spec.get("checkpoint_radius")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise TrackError(f"course file {path}: {type(e).__name__}: {e}") from None
