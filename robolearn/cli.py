"""The ``robolearn`` command line.

Every command is a :class:`Command` in :data:`COMMANDS`: a typed config dataclass plus a function
that runs it. Each takes ``--config FILE`` and ``key=value`` overrides; positional arguments fill
the config keys the command names (``robolearn data info PATH`` sets ``path``). The whole config
is loaded and validated before the command starts, so a typo costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robolearn.config import ConfigError, load_config
from robolearn.progress import setup_logging

log = logging.getLogger("robolearn")


@dataclass(frozen=True)
class Command:
    name: str  # words after "robolearn", e.g. "data info"
    config: str  # "module:ConfigClass", or "module:schema_for" (file, overrides) -> class
    run: str  # "module:function", called with the loaded config; returns the exit code
    positional: tuple[str, ...] = ()  # config keys filled, in order, by positional arguments
    help: str = ""


COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("quickstart", "robolearn.demo:QuickstartConfig", "robolearn.demo:run",
            help="record scripted demos into an episode store, crash-test it, sample windows"),
    Command("collect", "robolearn.collect:CollectConfig", "robolearn.collect:run", ("output",),
            "record demonstrations (scripted expert or a teleop device) into an episode store"),
    Command("train", "robolearn.train:schema_for", "robolearn.train:run", (),
            "train a registered policy on an episode store (resumes where it stopped)"),
    Command("eval", "robolearn.evaluate:EvalConfig", "robolearn.evaluate:run", ("checkpoint",),
            "run a checkpoint for N seeded episodes: success rate with its CI, return, videos"),
    Command("data info", "robolearn.data_cmds:InfoConfig", "robolearn.data_cmds:info",
            ("path",), "schema, episodes, frames, sources and size of a store"),
    Command("data verify", "robolearn.data_cmds:VerifyConfig", "robolearn.data_cmds:verify",
            ("path",), "read every episode back; exit 1 naming the bad ones"),
    Command("data merge", "robolearn.data_cmds:MergeConfig", "robolearn.data_cmds:merge",
            ("output",), "copy (filtered) episodes of several stores into one new store"),
    Command("data delete", "robolearn.data_cmds:DeleteConfig", "robolearn.data_cmds:delete",
            ("path",), "delete episodes by index"),
    Command("data export", "robolearn.interop_cmds:ExportConfig", "robolearn.interop_cmds:export",
            ("store", "output"), "write a store as another format's dataset (format=lerobot)"),
    Command("data import", "robolearn.interop_cmds:ImportConfig", "robolearn.interop_cmds:import_",
            ("input", "output"), "make a store from a LeRobotDataset or a robomimic .hdf5 file"),
    Command("data show", "robolearn.interop_cmds:ShowConfig", "robolearn.interop_cmds:show",
            ("store",), "write a video (or PNG) of one episode: cameras beside its traces"),
]}


def _load(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robolearn", description=__doc__.splitlines()[0])
    groups: dict[str, Any] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        words = cmd.name.split()
        sub = top
        for depth, word in enumerate(words[:-1]):
            key = " ".join(words[:depth + 1])
            if key not in groups:
                p = sub.add_parser(word, help=f"{word} commands")
                groups[key] = p.add_subparsers(dest=f"sub{depth}", metavar="SUBCOMMAND",
                                               required=True)
            sub = groups[key]
        leaf = sub.add_parser(words[-1], help=cmd.help, description=cmd.help)
        leaf.add_argument("--config", metavar="FILE", help="YAML config file")
        leaf.add_argument("-v", "--verbose", action="count", default=0)
        leaf.add_argument("-q", "--quiet", action="store_true")
        leaf.add_argument("args", nargs="*", metavar="ARG",
                          help=f"{' '.join(k.upper() for k in cmd.positional)} "
                               "then key=value overrides".strip())
        leaf.set_defaults(_command=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # key=value args may also follow the flags
    flags = [e for e in extra if e.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.args = [*args.args, *extra]
    cmd: Command = args._command
    setup_logging(-1 if args.quiet else args.verbose)
    positional = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if len(positional) > len(cmd.positional):
        print(f"robolearn {cmd.name}: unexpected argument(s) {positional[len(cmd.positional):]}"
              " (overrides are key=value)", file=sys.stderr)
        return 2
    overrides = [f"{k}={v}" for k, v in zip(cmd.positional, positional, strict=False)] + overrides
    try:
        schema = _load(cmd.config)
        if not dataclasses.is_dataclass(schema):  # the schema depends on the config itself
            schema = schema(args.config, overrides)
        cfg = load_config(schema, args.config, overrides)
    except ConfigError as exc:
        print(f"robolearn {cmd.name}: config error: {exc}", file=sys.stderr)
        return 2
    run: Callable[[Any], int] = _load(cmd.run)
    from data.schema import StoreError

    try:
        return int(run(cfg) or 0)
    except StoreError as exc:
        print(f"robolearn {cmd.name}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found once the command has looked at its inputs
        print(f"robolearn {cmd.name}: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robolearn {cmd.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
