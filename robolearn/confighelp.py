"""The config keys of a command, for its ``--help``: generated from the config dataclasses.

Each key's meaning is the ``# comment`` written beside its field in the source, read with
:mod:`ast` and :mod:`tokenize`, so the help can never disagree with the code. A comment that
leaves a parenthesis open goes on in the comment lines below it; a field without a comment of its
own (a nested config) takes the comment lines just above it. Other comment lines between fields
are notes for the reader of the source (measurements behind a default), set off from the field
above by a blank line (:func:`cut_off_comments` finds those that are not), and stay out of the
help.
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


@dataclass(frozen=True)
class _Source:
    """A class's fields and its comments, by line of its dedented source."""

    fields: list[tuple[str, int, int]]  # (name, first line, last line) in declaration order
    inline: dict[int, str]  # line -> comment after code on that line
    alone: dict[int, str]  # line -> comment that is the whole line

    def inline_of(self, start: int, end: int) -> str:
        """The inline comments of the lines ``start``..``end`` (a field), joined."""
        return " ".join(self.inline[n] for n in range(start, end + 1) if n in self.inline)

    def block(self, line: int, step: int) -> list[int]:
        """The comment-only lines next to ``line`` going by ``step`` (+1 down, -1 up), in
        source order."""
        out = []
        while line + step in self.alone:
            line += step
            out.append(line)
        return out[::step]


def _left_open(text: str) -> bool:
    """Whether a comment leaves a parenthesis open: then it goes on in the lines below."""
    return text.count("(") > text.count(")")


@functools.cache
def _source(cls: type) -> _Source | None:
    """The fields ``cls`` itself declares and its comments; None without source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # made at run time (dataclasses.make_dataclass): no source
        return None
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    fields = [(n.target.id, n.lineno, n.end_lineno or n.lineno) for n in body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    inline: dict[int, str] = {}
    alone: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (inline if tok.start[0] in code_lines else alone)[tok.start[0]] = text
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    return _Source(fields, inline, alone)


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` for the fields ``cls`` itself declares, from its source."""
    src = _source(cls)
    if src is None:
        return {}
    taken: set[int] = set()  # comment-only lines that went on an open comment above them
    comments: dict[str, str] = {}
    for name, start, end in src.fields:
        text = src.inline_of(start, end)
        if _left_open(text):  # it goes on below
            below = src.block(end, +1)
            text = " ".join([text, *(src.alone[n] for n in below)])
            taken.update(below)  # not the comment above the next field
        above = [n for n in src.block(start, -1) if n not in taken]
        comments[name] = text or " ".join(src.alone[n] for n in above)
    return comments


def cut_off_comments(cls: type) -> list[tuple[str, str]]:
    """``(field, line)`` for each field of ``cls`` (those it declares) whose own comment is
    closed (no parenthesis left open) and yet is followed directly by comment-only lines that
    are not the comment of the next field either: a sentence cut off, whose rest the help
    drops. A note below a field belongs after a blank line; a sentence that goes on below
    leaves a parenthesis open on the field's line."""
    src = _source(cls)
    if src is None:
        return []
    out = []
    for i, (name, start, end) in enumerate(src.fields):
        text = src.inline_of(start, end)
        below = src.block(end, +1)
        if not text or _left_open(text) or not below:
            continue
        if i + 1 < len(src.fields):
            _, next_start, next_end = src.fields[i + 1]
            if below[-1] + 1 == next_start and not src.inline_of(next_start, next_end):
                continue  # the comment above the next field, which has none of its own
        out.append((name, src.alone[below[0]]))
    return out


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
