"""Fuzz both servo bus emulators (issue 14): random bytes, corrupted frames (bit flips,
truncation, insertion, deletion, wrong length fields) and random valid frames, 1e5 of each
emulator's inputs, in process (``receive(bytes)``, no pty, no wire timing).

Prints what was sent by kind, what the emulator made of it (frames served, dropped by reason),
replies, crashes (exceptions that escaped the emulator) and broken invariants (malformed
replies, goals outside enforced position limits, invalid register values); exits 1 unless both
are 0.

    .venv/bin/python -m bench.fuzz_emulators [--frames 100000] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import sys

from hardware.emulators.fuzz import FuzzReport, fuzz


def show(report: FuzzReport) -> None:
    served = report.stats.get("frames", 0)
    dropped = {k: v for k, v in sorted(report.stats.items()) if k != "frames"}
    sent = sum(report.inputs.values())
    print(f"{report.emulator}: {sent} inputs in {report.seconds:.1f} s "
          f"({sent / report.seconds:,.0f}/s)")
    print(f"  sent:     {dict(sorted(report.inputs.items()))}")
    print(f"  served:   {served} frames, {report.replies} replies")
    print(f"  dropped:  {dropped}")
    print(f"  crashes:  {report.crashes}")
    print(f"  broken invariants: {report.n_violations}")
    for v in report.violations:
        print(f"    {v}")
    if report.first_crash:
        print("  first crash:\n" + report.first_crash)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz_emulators", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000, help="inputs per emulator")
    ap.add_argument("--seed", type=int, default=0, help="random seed")
    ap.add_argument("--quick", action="store_true", help="1e4 inputs per emulator")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error(f"--frames must be >= 1, got {args.frames}")
    n = 10_000 if args.quick else args.frames
    failed = False
    for name in ("feetech", "dynamixel"):
        report = fuzz(name, n, args.seed)
        show(report)
        failed |= bool(report.crashes or report.n_violations)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
