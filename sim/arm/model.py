"""MJCF of a low-cost 5-DoF arm with a gripper, modelled on the SO-101 (LeRobot's so101 follower).

World frame: the table top is ``z = 0``, the arm's base sits at the origin and faces ``+x``.
Kinematic chain (all primitive geoms, no meshes)::

    base (pan axis at the origin) -> shoulder_pan   (z axis)        range +-110 deg
      shoulder_lift axis at z = 0.10 m -> shoulder_lift (y axis)     range +-100 deg
      upper arm 0.116 m (straight up at zero) -> elbow_flex (y axis) range +-100 deg
      forearm 0.135 m (forward, +x, at zero) -> wrist_flex (y axis)  range  +-95 deg
      wrist 0.03 m -> wrist_roll (x axis)                            range +-160 deg
      gripper: fixed jaw + one moving jaw -> gripper (hinge)         range 0..100 deg (open)
      tool centre point ``tcp`` 0.10 m from the wrist_flex axis, between the jaws

Positive pitch angles tilt the link forward/down, so the gripper points straight down when
``shoulder_lift + elbow_flex + wrist_flex = pi/2``. Servos are position actuators with a
~3 N*m force range (Feetech STS3215 stall torque at 12 V), joint damping and reflected rotor
inertia (armature). Every joint's range is in radians.
"""

from __future__ import annotations

import math

ARM_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
JOINTS = (*ARM_JOINTS, "gripper")

# joint -> (low, high) in radians, close to the real arm's calibrated ranges
JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "shoulder_pan": (-math.radians(110), math.radians(110)),
    "shoulder_lift": (-math.radians(100), math.radians(100)),
    "elbow_flex": (-math.radians(100), math.radians(100)),
    "wrist_flex": (-math.radians(95), math.radians(95)),
    "wrist_roll": (-math.radians(160), math.radians(160)),
    "gripper": (0.0, math.radians(100)),
}

BASE_HEIGHT = 0.10  # m, table top to shoulder_lift axis
UPPER_ARM = 0.116  # m, shoulder_lift axis to elbow_flex axis
FOREARM = 0.135  # m, elbow_flex axis to wrist_flex axis
WRIST_TO_TCP = 0.10  # m, wrist_flex axis to the tool centre point between the jaws
CUBE_HALF = 0.015  # m, half the cube's side (a 3 cm cube)
BIN_INNER_HALF = 0.046  # m, half the bin's inner side
BIN_WALL_HEIGHT = 0.04  # m, bin wall height above the table
TABLE_X = (-0.20, 0.50)  # m, table extent along x
TABLE_Y = (-0.40, 0.40)  # m, table extent along y

# servo model: kp in N*m/rad, damping in N*m*s/rad, armature in kg*m^2, force limit in N*m
ARM_KP, ARM_DAMPING, ARM_ARMATURE, ARM_FORCE = 30.0, 1.5, 0.02, 3.0
GRIPPER_KP, GRIPPER_DAMPING, GRIPPER_ARMATURE, GRIPPER_FORCE = 4.0, 0.3, 0.005, 1.5

HOME = (0.0, 0.14, -0.03, 1.46, 0.0, 0.5)  # rad, gripper down 10 cm over the table, ajar


def _deg(name: str) -> str:
    low, high = JOINT_LIMITS[name]
    return f"{low:.5f} {high:.5f}"


def _actuators() -> str:
    lines = []
    for j in ARM_JOINTS:
        lines.append(f'<position name="{j}" joint="{j}" kp="{ARM_KP}" ctrlrange="{_deg(j)}" '
                     f'forcerange="-{ARM_FORCE} {ARM_FORCE}"/>')
    lines.append(f'<position name="gripper" joint="gripper" kp="{GRIPPER_KP}" '
                 f'ctrlrange="{_deg("gripper")}" forcerange="-{GRIPPER_FORCE} {GRIPPER_FORCE}"/>')
    return "\n    ".join(lines)


