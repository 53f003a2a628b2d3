"""Training, checkpoints and evaluation under bad input and accidents (issue 13): nothing outside
robolearn's own output is touched, nothing broken passes silently, and every failure is one line
naming what was wrong (exit 1 for bad stored data, 2 for a bad config), with no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from data import EpisodeStore
from data.sampling import split_episodes
from robolearn.cli import main
from robolearn.vector import collect_scripted

REACH = "robolearn/SimArmReach-v0"


@pytest.fixture(scope="module")
def reach_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reach.zarr"
    collect_scripted(REACH, str(path), episodes=6, num_envs=1, progress=False).close()
    return path


@pytest.fixture(scope="module")
def trained(reach_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert _train(reach_store, run, 4) == 0
    return run


def _train(store: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["train", f"dataset={store}", f"output={out}", "policy=mlp", f"steps={steps}",
                 "batch_size=16", "num_workers=0", "log_every=1", "save_every=2",
                 "optim.warmup_steps=2", "policy_config.hidden_dim=32", "-q", *extra])


def _eval(target: Path, *extra: str) -> int:
    return main(["eval", str(target), "episodes=1", "videos=0", "max_steps=5", "-q", *extra])


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", symlinks=True))


def _one_line(capsys: pytest.CaptureFixture[str], *names: str) -> str:
    """The one stderr line of a failed command; it names each of ``names``."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _steps(run: Path) -> list[int]:
    """The step of each row of the run's metrics.jsonl."""
    return [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]


