"""``robolearn data export | import | show``: LeRobot and robomimic interop, and a look at an
episode. The conversions live in :mod:`data.interop`; this module holds their typed configs and
the command functions."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from data import EpisodeStore
from data.interop import ConversionError, staged_output
from data.schema import Source
from robolearn_core.config import MISSING, ConfigError, InvalidValue
from robolearn_core.progress import track

console = Console()

# The name is the registry: format -> ("module:function", the package it needs, how to get it)
EXPORTERS = {"lerobot": ("data.interop.lerobot:export_lerobot", "lerobot",
                         "uv sync --extra lerobot")}
IMPORTERS = {"lerobot": ("data.interop.lerobot:import_lerobot", "lerobot",
                         "uv sync --extra lerobot"),
             "robomimic": ("data.interop.robomimic:import_robomimic", "h5py", "pip install h5py")}


def _check_format(value: str | None, known: dict[str, Any], key: str = "format") -> None:
    if value is not None and value not in known:
        raise InvalidValue(key, f"unknown format {value!r}; known: {', '.join(known)}")


def _check_source(value: str) -> None:
    try:
        Source.parse(value)
    except ValueError as exc:
        raise InvalidValue("source", str(exc)) from None


@dataclass
class ExportConfig:
    store: str = MISSING  # episode store to export
    output: str = MISSING  # folder to create (refused if it exists)
    format: str = "lerobot"  # target format: lerobot (a LeRobotDataset v3.0)
    repo_id: str | None = None  # LeRobot repo id recorded in the dataset; default local/<output>
    video: bool = True  # cameras as AV1 MP4 (lerobot's default); false: lossless PNG frames

    def __post_init__(self) -> None:
        _check_format(self.format, EXPORTERS)


@dataclass
class ImportConfig:
    input: str = MISSING  # LeRobotDataset folder, or robomimic .hdf5 file
    output: str = MISSING  # episode store to create (refused if it exists)
    format: str | None = None  # lerobot or robomimic; default: robomimic for .hdf5/.h5 files
    source: str = "teleop"  # action source of steps whose input does not say
    skip: list[str] = field(default_factory=list)  # input keys to leave out (states, obs/object)
    fps: float | None = None  # robomimic: steps per second if env_args has no control_freq
    success: bool | None = None  # robomimic: outcome recorded for every demo (files do not say)
    repo_id: str | None = None  # lerobot: repo id to open the dataset under; default local/<name>

    def __post_init__(self) -> None:
        _check_format(self.format, IMPORTERS)
        _check_source(self.source)
        if self.fps is not None and not self.fps > 0:
            raise InvalidValue("fps", f"must be > 0, got {self.fps}")

    def resolved_format(self) -> str:
        if self.format is not None:
            return self.format
        path = Path(self.input)
        if path.suffix.lower() in (".hdf5", ".h5"):
            return "robomimic"
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        raise ConfigError(f"format: cannot tell the format of {self.input}; pass "
                          f"format={' or format='.join(IMPORTERS)}")


@dataclass
class ShowConfig:
    store: str = MISSING  # episode store to look at
    episode: int = 0  # episode index (negative counts from the end)
    output: str | None = None  # file to write; default ./<store>-episode<N>.mp4 (.png: no camera)
    keys: list[str] | None = None  # low-dim features to plot; default: every one


def _converter(table: dict[str, tuple[str, str, str]], name: str) -> Callable[..., Any]:
    ref, package, how = table[name]
    if importlib.util.find_spec(package) is None:  # found, not imported: the converter's module
        # sets lerobot's environment (offline, quiet) before lerobot is first imported
        raise ConversionError(f"format {name} needs the '{package}' package, which is not "
                              f"installed ({how})")
    module, _, attr = ref.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


def export(cfg: ExportConfig) -> int:
    fn = _converter(EXPORTERS, cfg.format)
    with _quiet_store_log():
        done = fn(cfg.store, cfg.output, repo_id=cfg.repo_id, video=cfg.video, track=track)
    console.print(f"{done.path}: {cfg.format} dataset, {done.episodes} episodes, "
                  f"{done.frames} frames", highlight=False)
    return 0


def import_(cfg: ImportConfig) -> int:
    fmt = cfg.resolved_format()
    fn = _converter(IMPORTERS, fmt)
    kwargs: dict[str, Any] = {"source": cfg.source, "skip": cfg.skip, "track": track}
    if fmt == "robomimic":
        kwargs |= {"fps": cfg.fps, "success": cfg.success}
    else:
        for key in ("fps", "success"):
            if getattr(cfg, key) is not None:
                raise ConfigError(f"{key}: only for format=robomimic (a LeRobotDataset says it)")
        kwargs["repo_id"] = cfg.repo_id
    with _quiet_store_log():
        done = fn(cfg.input, cfg.output, **kwargs)
    console.print(f"{done.path}: episode store, {done.episodes} episodes, {done.frames} frames "
                  f"(from {fmt} {cfg.input})", highlight=False)
    return 0


def show(cfg: ShowConfig) -> int:
    from robolearn.episode_view import render_episode

    with EpisodeStore.open(cfg.store, "r") as store:
        if not -len(store) <= cfg.episode < len(store):
            raise ConversionError(f"{store.name}: no episode {cfg.episode} ({len(store)} "
                                  "episodes)")
        lowdim = [k for k, f in store.features.items() if not f.image]
        bad = sorted(set(cfg.keys or ()) - set(lowdim))
        if bad:
            raise ConfigError(f"keys: {bad} are not low-dim features of {store.name} "
                              f"({', '.join(lowdim) or 'none'})")
        suffix = ".mp4" if any(f.image for f in store.features.values()) else ".png"
        index = cfg.episode % len(store)
        out = Path(cfg.output) if cfg.output else \
            Path(f"{Path(store.name).stem}-episode{index}{suffix}")
        if out.suffix.lower() != suffix:
            what = "a video: the store has cameras" if suffix == ".mp4" else \
                "a figure: the store has no camera"
            raise ConfigError(f"output: {out} should end in {suffix} ({what})")
        with staged_output(out) as tmp:
            frames = render_episode(store, index, tmp, cfg.keys)
    what = f"{frames} frames" if frames else "traces"
    console.print(f"{out}: episode {index} of {cfg.store} ({what})", highlight=False)
    return 0


@contextmanager
def _quiet_store_log() -> Iterator[None]:
    """The store's "created store" line would name the temporary folder the output is built in;
    the command's own last line names the output."""
    logger = logging.getLogger("data.store")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
