"""Realistic camera frames for the data benchmarks: the MuJoCo scene of ``bench.image_codecs``
rendered offscreen (EGL, else OSMesa), or labelled synthetic frames where no GL works."""

from __future__ import annotations

import functools
import logging

import numpy as np

from bench.image_codecs import pick_gl_backend, render_frames, synthetic_frames

log = logging.getLogger("bench")


@functools.cache
def camera_frames(size: int, n: int) -> np.ndarray:
    """``(n, size, size, 3)`` uint8 frames of a moving robot-camera view."""
    if pick_gl_backend() is None:
        log.warning("no offscreen GL: using synthetic frames (compress unlike real ones)")
        return synthetic_frames(n, size)
    return render_frames(n, size)
