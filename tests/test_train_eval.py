"""``robolearn train`` and ``robolearn eval``: configs checked up front, exact resume, reports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from robolearn.cli import main
from robolearn.evaluate import wilson
from robolearn.vector import collect_scripted


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reach.zarr"
    collect_scripted("robolearn/SimArmReach-v0", str(path), episodes=6, num_envs=1,
                     progress=False).close()
    return path


def _train(store: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["train", f"dataset={store}", f"output={out}", "policy=mlp", f"steps={steps}",
                 "batch_size=16", "num_workers=0", "log_every=4", "save_every=5",
                 "optim.warmup_steps=2", "-q", *extra])


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load_file(str(run / "checkpoints" / "last" / "policy" / "model.safetensors"))


def test_resume_after_interruption_gives_the_same_weights(reach_store: Path,
                                                         tmp_path: Path) -> None:
    assert _train(reach_store, tmp_path / "straight", 12) == 0
    assert _train(reach_store, tmp_path / "split", 12, "stop_at=7") == 0  # interrupted at 7
    assert (tmp_path / "split" / "checkpoints" / "last").resolve().name == "step_00000007"
    assert _train(reach_store, tmp_path / "split", 12) == 0  # resumes at 7
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = _weights(tmp_path / "split")  # and differs from an untrained run: weights moved
    assert _train(reach_store, tmp_path / "short", 1) == 0
    assert any(not np.array_equal(c[k], v) for k, v in _weights(tmp_path / "short").items())


def test_the_validation_loss_leaves_trainings_random_streams_alone(reach_store: Path) -> None:
    """Checkpoints are ranked by a validation loss taken at every save, also at a stop_at
    save that an uninterrupted run never takes: diffusion's loss draws noise, and drawing it
    from training's generator would make the resumed run differ from the straight one."""
    from types import SimpleNamespace

    import torch

    from data.store import EpisodeStore
    from data.torch_dataset import EpisodeDataset
    from policies import make_policy
    from policies.normalize import compute_stats
    from robolearn.train import _val_loss

    with EpisodeStore.open(reach_store) as store:
        keys = [k for k in store.features if k.startswith("observation.")] + ["action"]
        features = {k: store.features[k] for k in keys}
        stats = compute_stats(store, keys)
    policy = make_policy("diffusion", features, stats, down_dims=[16, 32], device="cpu")
    ds = EpisodeDataset(reach_store, policy.window_spec(), [0, 1])
    cfg = SimpleNamespace(seed=0, batch_size=8)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = _val_loss(policy, ds, cfg)
    assert torch.equal(torch.get_rng_state(), before)
    assert _val_loss(policy, ds, cfg) == first  # same windows, same noise: losses compare


def test_normalization_comes_from_the_training_episodes_only(reach_store: Path,
                                                            tmp_path: Path) -> None:
    import json

    from data.sampling import split_episodes
    from data.store import EpisodeStore
    from policies.normalize import compute_stats

    assert _train(reach_store, tmp_path / "run", 1, "val_fraction=0.34", "seed=1") == 0
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last" / "policy" /
                        "policy.json").read_text())["stats"]
    with EpisodeStore.open(reach_store, "r") as store:
        train, val = split_episodes(store, 0.34, seed=1)
        assert len(val) == 2
        keys = list(saved)
        want, every = compute_stats(store, keys, episodes=train), compute_stats(store, keys)
    for k in keys:
        np.testing.assert_allclose(saved[k]["mean"], want[k]["mean"], rtol=1e-6, err_msg=k)
    assert any(not np.allclose(want[k]["mean"], every[k]["mean"]) for k in keys)


def test_train_config_errors_fail_before_work(reach_store: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(reach_store, tmp_path / "x", 5, "policy_config.hidden_dimm=3") == 2
    err = capsys.readouterr().err
    assert "policy_config.hidden_dimm" in err and "hidden_dim" in err
    assert main(["train", f"dataset={reach_store}", "policy=transformerzzz"]) == 2
    assert "known: mlp" in capsys.readouterr().err
    assert _train(reach_store, tmp_path / "x", 5, "optim.lr=-1") == 2
    assert "optim.lr" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_eval_reports_success_with_interval_and_video(reach_store: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import json

    run = tmp_path / "run"
    assert _train(reach_store, run, 5) == 0
    assert main(["eval", str(run), "episodes=3", "videos=1", "max_steps=20", "-q"]) == 0
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["episodes"] == 3 and len(report["results"]) == 3
    lo, hi = report["ci95"]
    assert lo <= report["success_rate"] <= hi
    assert [r["seed"] for r in report["results"]] == [100_000, 100_001, 100_002]
    assert all(r["steps"] <= 20 and r["nonfinite_actions"] == 0 for r in report["results"])
    assert all(r["rate_limited_actions"] == 0 for r in report["results"])  # no limit by default
    assert len(report["videos"]) == 1 and Path(report["videos"][0]).stat().st_size > 1000
    assert "success" in capsys.readouterr().out
    # the deployment's limits apply in evaluation, and each episode reports its own counts
    assert main(["eval", str(run), "episodes=2", "videos=0", "max_steps=20", "-q",
                 "safety.max_delta=0.001", f"output={tmp_path / 'limited'}"]) == 0
    limited = json.loads((tmp_path / "limited" / "eval.json").read_text())["results"]
    assert all(0 < r["rate_limited_actions"] <= r["steps"] for r in limited)
    # episodes are independent: the second of a run (seed 100001) is that seed run alone (an
    # 8-of-16 chunk left queued at an episode's end must not start the next one)
    assert main(["eval", str(run), "episodes=1", "seed=100001", "videos=0", "max_steps=20",
                 "-q", f"output={tmp_path / 'alone'}"]) == 0
    alone = json.loads((tmp_path / "alone" / "eval.json").read_text())["results"][0]
    second = report["results"][1]
    assert (alone["seed"], alone["steps"], alone["return"]) == (
        second["seed"], second["steps"], second["return"])


def test_wilson_interval() -> None:
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    lo, hi = wilson(45, 50)
    assert 0.78 < lo < 0.9 < hi < 0.97
    assert wilson(5, 10)[1] - wilson(5, 10)[0] > wilson(50, 100)[1] - wilson(50, 100)[0]


def test_eval_in_another_robots_env_or_an_unknown_env_is_one_line(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    run = tmp_path / "run"
    assert _train(reach_store, run, 2) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "env=robolearn/SimCar-v0", "episodes=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "robolearn/SimCar-v0 drives robot sim_car" in err
    assert "robolearn/SimArmReach-v0 data, robot sim_arm" in err
    assert main(["eval", str(run), "env=robolearn/SimArmReech-v0", "episodes=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown environment 'robolearn/SimArmReech-v0' (did you mean " \
           "'robolearn/SimArmReach-v0'?); known: robolearn/SimCar-v0" in err
    # a run whose data names no env (or one no longer registered) says what to pass
    meta = json.loads((run / "dataset.json").read_text())
    (run / "dataset.json").write_text(json.dumps({**meta, "env_id": None}))
    assert main(["eval", str(run), "episodes=1", "-q"]) == 2
    assert "pass env=robolearn/<Name>-v0" in capsys.readouterr().err
    (run / "dataset.json").write_text(json.dumps({**meta, "env_id": "robolearn/Gone-v0"}))
    assert main(["eval", str(run), "episodes=1", "-q"]) == 2
    assert "unknown environment 'robolearn/Gone-v0'" in capsys.readouterr().err
    assert not (run / "eval").exists()
