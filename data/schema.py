"""The data contract of an episode store: features, action sources, format version, errors.

A store's schema is a mapping from feature name to :class:`Feature`, in LeRobot's naming::

    {
        "observation.state": Feature("float32", (32,), names=["j0", ..., "j31"]),
        "observation.images.front": Feature("uint8", (224, 224, 3)),   # (H, W, C) RGB
        "action": Feature("float32", (8,)),
    }

Every step of every episode has one value per feature, plus two reserved per-step fields the
store always writes itself:

- ``timestamp``: float64 seconds since the episode started, shape ``()``.
- ``source``: uint8 code of where the step's action came from (:class:`Source`).

Arrays read back from a store have shape ``(T, *feature.shape)`` for an episode of T steps.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT_NAME = "robolearn.episode_store"
FORMAT_VERSION = 1  # bump on any layout change; readers refuse versions newer than theirs

RESERVED_KEYS = ("timestamp", "source")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_DTYPES = {"bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32",
           "float64"}


class Source(enum.IntEnum):
    """Where the action of a step came from. Stored per step as uint8."""

    SCRIPTED = 0  # a scripted expert (IK, pure pursuit, ...)
    TELEOP = 1  # a human driving the robot through a teleop device
    POLICY = 2  # a learned policy, with a human watching (evaluation, DAgger rollouts)
    INTERVENTION = 3  # a human took over from the policy (HG-DAgger, RLIF, HIL-SERL)
    AUTONOMOUS = 4  # a learner practising on its own (online RL)

    @classmethod
    def parse(cls, value: Source | str | int) -> Source:
        """Accept a Source, its lower-case name or its code; fail naming the valid choices."""
        if isinstance(value, Source):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        elif isinstance(value, (int, np.integer)) and int(value) in cls._value2member_map_:
            return cls(int(value))
        choices = ", ".join(s.name.lower() for s in cls)
        raise ValueError(f"unknown action source {value!r}; expected one of: {choices}")


class StoreError(Exception):
    """Anything wrong with an episode store. The message names the store and, where it applies,
    the episode, the array and the file."""


class StoreLockedError(StoreError):
    """Another live process holds the store's writer lock."""


class StoreFormatError(StoreError):
    """The directory is not a robolearn store, or one written by a newer robolearn."""


class StoreCorruptError(StoreError):
    """Data on disk fails to decode or does not match what the commit log says."""


@dataclass(frozen=True)
class Feature:
    """One per-step value: dtype, shape of a single step, and optional names of its elements."""

    dtype: str  # numpy dtype name, e.g. "float32" or "uint8"
    shape: tuple[int, ...]  # shape of one step; images are (H, W, C) with C in {1, 3}
    names: tuple[str, ...] | None = None  # element names, e.g. joint names, for 1-D features
    image: bool = field(default=False)  # set for camera frames (stored with the image codec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.names is not None:
            object.__setattr__(self, "names", tuple(str(n) for n in self.names))

    @classmethod
    def from_spec(cls, name: str, spec: Feature | Mapping[str, Any]) -> Feature:
        """Build from ``{dtype, shape, names?}`` (LeRobot's spelling); validate with the name."""
        if isinstance(spec, Feature):
            feat = spec
        else:
            unknown = set(spec) - {"dtype", "shape", "names", "image"}
            if unknown:
                raise ValueError(f"feature {name!r}: unknown field(s) {sorted(unknown)}; "
                                 "expected dtype, shape, names")
            if "dtype" not in spec or "shape" not in spec:
                raise ValueError(f"feature {name!r}: needs both 'dtype' and 'shape'")
            dtype = str(spec["dtype"])
            is_image = (bool(spec.get("image", False)) or dtype in ("image", "video")
                        or name.startswith("observation.images."))
            if dtype in ("image", "video"):  # LeRobot marks cameras by dtype
                dtype = "uint8"
            names = spec.get("names")
            if isinstance(names, Mapping) or (names is not None and len(names) == 3
                                              and is_image):
                names = None  # LeRobot uses ["height", "width", "channels"] for images
            feat = cls(dtype, tuple(spec["shape"]), tuple(names) if names else None, is_image)
        feat.validate(name)
        if not feat.image and name.startswith("observation.images."):
            feat = cls(feat.dtype, feat.shape, feat.names, True)
            feat.validate(name)
        return feat

    def validate(self, name: str) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"feature name {name!r}: use letters, digits, '_', '.', '-'")
        if name in RESERVED_KEYS:
            raise ValueError(f"feature name {name!r} is reserved (the store writes it itself)")
        if self.dtype not in _DTYPES:
            raise ValueError(f"feature {name!r}: dtype {self.dtype!r} not one of {sorted(_DTYPES)}")
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"feature {name!r}: shape {self.shape} has a non-positive size")
        if self.names is not None and (len(self.shape) != 1 or len(self.names) != self.shape[0]):
            raise ValueError(f"feature {name!r}: {len(self.names)} names for shape {self.shape}")
        if self.image and (self.dtype != "uint8" or len(self.shape) != 3
                           or self.shape[2] not in (1, 3)):
            raise ValueError(f"feature {name!r}: camera frames must be uint8 (H, W, C) with C in "
                             f"{{1, 3}}, got {self.dtype} {self.shape}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dtype": self.dtype, "shape": list(self.shape)}
        if self.names is not None:
            out["names"] = list(self.names)
        if self.image:
            out["image"] = True
        return out

    def check_value(self, name: str, value: Any) -> np.ndarray:
        """Convert one step's value to the feature's dtype and shape, or fail naming the key."""
        arr = np.asarray(value)
        if arr.shape != self.shape:
            raise ValueError(f"frame[{name!r}]: shape {arr.shape}, schema says {self.shape}")
        if arr.dtype != self.dtype:
            if self.image and arr.dtype != np.uint8:
                raise ValueError(f"frame[{name!r}]: camera frames must be uint8, got {arr.dtype}")
            arr = _cast(name, arr, self.dtype)
        # Camera buffers are often views (crops, BGR->RGB flips) with odd strides: copy to
        # C order here, or the JPEG encoder rejects them and np.stack keeps the odd layout.
        return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d shape


