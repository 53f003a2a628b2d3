"""The ``robolearn`` command line.

Every command is a :class:`Command` in :data:`COMMANDS`: a typed config dataclass plus a function
that runs it. Each takes ``--config FILE`` and ``key=value`` overrides; positional arguments fill
the config keys the command names (``robolearn data info PATH`` sets ``path``). The whole config
is loaded and validated before the command starts, so a typo costs nothing. ``--help`` lists
every config key with its type, default and meaning, generated from the config dataclasses
(``robolearn train policy=act --help``: with the keys that choice adds).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from robolearn_core.config import ConfigError, MissingValues, load_config
from robolearn_core.progress import setup_logging

log = logging.getLogger("robolearn")


@dataclass(frozen=True)
class Command:
    name: str  # words after "robolearn", e.g. "data info"
    config: str  # "module:ConfigClass", or "module:schema_for" (file, overrides) -> class
    run: str  # "module:function", called with the loaded config; returns the exit code
    positional: tuple[str, ...] = ()  # config keys filled, in order, by positional arguments
    help: str = ""
    # config keys that name a choice: ``KEY=NAME`` stands for ``KEY.type=NAME``, so the choice
    # and its settings share one key (``robot=so101 robot.port=/dev/ttyACM0``)
    choices: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {c.name: c for c in [
    Command("quickstart", "robolearn.demo:QuickstartConfig", "robolearn.demo:run",
            help="record scripted demos into an episode store, crash-test it, sample windows"),
    Command("collect", "robolearn.collect:schema_for", "robolearn.collect:run", ("output",),
            "record demonstrations (scripted expert or a teleop device) into an episode store"),
    Command("train", "robolearn.train:schema_for", "robolearn.train:run", (),
            "train a registered policy on an episode store (resumes where it stopped)"),
    Command("improve", "robolearn.improve:ImproveConfig", "robolearn.improve:run", ("start",),
            "interactive imitation: the robot acts, asks its teacher, learns (method=dagger|"
            "hgdagger|thrifty|askdagger)"),
    Command("learner", "robolearn.practice.learner:schema_for", "robolearn.practice.learner:run",
            ("output",), "practice: learn from actors over gRPC, serve them weights (policy=rlpd|"
            "sac; resumes exactly)"),
    Command("actor", "robolearn.practice.actor:schema_for", "robolearn.practice.actor:run",
            ("learner",), "practice: one robot acting for a learner (learner=HOST:PORT), "
                          "recording every step"),
    Command("course", "robolearn.practice.course:CourseConfig", "robolearn.practice.course:run",
            ("store",), "a car's course (checkpoints) from a recorded demo lap: robot.course="),
    Command("reward train", "robolearn.practice.reward_cmd:RewardTrainConfig",
            "robolearn.practice.reward_cmd:train", ("store",),
            "HIL-SERL's reward classifier from labelled frames (an actor's reward_classifier=)"),
    Command("practice", "robolearn.practice.session:PracticeConfig",
            "robolearn.practice.session:run", ("output",),
            "practice on this machine: a learner and N actors, each its own process"),
    Command("eval", "robolearn.evaluate:EvalConfig", "robolearn.evaluate:run", ("checkpoint",),
            "run a checkpoint for N seeded episodes: success rate with its CI, return, videos"),
    Command("calibrate", "robolearn.arm_cmds:calibrate_schema", "robolearn.arm_cmds:calibrate",
            (), "calibrate an arm with lerobot's own flow (robot=so101 robot.port=...), or a "
                "leader arm (teleop=so101_leader teleop.port=...)",
            choices=("robot", "teleop")),
    Command("emulate", "robolearn.arm_cmds:EmulateConfig", "robolearn.arm_cmds:emulate",
            ("robot",), "emulate a robot's hardware on a pseudo-terminal (an arm's servo bus, "
            "the RC car's firmware in simavr); prints its port"),
    Command("deploy", "robolearn.deploy:schema_for", "robolearn.deploy:run", ("checkpoint",),
            "run a checkpoint on a robot (robot=NAME robot.KEY=VALUE), recording every step",
            choices=("robot",)),
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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"robolearn {version('robolearn')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "robolearn (not installed: version unknown)"


def schema_of(cmd: Command, path: str | None = None, overrides: list[str] | None = None) -> type:
    """The config dataclass of ``cmd`` for this file and these overrides."""
    schema = _load(cmd.config)
    if not dataclasses.is_dataclass(schema):  # the schema depends on the config itself
        schema = schema(path, [_choice(cmd, o) for o in overrides or []])
    assert isinstance(schema, type)
    return schema


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robolearn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
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
        leaf = sub.add_parser(words[-1], help=cmd.help, description=cmd.help, add_help=False,
                              usage=f"robolearn {cmd.name} [-h] [--config FILE] [-v] [-q] "
                                    f"{''.join(k.upper() + ' ' for k in cmd.positional)}"
                                    "[key=value ...]",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        leaf.add_argument("-h", "--help", action="store_true",
                          help="show this help, with every config key, and exit")
        leaf.add_argument("--config", metavar="FILE", help="YAML config file")
        leaf.add_argument("-v", "--verbose", action="count", default=0,
                          help="debug log messages")
        leaf.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
        leaf.add_argument("args", nargs="*", metavar="ARG",
                          help=f"{' '.join(k.upper() for k in cmd.positional)} "
                               "then key=value overrides".strip())
        leaf.set_defaults(_command=cmd, _parser=leaf)
    return parser


def _help(cmd: Command, parser: argparse.ArgumentParser, path: str | None,
          overrides: list[str]) -> int:
    """Print the command's usage and every config key (for these overrides: ``policy=act``)."""
    from robolearn.confighelp import describe

    try:
        keys = describe(schema_of(cmd, path, overrides), cmd.name)
    except ConfigError as exc:
        print(f"robolearn {cmd.name}: config error: {exc}", file=sys.stderr)
        return 2
    print(parser.format_help().rstrip() + "\n\n" + keys)
    return 0


