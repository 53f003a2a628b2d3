"""The MJCF of a 1/10-scale Ackermann car on a :class:`~sim.car.tracks.Track`.

World: a floor plane, the walls as static boxes along both borders (named ``wall_<i>``,
contiguous geom ids so a contact test is a range check), an ``overview`` camera above the track.
Car: a free-joint ``chassis`` box with a first-person ``front`` camera and a ``chase`` camera
that tracks it from above; four wheel bodies (spheres for contact, a cylinder for looks). The
front wheels carry a steering hinge (``steer_fl/fr``, position actuators) then a free spin hinge;
the rear wheels' spin hinges (``spin_rl/rr``) are driven by torque-limited velocity actuators,
so wheels spin up and the tyres slide when the car asks for more grip than ``tyre_friction``
gives (at speed in tight turns, under hard throttle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sim.car.tracks import Track

if TYPE_CHECKING:
    from sim.car.robot import SimCarConfig

WALL_HEIGHT = 0.15  # m
ACTUATORS = ("steer_fl", "steer_fr", "drive_rl", "drive_rr")  # actuator order in data.ctrl


def _wall_geoms(track: Track) -> list[str]:
    out = []
    t = track.wall_thickness
    for i, (a, b) in enumerate(track.wall_segments()):
        mid, d = (a + b) / 2, b - a
        half_len = np.linalg.norm(d) / 2 + t / 2  # overlap neighbours: no gaps on outer walls
        yaw = np.arctan2(d[1], d[0])
        out.append(f'<geom name="wall_{i}" type="box" pos="{mid[0]:.4f} {mid[1]:.4f} '
                   f'{WALL_HEIGHT / 2}" size="{half_len:.4f} {t / 2} {WALL_HEIGHT / 2}" '
                   f'euler="0 0 {yaw:.5f}" material="wall" priority="1" '
                   f'friction="0.3 0.005 0.0001"/>')
    return out


def _wheel(name: str, x: float, y: float, cfg: SimCarConfig, front: bool) -> str:
    r, m = cfg.wheel_radius, cfg.wheel_mass
    steer = (f'<joint name="steer_{name}" type="hinge" axis="0 0 1" range="{-cfg.max_steer} '
             f'{cfg.max_steer}" armature="0.002" damping="0.05"/>') if front else ""
    damp = "0.0005" if front else "0.0"
    return f"""
      <body name="wheel_{name}" pos="{x} {y} 0">
        {steer}
        <joint name="spin_{name}" type="hinge" axis="0 1 0" armature="0.0005" damping="{damp}"/>
        <geom name="wheel_{name}" type="sphere" size="{r}" mass="{m}" material="tyre"
              friction="{cfg.tyre_friction} 0.005 0.0001" group="3"/>
        <geom type="cylinder" size="{r} {r * 0.4}" euler="1.5708 0 0" material="tyre"
              contype="0" conaffinity="0" mass="0"/>
      </body>"""


def build_mjcf(track: Track, cfg: SimCarConfig) -> str:
    """The MJCF string of ``track`` with the car (configured by ``cfg``) at the origin."""
    lo, hi = track.bounds()
    centre, span = (lo + hi) / 2, float(np.max(hi - lo))
    floor_half = span / 2 + 2.0
    overview_h = span / 2 / np.tan(np.radians(22.5)) * 1.1  # fovy 45 covers the track
    L, T, r = cfg.wheelbase, cfg.track_width, cfg.wheel_radius
    hx, hy, hz = L / 2 + 0.06, T / 2 - r - 0.01, 0.03  # chassis half-sizes
    wheel_speed = cfg.max_speed / r  # rad/s at full throttle
    cam_h, cam_w = cfg.camera_size
    wheels = (_wheel("fl", L / 2, T / 2, cfg, True) + _wheel("fr", L / 2, -T / 2, cfg, True)
              + _wheel("rl", -L / 2, T / 2, cfg, False) + _wheel("rr", -L / 2, -T / 2, cfg, False))
    walls = "\n    ".join(_wall_geoms(track))
    return f"""<mujoco model="sim_car_{track.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{cfg.timestep}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max(640, cam_w)}" offheight="{max(480, cam_h)}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.5 0.5 0.5" diffuse="0.5 0.5 0.5"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.35 0.37 0.4" rgb2="0.3 0.32 0.35"
             width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="{floor_half} {floor_half}"/>
    <material name="wall" rgba="0.85 0.3 0.2 1"/>
    <material name="body" rgba="0.15 0.4 0.85 1"/>
    <material name="tyre" rgba="0.1 0.1 0.1 1"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 5" dir="0 0 -1" diffuse="0.6 0.6 0.6"/>
    <geom name="floor" type="plane" pos="{centre[0]:.3f} {centre[1]:.3f} 0"
          size="{floor_half:.2f} {floor_half:.2f} 0.1" material="grid"
          friction="{cfg.tyre_friction} 0.005 0.0001"/>
    <camera name="overview" pos="{centre[0]:.3f} {centre[1]:.3f} {overview_h:.2f}" fovy="45"/>
    {walls}
    <body name="chassis" pos="0 0 {r + 0.005}">
      <freejoint name="root"/>
      <geom name="chassis" type="box" size="{hx:.3f} {hy:.3f} {hz}" pos="0 0 0.02"
            mass="{cfg.chassis_mass}" material="body"/>
      <camera name="front" pos="{hx:.3f} 0 0.08" xyaxes="0 -1 0 0.3 0 1" fovy="90"/>
      <camera name="chase" mode="trackcom" pos="-1.5 0 1.2" xyaxes="0 -1 0 0.6 0 1"/>
      {wheels}
    </body>
  </worldbody>
  <actuator>
    <position name="steer_fl" joint="steer_fl" kp="{cfg.steer_kp}"
              ctrlrange="{-cfg.max_steer} {cfg.max_steer}"/>
    <position name="steer_fr" joint="steer_fr" kp="{cfg.steer_kp}"
              ctrlrange="{-cfg.max_steer} {cfg.max_steer}"/>
    <velocity name="drive_rl" joint="spin_rl" kv="{cfg.drive_kv}"
              ctrlrange="{-wheel_speed:.3f} {wheel_speed:.3f}"
              forcerange="{-cfg.max_wheel_torque} {cfg.max_wheel_torque}"/>
    <velocity name="drive_rr" joint="spin_rr" kv="{cfg.drive_kv}"
              ctrlrange="{-wheel_speed:.3f} {wheel_speed:.3f}"
              forcerange="{-cfg.max_wheel_torque} {cfg.max_wheel_torque}"/>
  </actuator>
</mujoco>
"""
