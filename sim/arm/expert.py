"""A scripted expert for the arm tasks: a state machine over tool-centre-point waypoints, turned
into joint targets by damped-least-squares IK.

It reads only ``robot.state()`` quantities a real arm with a state estimate has (joint angles,
end-effector and cube/bin poses, whether the cube is held) plus the task's target, never the
simulator. Pick: approach above the cube with the jaws open and aligned with its faces, descend,
close, lift; bin: carry over the bin, lower, release, retreat. A failed grasp or a dropped cube
starts over from the approach.

Measure it with ``python -m sim.arm.expert_eval --episodes 100`` (success rate and mean episode
length per task, seeded episodes through ``robolearn.env.make_env``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from robolearn.task import Task
from sim.arm.kinematics import ArmKinematics
from sim.arm.model import BIN_WALL_HEIGHT, CUBE_HALF, build_mjcf
from sim.arm.tasks import BinTask, ReachTask


@dataclass
class ExpertConfig:
    fps: float = 30.0  # control rate the expert's speed limit refers to, Hz
    speed: float = 0.25  # m/s, top speed of the commanded tool centre point
    hover: float = 0.07  # m, tcp height above the cube centre before descending
    grasp_dz: float = 0.004  # m, tcp above the cube centre when grasping
    grasp_dy: float = 0.004  # m, tcp offset toward the moving jaw (clears the fixed jaw)
    carry_z: float = 0.10  # m, tcp height while lifting and carrying
    drop_z: float = 0.08  # m, tcp height over the bin when releasing
    open: float = 0.9  # rad, gripper opening while approaching
    closed: float = 0.0  # rad, gripper target when grasping
    tolerance: float = 0.006  # m, tcp distance counting as "arrived"
    close_steps: int = 8  # control steps to close the jaws before checking the grasp
    release_steps: int = 8  # control steps to open the jaws over the bin
    phase_timeout: int = 90  # control steps before a stuck phase moves on / starts over
    # re-anchor the commanded tcp at the measured one each step, so the action depends on the
    # state it sees alone: a teacher labelling states another policy drove to (DAgger); off,
    # the command follows its own speed-limited path (smoother demonstrations)
    feedback: bool = False
    # derive the pick's phase (approach, descend, close, retry, lift) from the state each step
    # instead of from the expert's own history (its timers, the heading it chose): a teacher
    # labelling states another policy drove to, whose phase machine otherwise sits in
    # "approach" while the novice grasps, or times out into "descend" far from the cube
    state_phase: bool = False
    # with state_phase, > 0: teaching labels continuous in the state, so a one-step novice
    # can regress them (DAgger labels states its novice drove to): approach and descend as one
    # funnel, the tcp's goal ``min(hover, funnel * horizontal error)`` above the grasp point
    # (higher while the wrist is still turning); one face pair for the jaws for every cube;
    # jaws half shut away from the grasp point reopen on the way (retry only when shut on
    # nothing); full steps toward the goal. Before, a 1 mm move across the 12 mm "over the
    # cube" line changed the joint target by 0.11 rad (0.016 now), the face choice flipped
    # between nearby cubes, and one-step BC on 100 of its lifts lifted 6 of 30 (30 of 30
    # now; README "Interactive imitation"). 0: the two phases and the least-roll face
    funnel: float = 0.0
    # with the funnel: wrist roll error (rad) the funnel still descends with. 0: any error
    # lifts the goal (0.2 rad: to hover height), so a novice whose wrist is 0.01-0.1 rad off
    # the teacher's roll hovers 1-3 cm above the cube, where the teacher's label is "turn
    # the wrist" and the novice's regression of it is the error it already has (DAgger
    # seed 5's novice timed out so on 35 of its 39 failures in 100 held-out lifts; README
    # "Interactive imitation"). The label goes on turning the wrist on the way down; alone,
    # the teacher with 0.1 lifts 100 of 100 and bins 50 of 50
    roll_slack: float = 0.0

    def __post_init__(self) -> None:
        if min(self.fps, self.speed, self.tolerance, self.hover) <= 0:
            raise ValueError("ExpertConfig: fps, speed, tolerance and hover must be positive")
        if self.funnel < 0:
            raise ValueError(f"ExpertConfig: funnel must be >= 0 (0: off), got {self.funnel}")
        if not 0 <= self.roll_slack < 0.5:
            raise ValueError(f"ExpertConfig: roll_slack must be in [0, 0.5) rad, got "
                             f"{self.roll_slack}")
        if self.close_steps < 1 or self.release_steps < 1 or self.phase_timeout < 1:
            raise ValueError("ExpertConfig: step counts must be >= 1")

    @property
    def funnelled(self) -> bool:
        """Teaching with the funnel (``state_phase`` and ``funnel`` > 0)."""
        return self.state_phase and self.funnel > 0


def cube_yaw(quat: np.ndarray) -> float:
    w, x, y, z = (float(v) for v in quat)
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class ScriptedArmExpert:
    """``action = expert(robot.state())``; call :meth:`reset` at the start of each episode."""

    def __init__(self, task: Task, config: ExpertConfig | None = None,
                 model: mujoco.MjModel | None = None) -> None:
        self.task, self.cfg = task, config or ExpertConfig()
        self.kin = ArmKinematics(model if model is not None
                                 else mujoco.MjModel.from_xml_string(build_mjcf()))
        self.reset()

    def reset(self) -> None:
        self.phase = "start"
        self.steps = 0  # control steps spent in the current phase
        self.cmd: np.ndarray = np.zeros(3)  # commanded tcp position, moves toward the goal
        self.q: np.ndarray = np.zeros(5)  # last IK solution, the IK warm start
        self.roll = 0.0
        self.heading: float | None = None  # world yaw of the jaws' opening direction, rad
        self.grip = self.cfg.open

    # ------------------------------------------------------------------ helpers
    def _goto(self, phase: str) -> None:
        self.phase, self.steps = phase, 0

    def _joints(self, goal: np.ndarray, s: dict[str, Any], point_down: bool) -> np.ndarray:
        """Advance the commanded tcp toward ``goal`` at the speed limit; IK to joint targets."""
        if self.cfg.feedback:
            self.cmd = np.asarray(s["ee_pos"], dtype=np.float64).copy()
            self.q = np.asarray(s["joint_pos"], dtype=np.float64)[:5].copy()
        step = goal - self.cmd
        dist = float(np.linalg.norm(step))
        max_step = self.cfg.speed / self.cfg.fps
        if self.cfg.feedback and self.cfg.funnelled and dist > self.cfg.tolerance / 2:
            # teaching: a full step toward the goal until within half the tolerance, so the
            # label near the goal is not a sub-millimetre offset that a novice's bias (and the
            # arm's sag under a position target) turns into standing still above the cube
            self.cmd = self.cmd + step * (max_step / dist)
        else:
            self.cmd = goal.copy() if dist <= max_step else self.cmd + step * (max_step / dist)
        seed = np.array([math.atan2(self.cmd[1], self.cmd[0]), 0.5, 0.0, 1.0, self.roll])
        q, _ = self.kin.ik_robust(self.cmd, self.q, point_down, (seed,))
        q[4] = self.roll
        self.q = q
        return q

    def _arrived(self, goal: np.ndarray, s: dict[str, Any], tol: float | None = None) -> bool:
        return bool(np.allclose(self.cmd, goal)
                    and np.linalg.norm(s["ee_pos"] - goal) < (tol or self.cfg.tolerance))

    def _jaw_heading(self, s: dict[str, Any]) -> float:
        """World yaw for the jaws' opening direction: square to a cube face, away from the bin
        when it is near (the open jaw would hit its wall), else needing the least wrist roll."""
        cube, bin_pos = np.asarray(s["cube_pos"]), np.asarray(s["bin_pos"])
        base = self.kin.jaw_yaw(np.array([math.atan2(cube[1], cube[0]), *self.q[1:4], 0.0]))
        if self.cfg.funnelled:
            # teaching: one face pair for every cube (the wrist rolls by bearing - cube yaw,
            # within +-1.5 rad over the layout's range): the label is continuous in the cube's
            # pose. Choosing the least roll (or away from the bin) switches faces at cube yaws
            # 45 degrees apart and at 0.2 m from the bin, and a one-step novice learning
            # across such a switch averages the two rolls: its wrist stopped between them
            heading = cube_yaw(s["cube_quat"]) + math.pi / 2
            roll = (base - heading + math.pi) % (2 * math.pi) - math.pi
            return heading + (math.pi if abs(roll) > self.kin.high[4] - 0.1 else 0.0)
        away = cube[:2] - bin_pos[:2]
        near = float(np.linalg.norm(away)) < 0.2
        best, best_score = 0.0, -np.inf
        for k in range(4):
            heading = cube_yaw(s["cube_quat"]) + k * math.pi / 2
            roll = (base - heading + math.pi) % (2 * math.pi) - math.pi
            if abs(roll) > self.kin.high[4] - 0.1:
                continue
            score = -abs(roll)
            if near:
                score += 2.0 * (math.cos(heading) * away[0] + math.sin(heading) * away[1]) \
                    / float(np.linalg.norm(away))
            if score > best_score:
                best, best_score = heading, score
        return best

    def _align_roll(self, s: dict[str, Any], goal: np.ndarray) -> float:
        """Wrist roll giving the jaws the heading chosen at the start of this approach."""
        if self.steps == 1 or self.heading is None:
            self.heading = self._jaw_heading(s)
        base = self.kin.jaw_yaw(np.array([math.atan2(goal[1], goal[0]), *self.q[1:4], 0.0]))
        return float((base - self.heading + math.pi) % (2 * math.pi) - math.pi)

    def _grasp_point(self, s: dict[str, Any]) -> np.ndarray:
        """Cube centre, raised by grasp_dz and shifted grasp_dy toward the moving jaw."""
        yaw = math.atan2(s["cube_pos"][1], s["cube_pos"][0]) + math.pi / 2 - self.roll
        return s["cube_pos"] + np.array([self.cfg.grasp_dy * math.cos(yaw),
                                         self.cfg.grasp_dy * math.sin(yaw), self.cfg.grasp_dz])

    # ------------------------------------------------------------------ policy
    def __call__(self, s: dict[str, Any]) -> np.ndarray:
        if self.phase == "start":
            self.q = np.asarray(s["joint_pos"], dtype=np.float64)[:5].copy()
            self.cmd = np.asarray(s["ee_pos"], dtype=np.float64).copy()
            self.roll = float(self.q[4])
            self._goto("reach" if isinstance(self.task, ReachTask) else "approach")
        self.steps += 1
        if isinstance(self.task, ReachTask):
            q = self._joints(np.asarray(self.task.target, dtype=np.float64), s, point_down=False)
            return self._action(q)
        q = self._pick_and_place(s)
        return self._action(q)

    def _phase_from_state(self, s: dict[str, Any]) -> None:
        """The pick's phase as the state shows it (``state_phase``): held -> lift; jaws
        closing at the grasp point -> close; jaws closed on nothing -> retry; open and over
        the cube below hover height -> descend (at the grasp point -> close); else approach.
        The place phases (carry onwards) keep their machine."""
        if self.phase in ("carry", "lower", "release", "retreat"):
            return
        cfg = self.cfg
        grip = float(s["gripper"])
        if s["grasped"]:
            phase = "lift"
            self.roll = float(s["joint_pos"][4])  # hold the wrist as it holds the cube
        else:
            self.roll = self._align_roll(s, np.asarray(s["cube_pos"], dtype=np.float64))
            g = self._grasp_point(s)
            tcp = np.asarray(s["ee_pos"], dtype=np.float64)
            over = float(np.linalg.norm(tcp[:2] - g[:2])) < 2 * cfg.tolerance
            dz = float(tcp[2] - g[2])
            at_grasp = over and dz < 2 * cfg.tolerance
            if cfg.funnelled:
                # start closing only at the grasp point (as the phase machine arrives there),
                # go on closing anywhere near it; retry (open, climb) only when shut on
                # nothing; jaws half shut elsewhere: approach (open them on the way)
                arrived = float(np.linalg.norm(tcp - g)) < cfg.tolerance
                if grip < cfg.closed + 0.05:
                    phase = "retry"
                elif arrived or (at_grasp and grip < cfg.open - 0.1):
                    phase = "close"
                else:
                    phase = "approach"
            elif grip < cfg.open - 0.1:  # the jaws are shut or shutting
                phase = "close" if at_grasp and grip > cfg.closed + 0.05 else "retry"
            elif at_grasp:
                phase = "close"
            elif over and dz < cfg.hover + 2 * cfg.tolerance and \
                    abs(float(s["joint_pos"][4]) - self.roll) < 0.05:
                phase = "descend"
            else:
                phase = "approach"
        if phase != self.phase:
            self._goto(phase)
            self.steps = 1

    def _pick_and_place(self, s: dict[str, Any]) -> np.ndarray:
        cfg = self.cfg
        cube = np.asarray(s["cube_pos"], dtype=np.float64)
        if cfg.state_phase:
            self._phase_from_state(s)
            self.steps = min(self.steps, 1)  # no timers: the state decides
        timed_out = self.steps > cfg.phase_timeout
        if self.phase == "approach":
            self.grip = cfg.open
            self.roll = self._align_roll(s, cube)
            goal = self._grasp_point(s) + np.array([0, 0, cfg.hover])
            rolled = abs(float(s["joint_pos"][4]) - self.roll) < 0.05
            if cfg.funnelled:  # the phase is the state's: no "descend"
                # down the funnel as the tcp centres and the wrist turns (0.2 rad off: hover)
                off = float(np.linalg.norm(np.asarray(s["ee_pos"])[:2] - goal[:2]))
                turn = max(0.0, abs(float(s["joint_pos"][4]) - self.roll) - cfg.roll_slack) / 0.2
                lift = min(cfg.hover, max(cfg.funnel * off, cfg.hover * turn))
                return self._joints(goal - np.array([0, 0, cfg.hover - lift]), s, True)
            if (self._arrived(goal, s, 2 * cfg.tolerance) and rolled) or timed_out:
                self._goto("descend")
            return self._joints(goal, s, True)
        if self.phase == "descend":
            goal = self._grasp_point(s)
            if self._arrived(goal, s) or timed_out:
                self._goto("close")
            return self._joints(goal, s, True)
        if self.phase == "close":
            self.grip = cfg.closed
            if self.steps >= cfg.close_steps:
                self._goto("lift" if s["grasped"] else "retry")
            if cfg.funnelled:
                # teaching: on down to the grasp point's height while the jaws shut, as the
                # funnel's approach does there (not across: chasing a cube the jaws push
                # shoves it away). "Hold self.cmd" below is, re-anchored, the tcp of the
                # state labelled before (a DAgger teacher's last call was another state): a
                # label from history, jumping from "descend" at the close trigger; one-step
                # novices stopped 1-2 cm above the grasp point (README "Interactive imitation")
                goal = np.asarray(s["ee_pos"], dtype=np.float64).copy()
                goal[2] = self._grasp_point(s)[2]
                return self._joints(goal, s, True)
            return self._joints(self.cmd, s, True)
        if self.phase == "retry":  # open, rise, approach again
            self.grip = cfg.open
            goal = self.cmd.copy()
            goal[2] = cube[2] + cfg.hover
            if self._arrived(goal, s, 2 * cfg.tolerance) or timed_out:
                self._goto("approach")
            return self._joints(goal, s, True)
        if self.phase in ("lift", "carry", "lower") and not s["grasped"]:
            self._goto("retry")  # dropped it
            return self._joints(self.cmd, s, True)
        if self.phase == "lift":
            goal = np.array([self.cmd[0], self.cmd[1], cfg.carry_z])
            if (self._arrived(goal, s) or timed_out) and isinstance(self.task, BinTask):
                self._goto("carry")
            return self._joints(goal, s, True)
        bin_xy = np.asarray(s["bin_pos"], dtype=np.float64)[:2]
        if self.phase == "carry":
            goal = np.array([bin_xy[0], bin_xy[1], cfg.carry_z])
            if self._arrived(goal, s) or timed_out:
                self._goto("lower")
            return self._joints(goal, s, True)
        if self.phase == "lower":
            drop_z = max(cfg.drop_z, BIN_WALL_HEIGHT + 3 * CUBE_HALF)  # cube clears the walls
            goal = np.array([bin_xy[0], bin_xy[1], drop_z])
            if self._arrived(goal, s) or timed_out:
                self._goto("release")
            return self._joints(goal, s, True)
        if self.phase == "release":
            self.grip = cfg.open
            if self.steps >= cfg.release_steps:
                self._goto("retreat")
            return self._joints(self.cmd, s, True)
        # retreat: rise above the bin and stay
        goal = np.array([bin_xy[0], bin_xy[1], cfg.carry_z + 0.02])
        return self._joints(goal, s, True)

    def _action(self, q: np.ndarray) -> np.ndarray:
        return np.array([*q[:5], self.grip], dtype=np.float32)
