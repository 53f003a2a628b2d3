"""What the store's JSON files must hold: commit-log records, the root attributes in
``zarr.json``, user metadata. Each check names the file, the line or key, and the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from data.schema import StoreCorruptError, StoreError, parse_features


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def check_counts(v: Any) -> bool:
    """A mapping of action-source names to step counts."""
    return isinstance(v, dict) and all(_is_int(x) and x >= 0 for x in v.values())


# field -> (check, what it must be); required fields of each op first
_ADD_REQUIRED = {
    "id": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "start": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "length": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
}
_ADD_OPTIONAL = {
    "success": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "complete": (lambda v: isinstance(v, bool), "true or false"),
    "task": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "tags": (_str_list, "a list of strings"),
    "sources": (check_counts, "a mapping of source names to step counts"),
    "created": (_is_number, "a number (unix time)"),
    "duration_s": (_is_number, "a number of seconds"),
    "metadata": (lambda v: isinstance(v, dict), "a JSON object"),
}
_RECORDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "add": (_ADD_REQUIRED, _ADD_OPTIONAL),
    "delete": ({"ids": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
                        "a list of episode ids")}, {}),
    "task": ({"task": (lambda v: isinstance(v, str), "a string")}, {}),
}


def check_record(rec: dict[str, Any], where: str,
                 error: type[StoreError] = StoreCorruptError) -> None:
    """Fail naming ``where`` (file, line) and the field when a commit record is malformed.
    Records of an unknown op are left to the reader (written by a newer robolearn). Writers
    check each record too (``error=StoreError``): a record readers refuse is never written."""
    op = rec["op"]
    if not isinstance(op, str):
        raise error(f"{where}: field 'op' is {op!r}, not a string")
    required, optional = _RECORDS.get(op, ({}, {}))
    for name, (ok, want) in required.items():
        if name not in rec:
            raise error(f"{where}: {op!r} record has no field {name!r}")
        if not ok(rec[name]):
            raise error(f"{where}: field {name!r} is {rec[name]!r}, expected {want}")
    for name, (ok, want) in optional.items():
        if name in rec and not ok(rec[name]):
            raise error(f"{where}: field {name!r} is {rec[name]!r}, expected {want}")


def check_attrs(attrs: dict[str, Any], where: str) -> None:
    """The store's root attributes (``zarr.json`` attributes.robolearn), field by field."""
    fields: dict[str, tuple[Any, str]] = {
        "format_version": (_is_int, "an integer"),
        "fps": (lambda v: _is_number(v) and v > 0, "a number > 0"),
        "features": (lambda v: isinstance(v, dict) and v, "a mapping of feature specs"),
        "shard_len": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    }
    for name, (ok, want) in fields.items():
        if name not in attrs:
            raise StoreCorruptError(f"{where}: no field {name!r}")
        if not ok(attrs[name]):
            raise StoreCorruptError(f"{where}: field {name!r} is {attrs[name]!r}, expected "
                                    f"{want}")
    optional: dict[str, tuple[Any, str]] = {
        "tasks": (_str_list, "a list of strings"),
        "robot_type": (lambda v: v is None or isinstance(v, str), "a string or null"),
        "metadata": (lambda v: isinstance(v, dict), "a JSON object"),
    }
    for name, (ok, want) in optional.items():
        if name in attrs and not ok(attrs[name]):
            raise StoreCorruptError(f"{where}: field {name!r} is {attrs[name]!r}, expected "
                                    f"{want}")
    for key, spec in attrs["features"].items():
        if not isinstance(spec, Mapping):
            raise StoreCorruptError(f"{where}: field 'features.{key}' is {spec!r}, expected "
                                    "{dtype, shape}")
    try:
        parse_features(attrs["features"])
    except (ValueError, TypeError) as exc:
        raise StoreCorruptError(f"{where}: field 'features': {exc}") from None


def jsonable(obj: Any, where: str) -> Any:
    """Check metadata is JSON data (numbers, strings, lists, dicts), naming the bad key.

    NaN and infinity are refused: JSON has no spelling for them (Python writes ``NaN``, which
    other JSON readers reject), and a reader could not tell a stored null from a missing value.
    """
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: {obj} is not JSON data (JSON has no NaN or infinity); "
                             "store None or a string instead")
        return obj
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON data (use numbers, strings, "
                    "lists, dicts)")
