"""robolearn's data layer: Zarr v3 episode stores and training-window sampling.

>>> store = EpisodeStore.create("demos.zarr", {"observation.state": {"dtype": "float32",
...     "shape": [7]}, "action": {"dtype": "float32", "shape": [7]}}, fps=30)
>>> with store.recorder(task="lift") as rec:
...     rec.add({"observation.state": s, "action": a}, source="teleop")
...     rec.end_episode(success=True)
"""

from data.recorder import Recorder
from data.schema import (
    Feature,
    Source,
    StoreCorruptError,
    StoreError,
    StoreFormatError,
    StoreLockedError,
)
from data.store import Episode, EpisodeInfo, EpisodeStore

__all__ = [
    "Episode", "EpisodeInfo", "EpisodeStore", "Feature", "Recorder", "Source",
    "StoreCorruptError", "StoreError", "StoreFormatError", "StoreLockedError",
]
