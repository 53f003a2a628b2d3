"""The foundation every other robolearn package may import, and which imports none of them.

``config`` (typed omegaconf configs and their one-line errors), ``registry`` (lazy lookup of a
registered name), ``progress`` (progress bars and logging set-up). Kept apart from the app package
``robolearn`` so that the lower layers, ``data`` (episode stores) and ``policies`` (learners), use
them without importing the app: the layers are robolearn_core < data < policies < robolearn, sim,
hardware (held by tests/test_layering.py).
"""