@functools.cache
def _cast_plan(src: np.dtype[Any], dst: str) -> tuple[str, np.dtype[Any], float, float]:
    """How values of ``src`` become ``dst`` (worked out once per pair): "safe" (no value can
    change), "int" (check the range lo..hi), "float" (check magnitudes against hi), "refuse".
    The int bounds are Python ints: comparing a numpy integer with a float is 3x slower."""
    dtype = np.dtype(dst)
    if np.can_cast(src, dtype, casting="safe"):
        return "safe", dtype, 0, 0
    if src.kind in "biu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        return "int", dtype, int(info.min), int(info.max)
    if not np.can_cast(src, dtype, casting="same_kind"):
        return "refuse", dtype, 0, 0
    return "float", dtype, 0, float(np.finfo(dtype).max)


# the per-step arrays every store has besides its features (data/timestamp, data/source)
RESERVED: dict[str, Feature] = {"timestamp": Feature("float64", ()), "source": Feature("uint8", ())}


def _cast(name: str, arr: np.ndarray, dst: str) -> np.ndarray:
    """``arr`` as ``dst``, or a ValueError when a value would change beyond rounding.

    Refused: another kind (float into an integer feature, NaN included), integers outside the
    target's range (300 into uint8 wrapped to 44, -1 into uint8 to 255), finite floats beyond
    the target's largest value (1e40 into float32 became inf). Rounding a float64 to float32
    (or an int64 to float32) is not a loss in this sense. One reduction per cast value.
    """
    plan, dtype, lo, hi = _cast_plan(arr.dtype, dst)
    if plan == "safe" or arr.size == 0:
        return arr.astype(dtype)
    if plan == "refuse":
        hint = " (it holds NaN)" if arr.dtype.kind == "f" and np.isnan(arr).any() else ""
        raise ValueError(f"frame[{name!r}]: dtype {arr.dtype} cannot become {dtype}{hint}")
    if plan == "int":
        if arr.size <= 64:  # a few joint or gripper values: Python's min/max is 3x faster
            values = arr.ravel().tolist()
            low, high = min(values), max(values)
        else:
            low, high = arr.min(), arr.max()
        if low < lo or high > hi:
            raise ValueError(f"frame[{name!r}]: value {low if low < lo else high} does not fit "
                             f"{dtype} ({lo}..{hi})")
        return arr.astype(dtype)
    if arr.ndim == 0:
        if not abs(float(arr)) > hi:  # NaN compares False: it stays NaN
            return arr.astype(dtype)
    elif arr.dtype.kind == "f" and np.vdot(arr, arr) <= hi * hi:
        return arr.astype(dtype)  # every |value| <= hi: nothing overflows (the common case)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(dtype)
        overflow = np.isinf(out) & ~np.isinf(arr)
    if overflow.any():
        raise ValueError(f"frame[{name!r}]: value {arr[overflow].flat[0]} does not fit "
                         f"{dtype} (largest {hi})")
    return out


def parse_features(features: Mapping[str, Feature | Mapping[str, Any]]) -> dict[str, Feature]:
    """Validate a features mapping; the error names the offending feature."""
    if not features:
        raise ValueError("features: a store needs at least one feature")
    return {str(name): Feature.from_spec(str(name), spec) for name, spec in features.items()}
