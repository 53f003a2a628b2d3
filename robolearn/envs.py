"""Importing this module registers robolearn's environments with gymnasium.

This is gymnasium 1.x's plugin convention (it has no entry-point discovery): either
``import robolearn.envs`` or ``gymnasium.make("robolearn.envs:robolearn/SimCar-v0")``.
The table of environments is :data:`robolearn.env.ENVS`; nothing else registers on import.
"""

from robolearn.env import ENVS, register_envs

register_envs()

__all__ = ["ENVS"]
