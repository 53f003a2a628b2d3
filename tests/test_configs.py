"""Every YAML file under configs/ loads into its typed config without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from robolearn.config import load_config
from robolearn.demo import QuickstartConfig
from robolearn.loop import LoopConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"quickstart.yaml": QuickstartConfig, "control_loop.yaml": LoopConfig}
# training recipes: their schema depends on the policy they name (robolearn.train.schema_for)
TRAIN_RECIPES = {"arm_lift_mlp.yaml": ("mlp", 3000), "arm_lift_diffusion.yaml": ("diffusion", 6000)}


RL_RECIPES = {"arm_lift_rlpd.yaml": ("rlpd", 25000)}


def test_every_config_file_has_a_schema() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        [*SCHEMAS, *TRAIN_RECIPES, *RL_RECIPES])


@pytest.mark.parametrize("name", sorted(RL_RECIPES))
def test_rl_recipe_loads_and_builds_its_agent(name: str, tmp_path: Path) -> None:
    from robolearn.cli import main
    from robolearn.rl_train import RLTrainConfig, Runner
    from robolearn.train import schema_for

    path = CONFIGS / name
    demos = tmp_path / "demos.zarr"
    assert main(["collect", str(demos), "env=robolearn/SimArmLift-v0", "episodes=1"]) == 0
    overrides = [f"dataset={demos}", f"output={tmp_path / 'run'}"]
    cfg = load_config(schema_for(str(path), overrides), path, overrides)
    assert isinstance(cfg, RLTrainConfig)
    assert (cfg.policy, cfg.env_steps) == RL_RECIPES[name]
    runner = Runner(cfg)  # the env, the demo statistics and the actor's offsets all fit
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
