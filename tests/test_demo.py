"""``robolearn quickstart``: a run's ``seed`` draws all of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data import EpisodeStore
from robolearn import demo
from robolearn.demo import QuickstartConfig
from robolearn_core.config import load_config


def _small_run(tmp_path: Path, seed: int) -> tuple[set[bytes], set[int]]:
    """A real, reduced quickstart; returns each demonstration's first environment state (cube
    pose and the like, as bytes) and the evaluation episodes' seeds."""
    out = tmp_path / f"seed{seed}"
    cfg = QuickstartConfig(output=str(out), episodes=4, num_envs=2, crash_test=False,
                           video=False, train_steps=5, eval_episodes=2, seed=seed)
    assert demo.run(cfg) == 0
    with EpisodeStore.open(out / "demos.zarr", "r") as store:
        starts = {np.asarray(store.episode(i)["observation.environment_state"][0]).tobytes()
                  for i in range(len(store))}
    assert len(starts) == cfg.episodes  # every demonstration starts somewhere else
    evaluated = json.loads((out / "bc" / "eval.json").read_text())["results"]
    return starts, {r["seed"] for r in evaluated}


def test_another_seed_is_a_fresh_run(tmp_path: Path) -> None:
    """Seeds 0 and 1 share no demonstration and no evaluation episode. Before, seed 1's first
    worker replayed seed 0's second worker's episodes, and every seed was evaluated on the same
    episodes (100000...), so "three fresh runs" were not fresh."""
    starts0, evaluated0 = _small_run(tmp_path, 0)
    starts1, evaluated1 = _small_run(tmp_path, 1)
    assert not starts0 & starts1
    assert not evaluated0 & evaluated1


def test_shipped_config_is_the_measured_recipe() -> None:
    """configs/quickstart.yaml spells out the defaults, the recipe the README's figures are of."""
    path = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    assert load_config(QuickstartConfig, path) == QuickstartConfig()
