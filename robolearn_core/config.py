"""Typed configs: omegaconf structured configs built from dataclasses.

``load_config(Schema, "file.yaml", ["a.b=3"])`` merges the schema's defaults, the YAML file and the
command-line overrides, in that order, and returns a ``Schema`` instance. Everything that can be
wrong is reported before any work starts, as a :class:`ConfigError` naming the full key path:
unknown keys (with the closest known key), wrong types, missing required values (``MISSING``),
and values that a dataclass's ``__post_init__`` rejects.

Validation in ``__post_init__`` raises :class:`InvalidValue` with the field name; the loader adds
the path of the node that holds it. A component's own config that raises a plain ``ValueError``
in its ``__post_init__`` (the robots' configs in ``sim/``) is reported with its node's path too.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

__all__ = ["MISSING", "ConfigError", "InvalidValue", "MissingValues", "load_config", "probe",
           "to_yaml"]


class ConfigError(Exception):
    """A config that cannot be used; the message names the source and the key path."""


class MissingValues(ConfigError):
    """Required values (``MISSING``) that neither the file nor an override set: ``keys``."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


class InvalidValue(ValueError):
    """Raised by a config dataclass's ``__post_init__``: ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def load_config[T](schema: type[T], path: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of ``schema`` <- YAML file <- ``key=value`` overrides; validated, typed."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        cfg = _merge(cfg, _load_yaml(Path(path)), f"{path}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.steps=1000)")
        key, _, value = item.partition("=")
        if not key:
            raise ConfigError(f"override {item!r}: empty key")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        where = f" (set them in {path} or as key=value)" if path else " (pass them as key=value)"
        raise MissingValues(f"missing required value(s): {', '.join(missing)}{where}", missing)
    try:
        obj = OmegaConf.to_object(cfg)
    except InvalidValue as exc:
        node = _find_node_path(cfg, exc)
        raise ConfigError(f"{node}{exc.field}: {exc.message}") from None
    except ValueError as exc:  # a component's own config (a robot's) validating itself
        if not _raised_in_post_init(exc):
            raise
        node = _find_node_path(cfg, exc).rstrip(".")
        raise ConfigError(f"{node or 'config'}: {exc}") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc, "config")) from None
    assert isinstance(obj, schema)
    return obj


def probe(path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """The file and the overrides merged without a schema: what a schema that depends on the
    config itself (``policy`` selects ``policy_config``) reads its choice from. Anything
    unreadable here is left out: :func:`load_config` reports it with its place."""
    merged: Any = OmegaConf.create()
    if path is not None and Path(path).is_file():
        try:
            loaded = OmegaConf.load(path)
        except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError, OSError):
            loaded = None
        if isinstance(loaded, DictConfig):
            merged = loaded
    for item in overrides:
        if "=" in item:
            try:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
            except (yaml.YAMLError, OmegaConfBaseException):
                continue
    assert isinstance(merged, DictConfig)
    return merged


def to_yaml(cfg: Any) -> str:
    """The YAML text of a config object (saved next to checkpoints and outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _load_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") \
            from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return loaded


def _merge(base: DictConfig, other: DictConfig | ListConfig, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_describe(exc, source, base)}") from None
    assert isinstance(merged, DictConfig)
    return merged


def _describe(exc: OmegaConfBaseException, source: str, base: DictConfig | None = None) -> str:
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError) and base is not None:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if parent else base
        known = list(node.keys()) if isinstance(node, DictConfig) else []
        close = difflib.get_close_matches(leaf, [str(k) for k in known], n=1)
        hint = f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""
        return f"unknown key '{key}'{hint}; known keys here: {', '.join(map(str, known))}"
    if isinstance(exc, ValidationError):
        msg = str(exc).splitlines()[0]
        return f"key '{key}': {msg}"
    return f"key '{key}': {str(exc).splitlines()[0]}"


def _post_init_owner(exc: BaseException) -> Any:
    """``self`` of the innermost ``__post_init__`` that ``exc`` passed through, or None."""
    tb, owner = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__post_init__":
            owner = tb.tb_frame.f_locals.get("self")
        tb = tb.tb_next
    return owner


def _raised_in_post_init(exc: BaseException) -> bool:
    return dataclasses.is_dataclass(_post_init_owner(exc))


def _find_node_path(cfg: DictConfig, exc: ValueError) -> str:
    """Path prefix ("a.b.") of the config node whose dataclass raised ``exc``."""
    owner = _post_init_owner(exc)
    if owner is None:
        return ""

    def walk(node: Any, prefix: str) -> str | None:
        if not isinstance(node, DictConfig):
            return None
        if OmegaConf.get_type(node) is type(owner) and dataclasses.is_dataclass(owner):
            values = {f.name: getattr(owner, f.name) for f in dataclasses.fields(owner)}
            if all(_same(node.get(k), v) for k, v in values.items()):
                return prefix
        for k in node.keys():
            child = node._get_node(k)
            found = walk(child, f"{prefix}{k!s}.")
            if found is not None:
                return found
        return None

    return walk(cfg, "") or ""


def _same(node_value: Any, obj_value: Any) -> bool:
    if isinstance(node_value, (DictConfig, ListConfig)):
        return True  # nested values are compared at their own level
    return node_value == obj_value
