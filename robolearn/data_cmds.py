"""``robolearn data ...`` commands: info, verify, merge, delete."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from data import EpisodeStore
from data.schema import Source, StoreError
from robolearn_core.config import MISSING, InvalidValue

console = Console()


@dataclass
class InfoConfig:
    path: str = MISSING  # episode store directory
    json: bool = False  # print machine-readable JSON instead of tables


@dataclass
class VerifyConfig:
    path: str = MISSING  # episode store directory


@dataclass
class MergeConfig:
    output: str = MISSING  # new store to create
    inputs: list[str] = MISSING  # stores to copy from, in order
    success: bool | None = None  # keep only successful (true) or failed (false) episodes
    source: str | None = None  # keep only episodes with steps from this action source
    task: str | None = None  # keep only episodes of this task

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InvalidValue("inputs", "needs at least one store to copy from, e.g. "
                                         "inputs=[a.zarr,b.zarr]")
        if self.source is not None:
            try:
                Source.parse(self.source)
            except ValueError as exc:
                raise InvalidValue("source", str(exc)) from None


@dataclass
class DeleteConfig:
    path: str = MISSING  # episode store directory
    episodes: list[int] = field(default_factory=list)  # indices to delete


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def info(cfg: InfoConfig) -> int:
    with EpisodeStore.open(cfg.path, "r") as store:
        s = store.summary()
    if cfg.json:
        print(json.dumps(s, indent=1))
        return 0
    console.print(f"[bold]{s['path']}[/]  format v{s['format_version']}, {s['fps']:g} fps, "
                  f"robot {s['robot_type'] or '-'}, tasks {s['tasks'] or '-'}")
    feats = Table("feature", "dtype", "shape", "names", title="schema")
    for k, f in s["features"].items():
        kind = "camera (JPEG)" if f.get("image") else f["dtype"]
        names = ", ".join(f.get("names", [])[:6]) + (" ..." if len(f.get("names", [])) > 6 else "")
        feats.add_row(k, kind, str(tuple(f["shape"])), names)
    console.print(feats)
    tot = Table("episodes", "frames", "duration", "success", "failed", "incomplete",
                "size on disk", title="contents")
    tot.add_row(str(s["episodes"]), str(s["frames"]), f"{s['duration_s']:.1f} s",
                str(s["success"]), str(s["failure"]), str(s["incomplete"]),
                _size(s["bytes_on_disk"]))
    console.print(tot)
    src = Table("source", "steps", "share", title="action sources")
    for k, v in sorted(s["sources"].items()):
        src.add_row(k, str(v), f"{100 * v / max(1, s['frames']):.1f}%")
    console.print(src)
    if s["pending_recovery"]:
        console.print("[yellow]an interrupted recording awaits recovery[/]")
    return 0


def verify(cfg: VerifyConfig) -> int:
    with EpisodeStore.open(cfg.path, "r") as store:
        problems = store.verify(progress=True)
        n = len(store)
    for p in problems:
        console.print(f"[red]BAD[/] {p}", highlight=False)
    if problems:
        console.print(f"{len(problems)} problem(s) in {cfg.path}")
        return 1
    console.print(f"[green]OK[/] {cfg.path}: {n} episodes verified")
    return 0


def merge(cfg: MergeConfig) -> int:
    """Every input is opened and checked (schema, fps) before anything is written; the output
    is built beside OUT and appears only when complete."""
    sources: list[EpisodeStore] = []
    try:
        for path in cfg.inputs:
            sources.append(EpisodeStore.open(path, "r"))
        picks = [src.select(success=cfg.success, source=cfg.source, task=cfg.task)
                 for src in sources]
        out = EpisodeStore.merge(cfg.output, list(zip(sources, picks, strict=True)),
                                 progress=True)
        with out:
            for src, idx in zip(sources, picks, strict=True):
                console.print(f"{src.name}: copied {len(idx)} of {len(src)} episodes")
            console.print(f"{cfg.output}: {len(out)} episodes, {out.num_frames} frames")
    finally:
        for src in sources:
            src.close()
    return 0


def delete(cfg: DeleteConfig) -> int:
    with EpisodeStore.open(cfg.path, "a") as store:
        try:
            store.delete(cfg.episodes)
        except IndexError as exc:  # a user's typo: a message and exit 1, not a traceback
            raise StoreError(str(exc)) from None
        console.print(f"{cfg.path}: deleted {len(cfg.episodes)} episode(s), {len(store)} left "
                      "(run `robolearn data merge OUT inputs=[THIS]` to reclaim the space)")
    return 0
