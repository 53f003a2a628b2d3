"""Every YAML file under configs/ loads into its typed config without errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from robolearn.demo import QuickstartConfig
from robolearn.loop import LoopConfig
from robolearn_core.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"quickstart.yaml": QuickstartConfig, "control_loop.yaml": LoopConfig}
# training recipes: their schema depends on the policy they name (robolearn.train.schema_for)
TRAIN_RECIPES = {"arm_lift_mlp.yaml": ("mlp", 3000), "arm_lift_diffusion.yaml": ("diffusion", 6000)}


# RL recipes: each is the recipe of a bench.rl_curves experiment (file -> (experiment, learner))
RL_RECIPES = {"arm_lift_rlpd.yaml": ("arm_35k", "rlpd"),
              "car_technical_rlpd.yaml": ("technical_utd20", "rlpd"),
              "car_wsrl.yaml": ("wsrl_no_entropy_backup", "wsrl")}
# the baselines the bench compares against: a recipe file with the learner swapped
RL_BASELINES = {("car_technical_rlpd.yaml", "sac"): ("technical_utd20", "sac")}


def test_every_config_file_has_a_schema() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        [*SCHEMAS, *TRAIN_RECIPES, *RL_RECIPES])


def _rl_config(path: Path | None, args: list[str]) -> dict[str, Any]:
    from robolearn.train import schema_for

    cfg = load_config(schema_for(str(path) if path else None, args), path, args)
    return dataclasses.asdict(cfg)


@pytest.mark.parametrize("name,learner", [(n, None) for n in sorted(RL_RECIPES)]
                         + sorted(RL_BASELINES))
def test_rl_recipe_file_is_the_benchmarked_recipe(name: str, learner: str | None) -> None:
    """The shipped YAML and the benchmark's arguments give the same config, field for field,
    so the figures quoted in each file are the figures of what it runs."""
    from bench.rl_curves import EXPERIMENTS

    exp, method = RL_RECIPES[name] if learner is None else RL_BASELINES[(name, learner)]
    bench_args = EXPERIMENTS[exp]["runs"][method]
    run = ["output=runs/x", "seed=3"] + (["dataset=demos.zarr"] if "DATA" in bench_args else [])
    from_file = _rl_config(CONFIGS / name, run + ([f"policy={learner}"] if learner else []))
    from_bench = _rl_config(None, [a for a in bench_args if a != "DATA"] + run)
    assert from_file == from_bench
    assert from_file["policy"] == method


@pytest.mark.parametrize("name", sorted(RL_RECIPES))
def test_rl_recipe_builds_its_runner(name: str, tmp_path: Path) -> None:
    from robolearn.cli import main
    from robolearn.rl_setup import RLTrainConfig
    from robolearn.rl_train import Runner
    from robolearn.train import schema_for

    path = CONFIGS / name
    env = OmegaConf.load(path).env
    demos = tmp_path / "demos.zarr"
    assert main(["collect", str(demos), f"env={env}", "episodes=1", "max_steps=40", "-q"]) == 0
    overrides = [f"dataset={demos}", f"output={tmp_path / 'run'}"]
    cfg = load_config(schema_for(str(path), overrides), path, overrides)
    assert isinstance(cfg, RLTrainConfig)
    runner = Runner(cfg)  # the env, the demo statistics and the actor's offsets all fit
    assert runner.agent.config.n_critics == 10
    if name.startswith("arm"):
        assert bool(runner.agent.actor.rel_mask.any())


@pytest.mark.parametrize("name", sorted(TRAIN_RECIPES))
def test_train_recipe_loads(name: str) -> None:
    from policies import policy_config_class
    from robolearn.train import schema_for

    path = CONFIGS / name
    overrides = ["dataset=demos.zarr", "seed=2"]
    cfg = load_config(schema_for(str(path), overrides), path, overrides)
    policy, steps = TRAIN_RECIPES[name]
    assert (cfg.policy, cfg.steps, cfg.seed, cfg.threads) == (policy, steps, 2, 1)
    assert isinstance(cfg.policy_config, policy_config_class(policy))
    assert cfg.policy_config.obs_clip == 3.0


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_config_file_loads(name: str) -> None:
    cfg = load_config(SCHEMAS[name], CONFIGS / name)
    assert isinstance(cfg, SCHEMAS[name])


def test_loop_config_from_file_with_override() -> None:
    cfg = load_config(LoopConfig, CONFIGS / "control_loop.yaml", ["safety.max_delta=0.1"])
    assert cfg.safety.max_delta == 0.1 and cfg.safety.watchdog_s == 0.5
