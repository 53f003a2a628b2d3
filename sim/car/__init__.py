"""A 1/10-scale Ackermann car in MuJoCo on race tracks described as data (FastRLAP-style laps).

- :mod:`sim.car.tracks`: track files (``tracks/*.json``) -> :class:`Track` (centreline, walls,
  checkpoints, progress).
- :mod:`sim.car.model`: the MJCF of car + track.
- :mod:`sim.car.robot`: :class:`SimCar`, the :class:`robolearn.robot.Robot` driver.
- :mod:`sim.car.tasks`: :class:`LapTask` (checkpoint progress, collisions, lap timing).
- :mod:`sim.car.driver`: :class:`PurePursuitDriver`, the scripted demonstrator.
- ``python -m sim.car``: the driver's lap success rate per track (step cost: ``bench.sim``).

Headless rendering: ``sim/__init__.py`` picks MuJoCo's GL backend (EGL or OSMesa).
"""
