"""A look at one episode: its camera frames beside its state, action and source traces.

With cameras, :func:`render_episode` writes an MP4 (PyAV, :func:`robolearn.video.write_mp4`): each
video frame shows every camera at that step and the traces with a cursor at the step's time.
Without cameras it writes the traces alone as a PNG. Plotting is matplotlib's (Agg, headless);
only the frames and cursors are redrawn per step (blitting), so a 1,000-step episode renders in
seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.schema import Source
from data.store import Episode, EpisodeStore

MAX_LEGEND = 10  # name the elements of a trace in a legend up to this many
BLOCK = 128  # camera frames read at a time (memory stays bounded on long episodes)


def render_episode(store: EpisodeStore, index: int, out: Path,
                   keys: Sequence[str] | None = None) -> int:
    """Write episode ``index`` to ``out`` (.mp4 with cameras, else .png); returns the number of
    video frames written (0 for a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cams = [k for k, f in store.features.items() if f.image]
    traces = list(keys) if keys is not None else [k for k, f in store.features.items()
                                                   if not f.image]
    ep = store.episode(index, [*traces, "timestamp", "source"])  # frames: read as they are shown
    t = ep["timestamp"]
    height = max(3.0, 1.8 * (len(traces) + 1), 3.0 * len(cams))  # inches
    fig = plt.figure(figsize=(12 if cams else 9, height), dpi=100)
    info = ep.info
    fig.suptitle(f"{Path(store.name).name}: episode {info.index} (id {info.id}), {info.length} "
                 f"steps, task {info.task or '-'}, success {_outcome(info.success)}",
                 fontsize=10)
    grid = fig.add_gridspec(1, 2 if cams else 1, width_ratios=[1, 2] if cams else None)
    right = grid[0, -1].subgridspec(len(traces) + 1, 1)  # one row per trace, then the source
    trace_axes = [fig.add_subplot(right[i, 0]) for i in range(len(traces) + 1)]
    for ax, key in zip(trace_axes, traces, strict=False):
        _plot_trace(ax, t, ep, key, store)
    _plot_source(trace_axes[-1], t, ep["source"])
    for ax in trace_axes[:-1]:
        ax.sharex(trace_axes[-1])
        ax.tick_params(labelbottom=False)
    trace_axes[-1].set_xlabel("time (s)")
    if not cams:
        fig.tight_layout()
        fig.savefig(out, format="png")
        plt.close(fig)
        return 0
    images = []
    left = grid[0, 0].subgridspec(len(cams), 1)  # the cameras share the left column
    for i, key in enumerate(cams):
        ax = fig.add_subplot(left[i, 0])
        ax.set_title(key, fontsize=8)
        ax.axis("off")
        frame = store.read(key, info.start, info.start + 1, info)[0]
        images.append(ax.imshow(frame[..., 0] if frame.shape[2] == 1 else frame,
                                cmap="gray" if frame.shape[2] == 1 else None, vmin=0, vmax=255,
                                animated=True))
    cursors = [ax.axvline(t[0], color="k", lw=1, animated=True) for ax in trace_axes]
    fig.tight_layout()
    return _write_video(fig, store, ep, cams, images, cursors, out)


def _write_video(fig: Any, store: EpisodeStore, ep: Episode, cams: list[str], images: list[Any],
                 cursors: list[Any], out: Path) -> int:
    import matplotlib.pyplot as plt

    from robolearn.video import write_mp4

    canvas = fig.canvas
    canvas.draw()  # everything but the animated artists
    background = canvas.copy_from_bbox(fig.bbox)
    t, info = ep["timestamp"], ep.info

    def frames() -> Any:
        for a in range(0, info.length, BLOCK):  # a block of camera frames at a time
            b = min(info.length, a + BLOCK)
            block = {k: store.read(k, info.start + a, info.start + b, info) for k in cams}
            for step in range(a, b):
                canvas.restore_region(background)
                for img, key in zip(images, cams, strict=True):
                    frame = block[key][step - a]
                    img.set_data(frame[..., 0] if frame.shape[2] == 1 else frame)
                    img.axes.draw_artist(img)
                for line in cursors:
                    line.set_xdata([t[step], t[step]])
                    line.axes.draw_artist(line)
                yield np.asarray(canvas.buffer_rgba())[..., :3].copy()

    try:
        return write_mp4(frames(), out, store.fps)
    finally:
        plt.close(fig)


def _plot_trace(ax: Any, t: np.ndarray, ep: Episode, key: str, store: EpisodeStore) -> None:
    values = ep[key].reshape(len(t), -1).astype(np.float64)
    names = store.features[key].names
    for j in range(values.shape[1]):
        ax.plot(t, values[:, j], lw=1, label=names[j] if names else f"[{j}]")
    ax.set_ylabel(key, fontsize=8)
    ax.tick_params(labelsize=7)
    if 1 < values.shape[1] <= MAX_LEGEND:
        ax.legend(fontsize=6, loc="upper right", ncol=min(values.shape[1], 5))


def _plot_source(ax: Any, t: np.ndarray, source: np.ndarray) -> None:
    codes = sorted({int(s) for s in source})
    ax.step(t, source, where="post", color="tab:purple", lw=1)
    ax.set_yticks(codes, [Source(c).name.lower() for c in codes], fontsize=7)
    ax.set_ylim(min(codes) - 0.5, max(codes) + 0.5)
    ax.set_ylabel("source", fontsize=8)
    ax.tick_params(labelsize=7)


def _outcome(success: bool | None) -> str:
    return "unknown" if success is None else "yes" if success else "no"
