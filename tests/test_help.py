"""``robolearn <command> --help``: every config key with its type, default and the comment written
beside its dataclass field, for every registered command (and every policy and robot a command
can choose), so a new command, policy or robot with a field without a comment fails here."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from importlib.metadata import version

import pytest
from omegaconf import DictConfig, OmegaConf

from policies import POLICIES
from policies.rl import RL_ALGOS
from robolearn.arm_cmds import leader_teleops
from robolearn.cli import COMMANDS, main, schema_of
from robolearn.confighelp import cut_off_comments
from robolearn.env import ENVS
from robolearn.robot import ROBOTS

# one env per registered robot: the robot.* keys a command gets depend on the env's robot
ENV_OF_ROBOT = {spec["robot"]: env_id for env_id, spec in reversed(ENVS.items())}
CHOICES = [(name, []) for name in COMMANDS]
CHOICES += [("train", [f"policy={p}"]) for p in [*POLICIES, *RL_ALGOS]]
CHOICES += [("collect", [f"env={ENV_OF_ROBOT[r]}"]) for r in ROBOTS]
CHOICES += [("deploy", [f"robot={r}"]) for r in ROBOTS]  # robot=NAME: robot.type and its keys
CHOICES += [("calibrate", [f"teleop={t}"]) for t in leader_teleops()]


def squash(text: str) -> str:
    return "".join(text.split())


def leaves(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted paths of the leaf keys of a structured config (nested configs are not leaves)."""
    out = []
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            out += leaves(child, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def source_comment(schema: type, path: str) -> str:
    """The ``# comment`` on the line declaring the field at ``path`` (else the first of the
    comment lines just above it, with no blank line between), read with a regex from the source
    of the first class in the MRO that declares it with one."""
    *parents, name = path.split(".")
    node = OmegaConf.structured(schema)
    for p in parents:
        node = node[p]
    cls = OmegaConf.get_type(node)
    assert isinstance(cls, type)
    for owner in cls.__mro__:
        if name not in owner.__dict__.get("__annotations__", {}):
            continue
        try:
            source = inspect.getsource(owner)
        except (OSError, TypeError):  # made by make_dataclass: a base declares it
            continue
        inline = re.search(rf"^\s+{name}\s*:[^#\n]*#\s*(.+)$", source, re.M)
        above = re.search(rf"^[ \t]+#\s*(.+)\n(?:[ \t]+#.*\n)*[ \t]+{name}\s*:", source, re.M)
        if inline or above:
            return (inline or above).group(1).strip()  # type: ignore[union-attr]
    return ""


def help_entries(text: str) -> dict[str, tuple[str, str]]:
    """``{dotted key: (its line, its whole entry)}`` from the help's list of config keys."""
    entries: dict[str, tuple[str, str]] = {}
    key = None
    for line in text.split("config keys", 1)[1].splitlines()[1:]:
        m = re.match(r"^  (\S+?): ", line + " ")
        if m:
            key = m.group(1)
            entries[key] = (line, line)
        elif key is not None:
            entries[key] = (entries[key][0], entries[key][1] + " " + line.strip())
    return entries


@pytest.mark.parametrize(("command", "choice"), CHOICES,
                         ids=[" ".join([c, *a]) for c, a in CHOICES])
def test_help_lists_every_key_with_type_default_and_comment(
        command: str, choice: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command.split(), *choice, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: robolearn {command}" in out
    schema = schema_of(COMMANDS[command], None, choice)
    entries = help_entries(out)
    defaults = OmegaConf.structured(schema)
    keys = leaves(defaults)
    assert keys and set(keys) <= set(entries), sorted(set(keys) - set(entries))
    for key in keys:
        line, entry = entries[key]
        comment = source_comment(schema, key)
        assert comment, f"{command}: field {key} has no comment in its dataclass"
        assert squash(comment) in squash(entry), (key, comment, entry)
        if OmegaConf.is_missing(defaults, key):
            default = "(required)"
        else:
            node = OmegaConf.select(defaults, key)
            default = json.dumps(OmegaConf.to_container(node) if OmegaConf.is_config(node)
                                 else node)
        assert re.fullmatch(rf"  {re.escape(key)}: \S.* = {re.escape(default)}", line), \
            (key, default, line)


def all_dataclasses() -> list[type]:
    """Every dataclass defined in the project's packages (modules that fail to import, such as
    a driver whose optional dependency is missing, are skipped)."""
    found = []
    for package in ("robolearn", "policies", "data", "hardware", "sim", "robolearn_core"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}.", onerror=lambda _: None):
            try:
                module = importlib.import_module(info.name)
            except Exception:  # an optional dependency missing: not this test's business
                continue
            found += [obj for obj in vars(module).values() if isinstance(obj, type)
                      and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__]
    return found


def test_no_config_comment_is_cut_off_in_help() -> None:
    """A field's comment that is closed (no parenthesis left open) and goes on in comment lines
    right below it loses those lines in --help: a sentence that goes on must leave a "(" open
    on the field's line, and a note about the next field must follow a blank line."""
    classes = all_dataclasses()
    assert any(cls.__name__ == "TrainConfig" for cls in classes)  # the walk found the configs
    cut = [f"{cls.__module__}.{cls.__qualname__}.{name}: dropped '# {line}'"
           for cls in classes for name, line in cut_off_comments(cls)]
    assert not cut, "\n".join(cut)


def test_train_help_shows_the_chosen_policys_keys_and_how_to_see_another(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    plain = capsys.readouterr().out
    assert "policy_config.hidden_dim" in plain  # mlp, the default policy
    assert "policy=NAME --help" in plain
    assert main(["train", "policy=act", "--help"]) == 0
    act = capsys.readouterr().out
    assert "policy_config.temporal_ensemble_coeff: float | None = 0.01" in act
    assert "policy_config.hidden_dim" not in act and "policy=act" in act
    assert "dataset: str = (required)" in act  # the common keys too
    # an RL learner's keys, and the robot's of the env it practises in
    assert main(["train", "policy=sac", "env=robolearn/SimArmLift-v0", "--help"]) == 0
    sac = capsys.readouterr().out
    assert "policy_config.n_critics" in sac and "robot.cameras: list[str] = []" in sac
    assert "robot.track" not in sac


def test_help_for_a_bad_choice_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "policy=nope", "--help"]) == 2
    out, err = capsys.readouterr()
    assert "unknown policy 'nope'" in err and "mlp" in err and len(err.splitlines()) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"robolearn {version('robolearn')}"
