"""The name is the registry: ``resolve(TABLE, "sim_car", "robot")`` imports ``TABLE[name]``
("module:attr") only when it is asked for, so adding a robot, policy or device touches its own
folder plus one line in its table, and an unknown name fails listing the known ones."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(table: dict[str, str], name: str, kind: str) -> Any:
    """Import ``table[name]`` lazily; an unknown name fails listing the known ones."""
    if name not in table:
        raise KeyError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)
