"""Synthetic episodes for the window-sampling benchmark: the common input of every contender.

Each episode is a dict of numpy arrays with time as the first axis: ``observation.state``
(T, 32) float32, ``action`` (T, 8) float32 and optionally ``observation.images.front``
(T, 96, 96, 3) uint8. State and action are random walks; the camera shows moving, anti-aliased
coloured discs and squares over a panning, textured background, so that video and image codecs
see realistic (compressible but not trivial) content rather than noise.
"""

from __future__ import annotations

import numpy as np

Episode = dict[str, np.ndarray]

STATE = "observation.state"
ACTION = "action"
IMAGE = "observation.images.front"
STATE_DIM, ACTION_DIM, IMAGE_SIZE = 32, 8, 96


def make_episodes(n_episodes: int, length: int, with_images: bool = True,
                  seed: int = 0) -> list[Episode]:
    """Episodes of smooth random-walk state/action and, optionally, a 96x96 RGB camera showing
    moving coloured discs and squares over a panning textured background."""
    rng = np.random.default_rng(seed)
    episodes: list[Episode] = []
    for _ in range(n_episodes):
        ep: Episode = {STATE: _random_walk(rng, length, STATE_DIM),
                       ACTION: _random_walk(rng, length, ACTION_DIM)}
        if with_images:
            ep[IMAGE] = _camera(rng, length)
        episodes.append(ep)
    return episodes


def _random_walk(rng: np.random.Generator, length: int, dim: int) -> np.ndarray:
    start = rng.normal(0.0, 1.0, dim)
    return (start + np.cumsum(rng.normal(0.0, 0.05, (length, dim)), axis=0)).astype(np.float32)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of an (h, w, c) grid to (size, size, c)."""
    h, w = grid.shape[:2]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.minimum(ys.astype(int), h - 2), np.minimum(xs.astype(int), w - 2)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x0 + 1] * wx
    bottom = grid[y0 + 1][:, x0] * (1 - wx) + grid[y0 + 1][:, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy


def _camera(rng: np.random.Generator, length: int, size: int = IMAGE_SIZE) -> np.ndarray:
    span = 2 * size  # the background is larger than the frame so that the camera can pan over it
    yy, xx = np.mgrid[0:span, 0:span].astype(np.float32)
    background = 0.2 + 0.6 * _upsample(rng.random((6, 6, 3)), span)
    background += (0.06 * np.sin(0.8 * xx) * np.sin(0.55 * yy))[..., None]  # fabric texture
    background += rng.normal(0.0, 0.02, background.shape)  # static grain
    background = background.astype(np.float32)
    t = np.arange(length)
    pan = rng.uniform(0, 2 * np.pi, 2)
    oy = (size / 2 * (1 + np.sin(2 * np.pi * t / length + pan[0]))).astype(int)
    ox = (size / 2 * (1 + np.cos(2 * np.pi * t / length + pan[1]))).astype(int)
    frames = np.stack([background[y:y + size, x:x + size] for y, x in zip(oy, ox, strict=True)])
    for _ in range(3):  # shapes: blended in place, frame by frame, inside their bounding box
        colour, radius = rng.uniform(0, 1, 3).astype(np.float32), rng.uniform(7, 15)
        square = rng.random() < 0.5
        freq, phase = rng.uniform(1, 3, 2) * 2 * np.pi / length, rng.uniform(0, 2 * np.pi, 2)
        cy = size / 2 + (size / 2 - radius) * np.sin(freq[0] * t + phase[0])
        cx = size / 2 + (size / 2 - radius) * np.sin(freq[1] * t + phase[1])
        for k in range(length):
            y0, x0 = max(0, int(cy[k] - radius) - 1), max(0, int(cx[k] - radius) - 1)
            y1, x1 = min(size, int(cy[k] + radius) + 2), min(size, int(cx[k] + radius) + 2)
            dy = (np.arange(y0, y1) - cy[k])[:, None]
            dx = (np.arange(x0, x1) - cx[k])[None, :]
            dist = np.maximum(abs(dy), abs(dx)) if square else np.hypot(dy, dx)
            alpha = np.clip(radius + 0.5 - dist, 0, 1).astype(np.float32)[..., None]
            patch = frames[k, y0:y1, x0:x1]
            patch += alpha * (colour - patch)  # anti-aliased edge
    np.clip(frames, 0, 1, out=frames)
    return (frames * 255 + 0.5).astype(np.uint8)
