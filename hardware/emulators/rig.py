"""An emulated SO-101 ready to drive: servos on a pty, calibrated by the hand, cameras served.

Benches and tests that need the whole emulated arm build it here, in one order: the bus is
served, lerobot's calibration runs with the emulator's hand (:func:`calibrate_with_hand`), and
only then do the cameras start rendering (one thread fewer beside the bus emulator while
lerobot's calibration waits on its replies: a loaded test run lost a calibration to "no status
packet" with the camera already rendering).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from hardware.emulators.so101_plant import SO101Plant, joint_ranges_steps, middle_steps


@dataclass
class Rig:
    plant: SO101Plant
    port: str  # the servos' pty: robot.port
    cameras: dict[str, str]  # camera name -> zmq:// url: robot.cameras


@contextlib.contextmanager
def calibrated_so101(calibration_dir: str, arm_id: str, cameras: Sequence[str] = (),
                     width: int = 64, height: int = 64,
                     plant: SO101Plant | None = None) -> Iterator[Rig]:
    """The emulated SO-101 (six STS3215 on a pty at 1 Mbps) calibrated into
    ``calibration_dir`` as ``arm_id``, with ``cameras`` served at ``width`` x ``height``."""
    from hardware.emulators.camera import CameraServer
    from hardware.emulators.feetech import make_bus
    from hardware.emulators.hand import calibrate_with_hand

    plant = plant or SO101Plant()
    with make_bus(6, plant) as bus, contextlib.ExitStack() as stack:
        calibrate_with_hand("so101", bus.port, plant, middle_steps(), joint_ranges_steps(),
                            calibration_dir, arm_id=arm_id)
        urls = (stack.enter_context(CameraServer(plant, list(cameras), width, height)).urls
                if cameras else {})
        yield Rig(plant, bus.port, urls)
