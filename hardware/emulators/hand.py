"""A person's hand on an emulated arm: what one does by hand during lerobot's calibration.

lerobot's calibration asks for the arm at the middle of its range of motion (its half-turn
homing reads the servos there), then for every joint moved through its whole range while it
records the extremes. On an emulated arm the plant's ``move_by_hand(servo_id, steps | None)``
does what the hand would; these two helpers are the two steps, used by ``robolearn emulate``
(typed at its prompt) and by the tests. ``pose`` holds the joints where a person holds a leader
arm while teleoperating with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np


class Handled(Protocol):
    def move_by_hand(self, servo_id: int, position: float | None) -> None: ...


def hold_middle(plant: Handled, middles: dict[int, float]) -> None:
    """Hold every joint at the middle of its range (``servo id -> encoder steps``)."""
    for servo_id, steps in middles.items():
        plant.move_by_hand(servo_id, steps)


def sweep(plant: Handled, ranges: dict[int, tuple[float, float]], seconds: float = 1.5,
          rate: float = 100.0) -> None:
    """Move each joint (``servo id -> (low, high)`` steps) from the middle to one end, to the
    other and back to the middle, all at once over ``seconds``; the joints stay held at the
    middle afterwards. Each end is held briefly so a reader polling at 50 Hz sees it."""
    n = max(8, int(seconds * rate))
    path = np.concatenate([np.linspace(0, -1, n // 4), np.full(n // 8, -1.0),
                           np.linspace(-1, 1, n // 4), np.full(n // 8, 1.0),
                           np.linspace(1, 0, n // 4)])
    for u in path:
        for servo_id, (low, high) in ranges.items():
            mid, half = (low + high) / 2, (high - low) / 2
            plant.move_by_hand(servo_id, mid + u * half)
        time.sleep(seconds / len(path))


def release(plant: Handled, servo_ids: list[int]) -> None:
    for servo_id in servo_ids:
        plant.move_by_hand(servo_id, None)


HAND_HELP = ("hand commands (type one and Enter): middle = hold the arm at the middle of its "
             "range; sweep = move every joint through its range; pose S1 .. SN = hold the "
             "joints at these encoder steps (servo 1 first); release = let go; unplug = pull "
             "the USB cable")


def parse_pose(words: list[str], servo_ids: list[int]) -> dict[int, float]:
    """``pose``'s arguments: one encoder position per servo, in id order; ValueError naming
    what is wrong."""
    if len(words) != len(servo_ids):
        raise ValueError(f"pose takes {len(servo_ids)} positions (servo {servo_ids[0]} first), "
                         f"got {len(words)}")
    try:
        steps = [float(w) for w in words]
    except ValueError:
        raise ValueError(f"pose takes numbers (encoder steps), got {' '.join(words)}") from None
    return dict(zip(servo_ids, steps, strict=True))


def serve_commands(plant: Handled, middles: dict[int, float],
                   ranges: dict[int, tuple[float, float]], lines: Iterable[str],
                   say: Callable[[str], None], unplug: Callable[[], None] | None = None) -> None:
    """Do what each line asks (``middle``, ``sweep [seconds]``, ``pose S1 .. SN``,
    ``release``, ``unplug``: pull the adapter's cable, the port goes away), saying ``hand:
    <command> done`` after each; until ``lines`` ends. What a person at the emulated arm does
    while ``robolearn calibrate`` asks for it, or while teleoperating with it as a leader arm
    (and what a loose cable does)."""
    for line in lines:
        words = line.split()
        if not words:
            continue
        cmd = words[0].lower()
        if cmd == "middle":
            hold_middle(plant, middles)
        elif cmd == "sweep":
            try:
                seconds = float(words[1]) if len(words) > 1 else 1.5
            except ValueError:
                say(f"hand: sweep takes seconds, got {words[1]!r}")
                continue
            hold_middle(plant, middles)
            sweep(plant, ranges, seconds)
        elif cmd == "pose":
            try:
                pose = parse_pose(words[1:], list(middles))
            except ValueError as exc:
                say(f"hand: {exc}")
                continue
            for servo_id, steps in pose.items():
                plant.move_by_hand(servo_id, steps)
        elif cmd == "release":
            release(plant, list(middles))
        elif cmd == "unplug" and unplug is not None:
            unplug()
        else:
            say(f"hand: unknown command {cmd!r}; {HAND_HELP}")
            continue
        say(f"hand: {cmd} done")


def calibrate_with_hand(robot: str, port: str, plant: Handled, middles: dict[int, float],
                        ranges: dict[int, tuple[float, float]], calibration_dir: str,
                        arm_id: str = "emulated", timeout: float = 90.0) -> None:
    """Run ``robolearn calibrate`` (lerobot's flow) in a subprocess against an emulator served
    in this process, this hand doing what each prompt asks; for benches and tests that need
    a calibrated emulated arm. Raises ``RuntimeError`` with the command's output on failure.
    A run that lerobot ended on replies that never came ("no status packet": the emulator,
    served from this busy process, answered past lerobot's read timeout) is run once more."""
    for attempt in (1, 2):
        try:
            return _calibrate_once(robot, port, plant, middles, ranges, calibration_dir,
                                   arm_id, timeout)
        except RuntimeError as exc:
            if attempt == 2 or "There is no status packet" not in str(exc):
                raise


def _calibrate_once(robot: str, port: str, plant: Handled, middles: dict[int, float],
                    ranges: dict[int, tuple[float, float]], calibration_dir: str,
                    arm_id: str, timeout: float) -> None:
    import os
    import select
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "robolearn.cli", "calibrate", f"robot={robot}",
         f"robot.port={port}", f"robot.calibration_dir={calibration_dir}", f"robot.id={arm_id}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout.fileno()
    seen = b""

    def until(text: str) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            if time.monotonic() > deadline or proc.poll() is not None and not select.select(
                    [out], [], [], 0)[0]:
                raise RuntimeError(f"calibrate never asked {text!r}: {seen[-600:].decode()}")
            if select.select([out], [], [], 0.2)[0]:
                seen += os.read(out, 4096)

    try:
        until("middle of its range of motion")
        hold_middle(plant, middles)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        until("Recording positions")
        sweep(plant, ranges, 1.0)
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        until("calibration written")
        if proc.wait(timeout=timeout) != 0:
            raise RuntimeError(f"calibrate failed: {seen[-600:].decode()}")
    finally:
        if proc.poll() is None:
            proc.kill()
        release(plant, list(middles))