def _choice(cmd: Command, override: str) -> str:
    """``robot=so101`` -> ``robot.type=so101`` where ``robot`` is one of the command's
    :attr:`Command.choices` (a ``{...}`` value sets the whole node and stays as it is)."""
    key, _, value = override.partition("=")
    if key in cmd.choices and not value.lstrip().startswith("{"):
        return f"{key}.type={value}"
    return override


def _positional_error(cmd: Command, given: list[str], missing: list[str]) -> str:
    """One line for positional arguments that are missing or too many, naming them."""
    names = " ".join(k.upper() for k in cmd.positional)
    takes = f"takes {names}" if names else "takes no positional argument"
    if missing:
        return (f"missing positional argument{'s' if len(missing) > 1 else ''} "
                f"{' '.join(k.upper() for k in missing)} (robolearn {cmd.name} {names})")
    extra = given[len(cmd.positional):]
    return (f"too many positional arguments: {' '.join(map(repr, extra))} (robolearn "
            f"{cmd.name} {takes}; settings are key=value)")


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
    overrides = [_choice(cmd, a) for a in args.args if "=" in a]
    if args.help:
        return _help(cmd, args._parser, args.config, overrides)
    if len(positional) > len(cmd.positional):
        print(f"robolearn {cmd.name}: {_positional_error(cmd, positional, [])}", file=sys.stderr)
        return 2
    overrides = [f"{k}={v}" for k, v in zip(cmd.positional, positional, strict=False)] + overrides
    try:
        cfg: Any = load_config(schema_of(cmd, args.config, overrides), args.config, overrides)
    except MissingValues as exc:
        unfilled = [k for k in cmd.positional[len(positional):] if k in exc.keys]
        msg = _positional_error(cmd, positional, unfilled) if unfilled else f"config error: {exc}"
        print(f"robolearn {cmd.name}: {msg}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"robolearn {cmd.name}: config error: {exc}", file=sys.stderr)
        return 2
    run: Callable[[Any], int] = _load(cmd.run)
    from data.schema import StoreError

    _interruptible()

    try:
        return int(run(cfg) or 0)
    except StoreError as exc:
        print(f"robolearn {cmd.name}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found once the command has looked at its inputs
        print(f"robolearn {cmd.name}: config error: {exc}", file=sys.stderr)
        return 2
    except _runtime_errors() as exc:  # evaluated only when something was raised
        # the control loop notes what it did about it (robot stopped, steps kept)
        notes = "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))
        print(f"robolearn {cmd.name}: {exc}{notes}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"robolearn {cmd.name}: interrupted", file=sys.stderr)
        return 130


def _interruptible() -> None:
    """SIGINT stops every command (the robot to its safe state, the steps kept), also when it
    was started from a script in the background: a shell without job control starts those
    with SIGINT ignored, Python then keeps it ignored, and ``kill -INT`` (or a test's Ctrl-C)
    did nothing to a deploy running that way (seen in a test run under ``nohup make test &``)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _runtime_errors() -> tuple[type[BaseException], ...]:
    """Failures that end a command in one line, exit 1: a policy or device gave no usable action
    (the robot is stopped and the steps kept; the message says so), a robot failed (its link
    lost, a port that does not open), or this machine cannot render camera frames (the message
    names the package). Imported only when needed."""
    from robolearn.loop import ActionError
    from robolearn.robot import RobotError
    from sim import RenderingUnavailable

    return (ActionError, RenderingUnavailable, RobotError)


if __name__ == "__main__":
    sys.exit(main())
