"""Every YAML file under configs/ loads into its typed config without errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from robolearn.config import load_config
from robolearn.demo import QuickstartConfig
from robolearn.loop import LoopConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {"quickstart.yaml": QuickstartConfig, "control_loop.yaml": LoopConfig}


def test_every_config_file_has_a_schema() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_config_file_loads(name: str) -> None:
    cfg = load_config(SCHEMAS[name], CONFIGS / name)
    assert isinstance(cfg, SCHEMAS[name])


def test_loop_config_from_file_with_override() -> None:
    cfg = load_config(LoopConfig, CONFIGS / "control_loop.yaml", ["safety.max_delta=0.1"])
    assert cfg.safety.max_delta == 0.1 and cfg.safety.watchdog_s == 0.5
