"""Run every benchmark in turn: ``python -m bench [--quick] [NAME ...]``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

# name -> (module, full arguments, quick arguments)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    "codecs": ("bench.image_codecs", [], ["--quick"]),
    "record": ("bench.record", [], ["--episodes", "6", "--length", "200"]),
    "sampling": ("bench.baselines", [], ["--episodes", "20", "--length", "100", "--batches",
                                         "8", "--workers", "0"]),
    "sim": ("bench.sim", [], ["--quick"]),
    "train": ("bench.train_speed", [], ["--quick"]),
    "rl": ("bench.rl_update", [], ["--quick"]),  # learning curves: python -m bench.rl_curves
    "arm_bus": ("bench.arm_bus", [], ["--quick"]),  # emulated SO-101/Koch: cycle, link loss, fuzz
    "fuzz": ("bench.fuzz_emulators", [], ["--quick"]),  # 1e5 frames into each servo emulator
    "deploy": ("bench.deploy_timing", [], ["--steps", "200"]),  # loop lateness, sync vs async
    # loop lateness recording two 360x480 cameras: flush on the loop vs background writer
    "record_loop": ("bench.record_loop", [], ["--steps", "150", "--reps", "1"]),
    "cube_finder": ("bench.cube_finder", [], ["--layouts", "40"]),  # the cube from the camera
    "rc_car": ("bench.rc_car", [], ["--quick"]),  # firmware in simavr: failsafe, lap, rtt, fuzz
    "interactive": ("bench.interactive", [], ["--quick"]),  # labels to 90%: BC vs DAgger family
    # the actor-learner link vs an in-process queue; the learner SIGKILLed under an actor.
    # learning curves: python -m bench.practice fastrlap | actors
    "practice_link": ("bench.practice", ["link"], ["link", "--reps", "20"]),
    "practice_kill": ("bench.practice", ["kill"], ["kill", "--kills", "3"]),
    # needs a checkpoint: python -m bench.so101_lift CHECKPOINT; recipe: python -m bench.vision_lift
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=[],
                        help=f"which to run (default: all of {', '.join(BENCHES)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)}")
    failed = []
    for name in args.names or list(BENCHES):
        module, full, quick = BENCHES[name]
        print(f"\n=== {name} ({module}) ===", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", module, *(quick if args.quick else full)])
        print(f"=== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