def build_mjcf(timestep: float = 0.002) -> str:
    """The scene as an MJCF string; ``timestep`` is the physics step in seconds."""
    tx = (TABLE_X[0] + TABLE_X[1]) / 2
    hx, hy = (TABLE_X[1] - TABLE_X[0]) / 2, (TABLE_Y[1] - TABLE_Y[0]) / 2
    w, t, h = BIN_INNER_HALF, 0.004, BIN_WALL_HEIGHT
    return f"""
<mujoco model="so101_table">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep:.6f}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual><global offwidth="640" offheight="480"/><quality shadowsize="0" offsamples="0"/></visual>
  <default>
    <geom contype="0" conaffinity="0" friction="1 0.005 0.0001"/>
    <default class="collide"><geom contype="1" conaffinity="1" condim="4"/></default>
    <default class="arm"><joint damping="{ARM_DAMPING}" armature="{ARM_ARMATURE}"/>
      <geom rgba="0.95 0.85 0.2 1"/></default>
    <default class="jaw"><geom contype="1" conaffinity="1" condim="4" friction="1.5 0.01 0.001"
      solref="0.01 1" rgba="0.2 0.2 0.2 1"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="64" height="64"
      rgb1="0.55 0.45 0.35" rgb2="0.5 0.4 0.3"/>
    <material name="table" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light pos="0.2 0 1.2" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="2 2 0.1" rgba="0.3 0.3 0.35 1"/>
    <geom name="table" class="collide" type="box" pos="{tx} 0 -0.02" size="{hx} {hy} 0.02"
      material="table"/>
    <camera name="front" pos="0.50 0 0.32" xyaxes="0 1 0 -0.27 0 0.38" fovy="50"/>
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size="0.045 0.025" pos="0 0 0.025" rgba="0.15 0.15 0.15 1"/>
      <body name="shoulder" pos="0 0 0.05" childclass="arm">
        <joint name="shoulder_pan" axis="0 0 1" range="{_deg('shoulder_pan')}"/>
        <geom type="cylinder" size="0.03 0.025" pos="0 0 0.025" mass="0.1"/>
        <body name="upper_arm" pos="0 0 {BASE_HEIGHT - 0.05}">
          <joint name="shoulder_lift" axis="0 1 0" range="{_deg('shoulder_lift')}"/>
          <geom type="capsule" fromto="0 0 0 0 0 {UPPER_ARM}" size="0.018" mass="0.1"/>
          <body name="forearm" pos="0 0 {UPPER_ARM}">
            <joint name="elbow_flex" axis="0 1 0" range="{_deg('elbow_flex')}"/>
            <geom type="capsule" fromto="0 0 0 {FOREARM} 0 0" size="0.016" mass="0.08"/>
            <body name="wrist" pos="{FOREARM} 0 0">
              <joint name="wrist_flex" axis="0 1 0" range="{_deg('wrist_flex')}"/>
              <geom type="capsule" fromto="0 0 0 0.03 0 0" size="0.015" mass="0.04"/>
              <body name="gripper_body" pos="0.03 0 0">
                <joint name="wrist_roll" axis="1 0 0" range="{_deg('wrist_roll')}"/>
                <geom name="palm" class="jaw" type="box" pos="0.005 -0.004 0"
                  size="0.015 0.028 0.016" mass="0.05" rgba="0.95 0.85 0.2 1"/>
                <geom name="fixed_jaw" class="jaw" type="box" pos="0.051 -0.026 0"
                  size="0.031 0.004 0.012" mass="0.01"/>
                <site name="tcp" pos="{WRIST_TO_TCP - 0.03} 0 0" size="0.004" rgba="1 0 0 1"
                  group="4"/>
                <camera name="wrist" pos="-0.01 -0.01 0.045" xyaxes="0 -1 0 0.4 0 1"
                  fovy="75"/>
                <body name="moving_jaw" pos="-0.005 -0.018 0">
                  <joint name="gripper" axis="0 0 1" range="{_deg('gripper')}"
                    damping="{GRIPPER_DAMPING}" armature="{GRIPPER_ARMATURE}"/>
                  <geom name="moving_jaw" class="jaw" type="box" pos="0.0535 0 0"
                    size="0.0335 0.004 0.012" mass="0.01"/>
                </body>
              </body>
            </body>
          </body>
        </body>
      </body>
    </body>
    <body name="cube" pos="0.2 0 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" class="collide" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}"
        mass="0.03" friction="1.2 0.01 0.001" rgba="0.85 0.15 0.15 1"/>
    </body>
    <body name="bin" mocap="true" pos="0.2 0.2 0">
      <geom name="bin_floor" class="collide" type="box" pos="0 0 0.002"
        size="{w + t} {w + t} 0.002" rgba="0.2 0.4 0.8 1"/>
      <geom class="collide" type="box" pos="{w + t / 2} 0 {h / 2}" size="{t / 2} {w + t} {h / 2}"
        rgba="0.2 0.4 0.8 1"/>
      <geom class="collide" type="box" pos="{-w - t / 2} 0 {h / 2}" size="{t / 2} {w + t} {h / 2}"
        rgba="0.2 0.4 0.8 1"/>
      <geom class="collide" type="box" pos="0 {w + t / 2} {h / 2}" size="{w} {t / 2} {h / 2}"
        rgba="0.2 0.4 0.8 1"/>
      <geom class="collide" type="box" pos="0 {-w - t / 2} {h / 2}" size="{w} {t / 2} {h / 2}"
        rgba="0.2 0.4 0.8 1"/>
    </body>
    <body name="target" mocap="true" pos="0.2 0 0.1">
      <site name="target" type="sphere" size="0.01" rgba="0.1 0.9 0.1 0.6"/>
    </body>
  </worldbody>
  <contact>
    <exclude body1="base" body2="cube"/>
  </contact>
  <actuator>
    {_actuators()}
  </actuator>
</mujoco>
"""
