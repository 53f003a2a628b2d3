"""The experimenter beside the emulated SO-101: puts the cube back, says whether it was lifted.

A person does this at a real arm (:class:`robolearn.scene.PersonScene`); here it reaches into
the emulator's simulation, which the arm's driver never sees. ``set_up(seed)`` puts the cube
and the bin where ``robolearn/SimArmLift-v0`` reset with ``seed`` puts them (so the emulated arm
and the simulation can be compared episode by episode); ``success()`` is the lift task's own
criterion (``sim/arm/tasks.py``) evaluated on the emulator's state.
"""

from __future__ import annotations

import time
from typing import Any

import mujoco

from hardware.emulators.so101_plant import SO101Plant
from robolearn.env import ENVS, make_env
from robolearn.scene import Scene

ENV_ID = "robolearn/SimArmLift-v0"


class Experimenter(Scene):
    """Sets and judges the lift scene in ``plant``'s simulation (a mirror ``SimArm`` holds a
    copy of its state for the task's criterion)."""

    def __init__(self, plant: SO101Plant, robot_kwargs: dict[str, Any] | None = None,
                 settle_s: float = 0.1) -> None:
        """``settle_s``: the wait after placing, as a person steps back before going on (the
        cameras' next frames show the new scene; without it the first observation is a frame
        rendered before the cube moved)."""
        self.plant, self.settle_s = plant, settle_s
        kw = {k: v for k, v in (robot_kwargs or {}).items()
              if k not in ("cameras", "cube_camera", "cube_camera_pose")}  # no rendering here
        self.sim_env = make_env(**{**ENVS[ENV_ID], "robot_kwargs": kw})
        self.mirror: Any = self.sim_env.robot
        self.placed = 0  # scenes set
        self.placements: list[list[float]] = []  # where each scene's cube was put (x, y, z)
        self._won = False

    def set_up(self, seed: int) -> None:
        self.sim_env.reset(seed=seed)
        src = self.mirror.data
        m, d = self.plant.model, self.plant.data
        cube = m.jnt_qposadr[m.joint("cube").id]
        cube_dof = m.jnt_dofadr[m.joint("cube").id]
        with self.plant._lock:
            d.qpos[cube:cube + 7] = src.qpos[cube:cube + 7]
            d.qvel[cube_dof:cube_dof + 6] = 0.0
            d.mocap_pos[:] = src.mocap_pos
            mujoco.mj_forward(m, d)
        time.sleep(self.settle_s)
        self.placed += 1
        self.placements.append(src.qpos[cube:cube + 3].tolist())
        self._won = False

    def sync(self) -> None:
        """Copy the emulator's state now into the mirror (the task's and the expert's view)."""
        with self.plant._lock:
            self.mirror.data.qpos[:] = self.plant.data.qpos
            self.mirror.data.qvel[:] = self.plant.data.qvel
            self.mirror.data.mocap_pos[:] = self.plant.data.mocap_pos
        mujoco.mj_forward(self.mirror.model, self.mirror.data)
        self.mirror._state = None

    def lifted(self) -> bool:
        """The lift task's success on the emulator's state now."""
        self.sync()
        return bool(self.sim_env.task.success(self.mirror))

    def success(self) -> bool:
        self._won = self._won or self.lifted()
        return self._won

    def verdict(self, success: bool) -> bool:
        return self._won or success

    def close(self) -> None:
        self.sim_env.close()
