"""The config keys of a command, for its ``--help``: generated from the config dataclasses.

Each key's meaning is the ``# comment`` written beside its field in the source, read with
:mod:`ast` and :mod:`tokenize`, so the help can never disagree with the code. A comment that
leaves a parenthesis open goes on in the comment lines below it; a field without a comment of its
own (a nested config) takes the comment lines just above it. Other comment lines between fields
are notes for the reader of the source (measurements behind a default) and stay out of the help.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
from dataclasses import dataclass
from typing import Any

from robolearn_core.config import MISSING


@dataclass(frozen=True)
class Key:
    path: str  # dotted key, e.g. "optim.lr"
    type: str  # as written in the source, e.g. "float | None"
    default: str  # as it would be written on the command line; "(required)" when MISSING
    comment: str  # the field's one-line meaning ("" when the source has none)
    section: bool = False  # a nested config: its keys follow, each with this path as prefix


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for the fields ``cls`` itself declares, from its source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made at run time (dataclasses.make_dataclass): no source
        return {}
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    fields = [(n.target.id, n.lineno, n.end_lineno or n.lineno) for n in body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    inline: dict[int, str] = {}  # line -> comment after code on that line
    alone: dict[int, str] = {}  # line -> comment that is the whole line
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (inline if tok.start[0] in code_lines else alone)[tok.start[0]] = text
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))

    def block(line: int, step: int) -> list[str]:
        """The comment-only lines next to ``line`` going by ``step`` (+1 down, -1 up)."""
        out = []
        while line + step in alone:
            line += step
            out.append(alone[line])
        return out[::step]

    comments: dict[str, str] = {}
    for name, start, end in fields:
        text = " ".join(inline[n] for n in range(start, end + 1) if n in inline)
        if text.count("(") > text.count(")"):  # left open: it goes on below
            below = block(end, +1)
            text = " ".join([text, *below])
            for n in range(end + 1, end + 1 + len(below)):
                del alone[n]  # taken: not the comment above the next field
        comments[name] = text or " ".join(block(start, -1))
    return comments


def comment_of(schema: type, name: str) -> str:
    """The comment of field ``name``: where ``schema`` or the first base declaring it has one."""
    for cls in schema.__mro__:
        if name in cls.__dict__.get("__annotations__", {}):
            text = field_comments(cls).get(name, "")
            if text:
                return text
    return ""


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


def _show(value: Any) -> str:
    if isinstance(value, str) and value == MISSING:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str)


def config_keys(schema: type, values: Any = None, prefix: str = "") -> list[Key]:
    """Every key of ``schema`` (a config dataclass) in field order, nested ones after their
    section; defaults from ``values`` (an instance of it) where given, else from the fields."""
    keys = []
    for f in dataclasses.fields(schema):
        value = getattr(values, f.name) if values is not None else _default(f)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        comment = comment_of(schema, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys.append(Key(prefix + f.name, type(value).__name__, "", comment, section=True))
            keys += config_keys(type(value), value, f"{prefix}{f.name}.")
        else:
            keys.append(Key(prefix + f.name, kind, _show(value), comment))
    return keys


def describe(schema: type, command: str, width: int = 100) -> str:
    """The help text listing ``schema``'s keys; a section chosen by another key (``policy``
    chooses ``policy_config``) says how to list it for another choice."""
    chosen: dict[str, tuple[str, str]] = getattr(schema, "selected_by", {})
    lines = ["config keys (key=value on the command line, or in the YAML file of --config):"]
    wrap = functools.partial(textwrap.wrap, width=width, initial_indent=" " * 6,
                             subsequent_indent=" " * 6)
    for key in config_keys(schema):
        if key.section:
            lines.append(f"  {key.path}.*:")
            if key.path in chosen:
                by, value = chosen[key.path]
                lines += wrap(f"{key.comment or 'settings'} ({key.type}, chosen by {by}="
                              f"{value}; `robolearn {command} {by}=NAME --help` lists the keys "
                              f"of another {by})")
            else:
                lines += wrap(key.comment or key.type)
            continue
        lines.append(f"  {key.path}: {key.type} = {key.default}")
        lines += wrap(key.comment)
    return "\n".join(lines)
