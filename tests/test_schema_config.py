"""The data contract (features, action sources) and typed configs (robolearn_core.config)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data.schema import Feature, Source, parse_features
from robolearn_core.config import MISSING, ConfigError, InvalidValue, load_config, to_yaml

# ------------------------------------------------------------------------------------ features


@pytest.mark.parametrize(("name", "spec", "needle"), [
    ("observation.state", {"dtype": "float128", "shape": [3]}, "dtype"),
    ("observation.state", {"dtype": "complex64", "shape": [3]}, "dtype"),
    ("timestamp", {"dtype": "float64", "shape": [1]}, "reserved"),
    ("source", {"dtype": "uint8", "shape": [1]}, "reserved"),
    ("observation.images.front", {"dtype": "float32", "shape": [8, 8, 3]}, "uint8"),
    ("observation.images.front", {"dtype": "uint8", "shape": [3, 8, 8]}, "(H, W, C)"),
    ("observation.images.front", {"dtype": "uint8", "shape": [8, 8]}, "(H, W, C)"),
    ("cam", {"dtype": "uint8", "shape": [8, 8, 4], "image": True}, "(H, W, C)"),
    ("observation.state", {"dtype": "float32", "shape": [3], "names": ["a", "b"]}, "2 names"),
    ("observation.state", {"dtype": "float32", "shape": [0]}, "non-positive"),
    ("observation.state", {"dtype": "float32"}, "shape"),
    ("observation.state", {"dtype": "float32", "shape": [2], "unit": "m"}, "unknown field"),
    ("bad name!", {"dtype": "float32", "shape": [2]}, "letters, digits"),
])
def test_invalid_feature_is_rejected_naming_it(name: str, spec: dict[str, Any],
                                               needle: str) -> None:
    features = {"action": {"dtype": "float32", "shape": [2]}, name: spec}
    with pytest.raises(ValueError) as err:
        parse_features(features)
    msg = str(err.value)
    assert repr(name) in msg, msg
    assert needle in msg, msg


def test_empty_features_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one feature"):
        parse_features({})


@pytest.mark.parametrize("dtype", ["image", "video"])
def test_lerobot_camera_spec_is_accepted(dtype: str) -> None:
    spec = {"dtype": dtype, "shape": [48, 64, 3], "names": ["height", "width", "channels"]}
    feats = parse_features({"observation.images.wrist": spec,
                            "action": {"dtype": "float32", "shape": [7]}})
    cam = feats["observation.images.wrist"]
    assert cam == Feature("uint8", (48, 64, 3), None, image=True)
    assert cam.to_json() == {"dtype": "uint8", "shape": [48, 64, 3], "image": True}
    assert not feats["action"].image


def test_camera_is_recognised_by_name_and_low_dim_keeps_names() -> None:
    feats = parse_features({
        "observation.images.top": {"dtype": "uint8", "shape": [16, 16, 1]},
        "observation.state": {"dtype": "float32", "shape": [2], "names": ["j0", "j1"]},
    })
    assert feats["observation.images.top"].image
    assert feats["observation.state"].names == ("j0", "j1")
    # to_json / from_spec round trip (what a store writes into zarr.json and reads back)
    again = parse_features({k: f.to_json() for k, f in feats.items()})
    assert again == feats


def test_check_value_converts_and_names_the_key() -> None:
    feat = Feature("float32", (3,))
    out = feat.check_value("observation.state", [1, 2, 3])
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"frame\['observation.state'\]: shape"):
        feat.check_value("observation.state", np.zeros(4))
    cam = Feature("uint8", (4, 4, 3), image=True)
    with pytest.raises(ValueError, match=r"frame\['cam'\].*uint8"):
        cam.check_value("cam", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"frame\['n'\].*cannot become"):
        Feature("int32", (2,)).check_value("n", np.array([0.5, 1.5]))


# ------------------------------------------------------------------------------------ sources


@pytest.mark.parametrize(("value", "expected"), [
    ("teleop", Source.TELEOP),
    ("TELEOP", Source.TELEOP),
    ("intervention", Source.INTERVENTION),
    (Source.POLICY, Source.POLICY),
    (0, Source.SCRIPTED),
    (4, Source.AUTONOMOUS),
    (np.uint8(2), Source.POLICY),
])
def test_source_parse_accepts_names_and_codes(value: Any, expected: Source) -> None:
    assert Source.parse(value) is expected


@pytest.mark.parametrize("value", ["human", "", 5, -1, 1.0, None])
def test_source_parse_rejects_bad_values_listing_choices(value: Any) -> None:
    with pytest.raises(ValueError) as err:
        Source.parse(value)
    msg = str(err.value)
    assert repr(value) in msg
    for s in Source:
        assert s.name.lower() in msg


# ------------------------------------------------------------------------------------ config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise InvalidValue("lr", f"must be > 0, got {self.lr}")


@dataclass
class Train:
    steps: int = 100
    batch_size: int = 32
    optim: Optim = field(default_factory=Optim)
    warmup: Optim = field(default_factory=lambda: Optim(lr=1e-4))


@dataclass
class Experiment:
    data: str = MISSING
    seed: int = 0
    name: str | None = None
    train: Train = field(default_factory=Train)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_file_and_overrides_in_order(tmp_path: Path) -> None:
    yml = write(tmp_path / "exp.yaml",
                "data: demos.zarr\nseed: 3\ntrain:\n  steps: 500\n  optim:\n    lr: 0.01\n")
    cfg = load_config(Experiment, yml, ["train.steps=700", "name=run1"])
    assert isinstance(cfg, Experiment) and isinstance(cfg.train.optim, Optim)
    assert cfg.data == "demos.zarr"  # file
    assert cfg.seed == 3  # file
    assert cfg.train.steps == 700  # override beats file
    assert cfg.train.optim.lr == 0.01  # file beats default
    assert cfg.train.batch_size == 32  # default
    assert cfg.train.warmup.lr == 1e-4  # nested default
    assert cfg.name == "run1"
    # a later override of the same key wins
    assert load_config(Experiment, yml, ["seed=4", "seed=5"]).seed == 5


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(Experiment, None, ["data=x.zarr", "train.optim.lr=0.5"])
    again = load_config(Experiment, write(tmp_path / "saved.yaml", to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(("override", "key", "suggestion"), [
    ("train.optim.lrr=0.1", "train.optim.lrr", "train.optim.lr"),
    ("train.step=3", "train.step", "train.steps"),
    ("sed=1", "sed", "seed"),
])
def test_unknown_override_key_names_path_and_suggests(override: str, key: str,
                                                      suggestion: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, None, ["data=x", override])
    msg = str(err.value)
    assert f"'{key}'" in msg, msg
    assert f"did you mean '{suggestion}'" in msg, msg


def test_unknown_key_in_file_names_file_and_path(tmp_path: Path) -> None:
    yml = write(tmp_path / "exp.yaml", "data: d\ntrain:\n  optim:\n    betaz: [0.1, 0.2]\n")
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, yml)
    msg = str(err.value)
    assert str(yml) in msg and "'train.optim.betaz'" in msg and "train.optim.betas" in msg


@pytest.mark.parametrize(("override", "key"), [
    ("train.steps=many", "train.steps"),
    ("train.optim.lr=fast", "train.optim.lr"),
    ("seed=[1,2]", "seed"),
])
def test_wrong_type_names_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_config(Experiment, None, ["data=x", override])


def test_wrong_type_in_file_names_key(tmp_path: Path) -> None:
    yml = write(tmp_path / "exp.yaml", "data: d\ntrain:\n  batch_size: big\n")
    with pytest.raises(ConfigError, match=re.escape("'train.batch_size'")):
        load_config(Experiment, yml)


def test_missing_required_value_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required.*data"):
        load_config(Experiment, None, ["seed=1"])
    yml = write(tmp_path / "exp.yaml", "seed: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, yml)
    assert "data" in str(err.value) and str(yml) in str(err.value)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    yml = write(tmp_path / "broken.yaml", "data: d\ntrain:\n  steps: [1, 2\n  lr: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, yml)
    msg = str(err.value)
    assert str(yml) in msg and "not valid YAML" in msg
    line = int(re.search(r"line (\d+)", msg).group(1))  # type: ignore[union-attr]
    assert 3 <= line <= 4, msg  # the unclosed list starts on line 3


def test_missing_file_and_non_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Experiment, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Experiment, write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_malformed_override_is_rejected() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Experiment, None, ["data"])


@pytest.mark.parametrize(("override", "path"), [
    ("train.optim.lr=-1", "train.optim.lr"),
    ("train.warmup.lr=0", "train.warmup.lr"),
])
def test_invalid_value_in_nested_post_init_names_full_path(override: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(Experiment, None, ["data=x", override])
    msg = str(err.value)
    assert msg.startswith(f"{path}: must be > 0"), msg


def test_invalid_value_from_file_names_full_path(tmp_path: Path) -> None:
    yml = write(tmp_path / "exp.yaml", "data: d\ntrain:\n  optim:\n    lr: -0.5\n")
    with pytest.raises(ConfigError, match=r"^train\.optim\.lr: must be > 0, got -0\.5"):
        load_config(Experiment, yml)


# ------------------------------------------------------------------------------ robot configs


@pytest.mark.parametrize("env_id", list(__import__("robolearn.env").env.ENVS))
def test_every_registered_env_gives_its_robots_typed_config(env_id: str) -> None:
    """One registry line per robot names a config dataclass (a structured schema) and the env's
    own robot_kwargs (the car's track) are that config's defaults in the env's commands."""
    import dataclasses

    from omegaconf import OmegaConf

    from robolearn.collect import CollectConfig, schema_for
    from robolearn.env import ENVS
    from robolearn.robot import robot_config_class

    spec = ENVS[env_id]
    cls = robot_config_class(spec["robot"])
    assert dataclasses.is_dataclass(cls)
    OmegaConf.structured(cls)  # usable as an omegaconf schema
    overrides = ["output=x.zarr", f"env={env_id}"]
    cfg = load_config(schema_for(None, overrides), None, overrides)
    assert isinstance(cfg, CollectConfig) and type(cfg.robot) is cls
    for key, value in spec.get("robot_kwargs", {}).items():
        assert getattr(cfg.robot, key) == value


def test_robot_keys_are_typed_checked_and_default_to_the_envs_settings(tmp_path: Path) -> None:
    from robolearn.collect import CollectConfig, schema_for
    from sim.car.robot import SimCarConfig

    def collect(*overrides: str, path: Path | None = None) -> CollectConfig:
        args = ["output=x.zarr", *overrides]
        cfg = load_config(schema_for(str(path) if path else None, args), path, args)
        assert isinstance(cfg, CollectConfig)
        return cfg

    cfg = collect("env=robolearn/SimCarChicane-v0", "robot.camera=true")
    assert isinstance(cfg.robot, SimCarConfig)
    assert (cfg.robot.track, cfg.robot.camera, cfg.robot.fps) == ("chicane", True, 20.0)
    assert collect("env=robolearn/SimCar-v0", "robot.track=technical").robot.track == "technical"
    # the env is read from the file as from the overrides
    yml = write(tmp_path / "c.yaml", "env: robolearn/SimCarTechnical-v0\nrobot:\n  fps: 10\n")
    assert (collect(path=yml).robot.track, collect(path=yml).robot.fps) == ("technical", 10.0)
    bad = {"robot.camra=true": "unknown key 'robot.camra' (did you mean 'robot.camera'?)",
           "robot.camera=sometimes": "'robot.camera'",
           "robot.fps=-1": "robot: SimCarConfig.fps must be > 0",
           "robot.cameras=[front]": "did you mean 'robot.camera'?"}
    for override, needle in bad.items():
        with pytest.raises(ConfigError) as err:
            collect("env=robolearn/SimCar-v0", override)
        assert needle in str(err.value), (override, str(err.value))
    with pytest.raises(ConfigError) as err:  # the arm's keys are the arm's, nested ones too
        collect("env=robolearn/SimArmLift-v0", "robot.layout.cube_radius=[0.3,0.1]")
    assert str(err.value).startswith("robot.layout: LayoutConfig.cube_radius"), str(err.value)


def test_robot_settings_saved_as_a_plain_dict_still_load(tmp_path: Path) -> None:
    """Run configs written before robot configs were typed held ``robot`` as a dict of
    overrides (often empty); they load into the typed config, as does a new config's YAML."""
    from robolearn.collect import CollectConfig
    from robolearn.rl_setup import RLTrainConfig
    from robolearn.train import schema_for
    from sim.car.robot import SimCarConfig

    old = write(tmp_path / "config.yaml", "env: robolearn/SimCar-v0\npolicy: sac\noutput: o\n"
                                          "robot:\n  camera: true\n  camera_size: [24, 24]\n")
    cfg = load_config(schema_for(str(old), []), old)
    assert isinstance(cfg, RLTrainConfig) and isinstance(cfg.robot, SimCarConfig)
    assert (cfg.robot.camera, cfg.robot.camera_size, cfg.robot.track) == (True, (24, 24), "oval")
    new = write(tmp_path / "new.yaml", to_yaml(cfg))
    again = load_config(schema_for(str(new), []), new)
    assert again.robot == cfg.robot
    empty = write(tmp_path / "empty.yaml", "env: robolearn/SimCarChicane-v0\nrobot: {}\n"
                                           "policy: sac\n")
    assert load_config(schema_for(str(empty), []), empty).robot.track == "chicane"
    # the untyped base class (the Python API) types the dict in __post_init__, checking it
    base = load_config(CollectConfig, None, ["output=x", "env=robolearn/SimCar-v0",
                                             "robot.camera=true"])
    assert isinstance(base.robot, SimCarConfig) and base.robot.camera
    with pytest.raises(ConfigError, match=r"unknown key 'robot\.camra' \(did you mean"):
        load_config(CollectConfig, None, ["output=x", "env=robolearn/SimCar-v0",
                                          "robot.camra=true"])