def _last_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a failed command that logged warnings before it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------ item 1: whose directory
def test_train_never_writes_into_a_directory_it_did_not_create(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own settings\n")
    (mine / "notes.md").write_text("keep me")
    for resume in ("resume=true", "resume=false"):  # the default resumes: it wrote in anyway
        assert _train(reach_store, mine, 2, resume) == 2
        _one_line(capsys, f"output: {mine}", "not created by robolearn", "choose another")
    assert _listing(mine) == ["config.yaml", "notes.md"]
    assert (mine / "config.yaml").read_text() == "my own settings\n"


def test_a_fresh_start_deletes_only_what_robolearn_wrote(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert _train(reach_store, run, 2) == 0
    assert _eval(run) == 0  # run/eval: robolearn's too
    assert _eval(run, f"output={run / 'limited'}", "safety.max_delta=0.01") == 0
    (run / "notes.md").write_text("what I learnt from this run")
    assert _train(reach_store, run, 2, "resume=false") == 2  # it deleted notes.md
    _one_line(capsys, str(run), "notes.md", "did not write")
    assert (run / "notes.md").read_text() == "what I learnt from this run"
    assert (run / "checkpoints" / "last" / "policy").is_dir() and (run / "eval").is_dir()
    (run / "notes.md").unlink()
    assert _train(reach_store, run, 2, "resume=false") == 0  # its own files only: starts over
    assert not (run / "eval").exists() and not (run / "limited").exists()
    assert _steps(run) == [1, 2]


def test_a_directory_that_only_looks_like_a_run_is_not_robolearns(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What another tool's run leaves (config.yaml, checkpoints/, metrics.jsonl) was taken for a
    robolearn run written before the marker: resume wrote into it, resume=false emptied it."""
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "model.pt").write_text("weights")
    (other / "config.yaml").write_text("lr: 3\n")
    (other / "metrics.jsonl").write_text('{"step": 5}\n')
    for resume in ("resume=true", "resume=false"):
        assert _train(reach_store, other, 2, resume) == 2
        _one_line(capsys, f"output: {other}", "not created by robolearn")
    assert _listing(other) == ["checkpoints", "checkpoints/model.pt", "config.yaml",
                              "metrics.jsonl"]
    assert (other / "metrics.jsonl").read_text() == '{"step": 5}\n'
    assert (other / "checkpoints" / "model.pt").read_text() == "weights"


def test_a_fresh_start_never_deletes_a_run_nested_in_it(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A marked sub-directory is not necessarily an evaluation: a fresh start deleted a whole
    run the user had put inside (and an eval/ directory the user made)."""
    run = tmp_path / "run"
    assert _train(reach_store, run, 2) == 0
    assert _train(reach_store, run / "sweep1", 2) == 0
    assert _train(reach_store, run, 2, "resume=false") == 2
    _one_line(capsys, str(run), "sweep1")
    assert (run / "sweep1" / "checkpoints" / "last" / "policy").is_dir()
    shutil.rmtree(run / "sweep1")
    (run / "eval").mkdir()
    (run / "eval" / "mine.txt").write_text("my notes")
    assert _train(reach_store, run, 2, "resume=false") == 2
    _one_line(capsys, str(run), "eval")
    assert (run / "eval" / "mine.txt").read_text() == "my notes"


def test_eval_never_writes_into_a_directory_it_did_not_create(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "eval.json").write_text("{}")
    assert _eval(trained, f"output={mine}") == 2
    _one_line(capsys, f"output: {mine}", "not created by robolearn")
    assert _listing(mine) == ["eval.json"] and (mine / "eval.json").read_text() == "{}"
    # nor into its run's own directory: a new evaluation replaces only eval's files
    run = _copy(trained, tmp_path)
    assert _eval(run, f"output={run}") == 2
    _one_line(capsys, "checkpoints", "did not write")
    assert not (run / "eval.json").exists()


# ------------------------------------------------------------------ item 4: NaN
def _store_with_nan(path: Path, episode: int, step: int) -> Path:
    feats = {"observation.state": {"dtype": "float32", "shape": [3]},
             "action": {"dtype": "float32", "shape": [2]}}
    with EpisodeStore.create(path, feats, fps=10.0, robot_type="sim_arm") as store, \
            store.recorder() as rec:
        for e in range(4):
            for t in range(20):
                state = np.array([e, t, e * t], np.float32) / 20
                if (e, t) == (episode, step):
                    state[1] = np.nan
                rec.add({"observation.state": state, "action": state[:2] * 2})
            rec.end_episode(success=True)
    return path


@pytest.mark.parametrize("split", ["train", "val"])
def test_nonfinite_training_data_is_named_before_any_work(
        split: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probe = _store_with_nan(tmp_path / "probe.zarr", 0, 0)
    with EpisodeStore.open(probe) as store:
        train_eps, val_eps = split_episodes(store, 0.25, seed=0)
    bad = (train_eps if split == "train" else val_eps)[0]
    store = _store_with_nan(tmp_path / "nan.zarr", bad, 7)
    out = tmp_path / "run"
    assert _train(store, out, 3, "val_fraction=0.25", "batch_size=4") == 1  # trained a NaN model
    _one_line(capsys, str(store), f"episode {bad}", "observation.state", "step 7", "nan")
    assert not out.exists()


def test_a_diverging_loss_stops_training_naming_the_step(
        reach_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.numpy import load_file

    out = tmp_path / "run"
    assert _train(reach_store, out, 6, "optim.lr=1e30", "optim.warmup_steps=0",
                  "save_every=1") == 2  # went on to step 6 and saved NaN weights
    line = _one_line(capsys, "step 2", "loss is nan")
    assert "optim.lr" in line
    weights = load_file(str(out / "checkpoints" / "last" / "policy" / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
    assert (out / "checkpoints" / "last").resolve().name == "step_00000001"


def test_eval_counts_nonfinite_actions_instead_of_hiding_them(trained: Path,
                                                             tmp_path: Path) -> None:
    import torch

    from policies.base import Policy

    policy = Policy.load(trained / "checkpoints" / "last" / "policy")
    with torch.no_grad():
        for p in policy.parameters():
            p.fill_(float("nan"))
    broken = policy.save(tmp_path / "broken")
    assert _eval(broken, f"env={REACH}", f"output={tmp_path / 'eval'}") == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    # select_action replaced every NaN with the dataset's mean action: the report said 0
    assert report["results"][0]["nonfinite_actions"] == report["results"][0]["steps"] == 5
    assert report["nonfinite_actions"] == 5


# ------------------------------------------------------------------ items 7 and 8: checkpoints
def _overwrite_tail(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-8:] = b"\x7f" * 8  # the last weights, still a well-formed file
    path.write_bytes(bytes(data))


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:24] = b"#" * 16
    path.write_bytes(bytes(data))


DAMAGE = {
    "weights_tail": ("policy/model.safetensors", _overwrite_tail),
    "safetensors_header": ("policy/model.safetensors", _garble_header),
    "policy_json": ("policy/policy.json", lambda p: p.write_text('{"policy": "mlp", "feat')),
    "missing_weights": ("policy/model.safetensors", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("sums", [True, False], ids=["checksummed", "old_checkpoint"])
def test_a_damaged_policy_is_named(damage: str, sums: bool, trained: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    if damage == "weights_tail" and not sums:
        pytest.skip("without a checksum, well-formed wrong weights cannot be told apart")
    run = _copy(trained, tmp_path)
    last = run / "checkpoints" / "last"
    if not sums:  # a checkpoint saved before checksums existed
        (last / "policy" / "SHA256SUMS").unlink()
    name, spoil = DAMAGE[damage]
    spoil(last / name)
    assert _eval(run) == 1  # weights_tail: evaluated without complaint; others: traceback
    assert _last_line(capsys).startswith(f"robolearn eval: {last / name}: ")
    assert not (run / "eval").exists()


def test_an_old_checkpoint_without_checksums_still_loads(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    (run / "checkpoints" / "last" / "policy" / "SHA256SUMS").unlink()
    assert _eval(run) == 0
    assert "loaded unverified" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("sums", [True, False], ids=["checksummed", "old_checkpoint"])
def test_a_truncated_training_state_is_named(sums: bool, reach_store: Path, trained: Path,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    last = run / "checkpoints" / "last"
    if not sums:
        (last / "SHA256SUMS").unlink()
    state = last / "training_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = _listing(run)
    assert _train(reach_store, run, 8) == 1  # torch's unpickling traceback
    assert _last_line(capsys).startswith(f"robolearn train: {state}: ")
    assert _listing(run) == before


def test_resume_refuses_a_changed_experiment(reach_store: Path, trained: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(trained, tmp_path)
    saved = (run / "config.yaml").read_text()
    assert _train(reach_store, run, 8, "batch_size=8") == 2  # accepted, config.yaml rewritten
    _one_line(capsys, "batch_size (16 -> 8)", "resume=false")
    assert _train(reach_store, run, 8, "policy_config.hidden_dim=64") == 2
    _one_line(capsys, "policy_config.hidden_dim (32 -> 64)")
    assert main(["train", f"dataset={reach_store}", f"output={run}", "policy=act", "steps=8",
                 "batch_size=16", "num_workers=0", "log_every=1", "save_every=2",
                 "optim.warmup_steps=2", "-q"]) == 2
    _one_line(capsys, "policy ('mlp' -> 'act')")
    assert (run / "config.yaml").read_text() == saved
    assert (run / "checkpoints" / "last").resolve().name == "step_00000004"
    # the budget, logging and checkpointing may change
    assert _train(reach_store, run, 6, "log_every=2", "save_every=3", "keep_last=5") == 0
    assert (run / "checkpoints" / "last").resolve().name == "step_00000006"


def test_a_checkpoint_that_does_not_fit_the_model_is_named(
        reach_store: Path, trained: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without its config.yaml (nothing to compare), a changed model size still fails in one
    line naming the checkpoint, not in load_state_dict's size-mismatch traceback."""
    run = _copy(trained, tmp_path)
    (run / "config.yaml").unlink()
    assert _train(reach_store, run, 8, "policy_config.hidden_dim=64") == 1
    _one_line(capsys, "training_state.pt", "does not fit", "size mismatch")


# ------------------------------------------------------------------ item 9: pruning
def test_checkpoints_are_pruned_to_the_newest_and_the_best(reach_store: Path,
                                                           tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(reach_store, run, 8, "save_every=1", "keep_last=2") == 0  # kept 8
    ckpts = run / "checkpoints"
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda r: r["val_loss"])["step"]
    assert (ckpts / "best").resolve().name == f"step_{best:08d}"
    kept = sorted(p.name for p in ckpts.glob("step_*"))
    assert kept == sorted({"step_00000007", "step_00000008", f"step_{best:08d}"})
    assert not list(ckpts.glob(".*"))  # no temporary or half-deleted directory


def test_pruning_keeps_the_best_and_what_resume_loads(tmp_path: Path) -> None:
    """Real checkpoints, chosen validation losses: the best survives however old, and a
    prune a crash interrupted (a directory renamed out of sight) is finished at the next save."""
    from data.schema import Feature
    from policies import make_policy
    from robolearn.rundir import save_checkpoint

    feats = {"observation.state": Feature("float32", (3,)), "action": Feature("float32", (2,))}
    stats = {k: {s: np.full(f.shape, v, np.float32) for s, v in
                 (("mean", 0.0), ("std", 1.0), ("min", -1.0), ("max", 1.0))}
             for k, f in feats.items()}
    policy = make_policy("mlp", feats, stats, hidden_dim=8, device="cpu")
    ckpts = tmp_path / "checkpoints"
    for step, val in enumerate([5.0, 1.0, 4.0, 3.0], start=1):
        save_checkpoint(ckpts, step, policy, {"step": step}, keep_last=2, val_loss=val)
    assert sorted(p.name for p in ckpts.glob("step_*")) == [
        "step_00000002", "step_00000003", "step_00000004"]
    assert (ckpts / "best").resolve().name == "step_00000002"
    (ckpts / "step_00000003").rename(ckpts / ".step_00000003.trash")  # killed mid-prune
    save_checkpoint(ckpts, 5, policy, {"step": 5}, keep_last=1, val_loss=0.5)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step_00000005"]
    assert (ckpts / "best").resolve() == (ckpts / "last").resolve()


# ------------------------------------------------------------------ item 10: metrics rows
def test_metrics_have_one_row_per_step_after_a_resume(reach_store: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(reach_store, run, 8, "save_every=4", "keep_last=0") == 0
    # killed after logging steps 5-8 but before the checkpoint at 8: last is still step 4
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "step_00000008")
    (ckpts / "last").unlink()
    (ckpts / "last").symlink_to("step_00000004")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "lo')  # and a torn last line
    assert _train(reach_store, run, 8) == 0  # resumed at 4: rows 5-8 appeared twice
    assert _steps(run) == list(range(1, 9))


# ------------------------------------------------------------------ no tracebacks
@pytest.mark.parametrize("text", ["steps: [1, 2\n", "- steps: 3\n- policy: mlp\n"],
                         ids=["invalid_yaml", "top_level_list"])
def test_a_bad_config_file_is_one_line(text: str, reach_store: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["train", "--config", str(bad), f"dataset={reach_store}",
                 f"output={tmp_path / 'run'}"]) == 2
    _one_line(capsys, str(bad))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "key"), [("val_fraction=1.5", "val_fraction"),
                                               ("val_fraction=0.99", "val_fraction"),
                                               ("batch_size=100000", "batch_size")])
def test_impossible_training_settings_are_named_before_any_output(
        override: str, key: str, reach_store: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(reach_store, tmp_path / "run", 2, override) == 2
    _one_line(capsys, key)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write in: a read-only tmpfs as root, else no write permission."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only file system here: {done.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_train_on_a_read_only_file_system_is_one_line(
        reach_store: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = read_only_dir / "run"
    assert _train(reach_store, out, 2) == 2
    _one_line(capsys, f"output: cannot write {out}", str(read_only_dir))


def test_eval_of_what_is_not_a_run_is_one_line(reach_store: Path, trained: Path,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert _eval(tmp_path / "nope") == 2
    _one_line(capsys, f"checkpoint: {tmp_path / 'nope'} does not exist")
    assert _eval(reach_store) == 2
    _one_line(capsys, str(reach_store), "episode store")
    assert _eval(trained, "env=robolearn/Nope-v0") == 2
    _one_line(capsys, "env", "robolearn/Nope-v0", "known: ")
    run = _copy(trained, tmp_path)
    meta = json.loads((run / "dataset.json").read_text())
    del meta["env_id"]
    (run / "dataset.json").write_text(json.dumps(meta))
    assert _eval(run) == 2
    _one_line(capsys, "env", str(run), "env_id", "pass env=")
    assert not (run / "eval").exists() and not (trained / "eval").exists()


def test_eval_refuses_another_robots_env(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A car run evaluated on the arm: the car data's track override reached the arm's
    constructor (TypeError: unexpected keyword argument 'track')."""
    car = tmp_path / "car.zarr"
    collect_scripted("robolearn/SimCar-v0", str(car), episodes=1, num_envs=1, progress=False,
                     max_steps=20).close()
    run = tmp_path / "run"
    assert _train(car, run, 1, "batch_size=4", "val_fraction=0") == 0
    assert _eval(run, f"env={REACH}") == 2
    _one_line(capsys, REACH, "robot sim_arm", "robot sim_car", "robolearn/SimCar-v0")
    assert not (run / "eval").exists()
