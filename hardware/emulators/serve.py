"""How every servo emulator's command line serves its bus: what ``robolearn emulate`` runs.

Prints the port path (the first stdout line: the driver's ``robot.port``), then any camera
lines, takes hand commands on stdin (``--hand``), serves until SIGINT/SIGTERM, and says on
stderr what it served (frames, goals outside the servos' limits, what it dropped).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from hardware.emulators import camera


def add_arguments(ap: argparse.ArgumentParser, arm_plant: str) -> None:
    """The flags every emulator takes beside its own: ``--hand`` and the camera flags."""
    ap.add_argument("--hand", action="store_true",
                    help="read hand commands on stdin (middle, sweep, pose, release, unplug): "
                         f"what a person does during `robolearn calibrate` (--plant {arm_plant})")
    camera.add_arguments(ap)


def serve(ap: argparse.ArgumentParser, args: Any, bus: Any, plant: Any, arm_plant: str) -> int:
    """Serve ``bus`` (moving ``plant``) until SIGINT or SIGTERM; returns the exit code."""
    if args.hand and args.plant != arm_plant:
        ap.error(f"--hand moves the simulated arm: use it with --plant {arm_plant}")
    try:  # a servo answers within microseconds: keep answering on a busy machine (root only)
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())

    def say(text: str) -> None:
        print(text, flush=True)

    with bus:
        say(bus.port)
        cams = camera.serve_from(args, plant, say)
        if args.hand:
            from hardware.emulators import hand
            from hardware.emulators.so101_plant import joint_ranges_steps, middle_steps

            print(hand.HAND_HELP, file=sys.stderr, flush=True)
            threading.Thread(target=hand.serve_commands, daemon=True, args=(
                plant, middle_steps(), joint_ranges_steps(), sys.stdin, say, bus.stop)).start()
        done.wait()
        if cams is not None:
            cams.close()
    outside = sum(s.goals_outside_limits for s in bus.servos)
    print(f"served {bus.stats['frames']} frames; goals outside limits: {outside}; dropped: "
          f"{dict((k, v) for k, v in bus.stats.items() if k != 'frames')}", file=sys.stderr)
    return 0
