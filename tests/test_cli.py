"""The ``robolearn`` command line: ``data info|verify|merge|delete`` in-process (capsys), and one
real subprocess through the installed entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data import EpisodeStore
from robolearn.cli import main
from tests.conftest import CAM, StoreFactory

ROBOLEARN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "robolearn"


def squash(text: str) -> str:
    """Output without whitespace: rich wraps long lines (and paths) at the console width."""
    return "".join(text.split())


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_schema_and_counts(make_store: StoreFactory,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(lengths=(4, 5, 6))
    code, out, _ = run_cli(capsys, "data", "info", str(path))
    assert code == 0
    flat = squash(out)
    for word in ("episodes", "frames", CAM, "observation.state", "action", "camera(JPEG)",
                 "policy", "teleop"):
        assert word in flat, word
    assert re.search(r"[│|]3[│|]15[│|]", flat), out  # the contents row: 3 episodes, 15 frames


def test_info_json(make_store: StoreFactory, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(lengths=(4, 5, 6))
    code, out, _ = run_cli(capsys, "data", "info", str(path), "json=true")
    assert code == 0
    summary = json.loads(out)
    assert summary["episodes"] == 3 and summary["frames"] == 15
    assert summary["path"] == str(path) and summary["fps"] == 10.0
    assert set(summary["features"]) == {"observation.state", CAM, "action"}
    assert summary["features"][CAM]["image"] is True
    assert (summary["success"], summary["failure"]) == (2, 1)


def test_verify_exit_codes(make_store: StoreFactory, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(lengths=(4, 5, 6))
    code, out, _ = run_cli(capsys, "data", "verify", str(path))
    assert code == 0
    assert "3episodesverified" in squash(out)

    store = EpisodeStore.open(path, "r")
    bad = store.info(2)
    shard = path / "data" / CAM / "c" / str(bad.start // store.shard_len) / "0" / "0" / "0"
    os.truncate(shard, shard.stat().st_size - 100)
    code, out, _ = run_cli(capsys, "data", "verify", str(path))
    flat = squash(out)
    assert code == 1
    assert f"episode2(id{bad.id})" in flat and f"data/{CAM}" in flat
    assert "episode0" not in flat and "episode1" not in flat
    assert "1problem(s)" in flat


def test_merge_with_filters(make_store: StoreFactory, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    a = make_store("a", lengths=(3, 4, 5))  # success: True, False, True
    b = make_store("b", lengths=(6, 7))  # success: True, False
    out_path = tmp_path / "merged"
    code, out, err = run_cli(capsys, "data", "merge", str(out_path), f"inputs=[{a},{b}]",
                             "success=true")
    assert code == 0, err
    flat = squash(out)
    assert "copied2of3episodes" in flat and "copied1of2episodes" in flat
    merged = EpisodeStore.open(out_path, "r")
    assert [i.length for i in merged.infos()] == [3, 5, 6]
    assert all(i.success for i in merged.infos())
    src_a = EpisodeStore.open(a, "r")
    for key in merged.keys:
        np.testing.assert_array_equal(merged.episode(1)[key], src_a.episode(2)[key])

    code, _, err = run_cli(capsys, "data", "merge", str(tmp_path / "places"), f"inputs=[{a}]",
                           "task=place", "source=teleop")
    assert code == 0, err
    assert [i.length for i in EpisodeStore.open(tmp_path / "places", "r").infos()] == [4]


def test_merge_rejects_bad_source_before_work(make_store: StoreFactory, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = make_store("a", lengths=(3,))
    code, _, err = run_cli(capsys, "data", "merge", str(tmp_path / "m"), f"inputs=[{a}]",
                           "source=human")
    assert code == 2
    assert "source" in err and "human" in err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_existing_output(make_store: StoreFactory,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    a = make_store("a", lengths=(3,))
    b = make_store("b", lengths=(2,))
    code, _, err = run_cli(capsys, "data", "merge", str(b), f"inputs=[{a}]")
    assert code == 1
    assert "alreadyexists" in squash(err)
    assert len(EpisodeStore.open(b, "r")) == 1


def test_delete(make_store: StoreFactory, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_store(lengths=(3, 4, 5, 6))
    before = EpisodeStore.open(path, "r")
    kept_ids = [before.info(1).id, before.info(3).id]
    code, out, _ = run_cli(capsys, "data", "delete", str(path), "episodes=[0,2]")
    assert code == 0
    assert "deleted2episode(s),2left" in squash(out)
    after = EpisodeStore.open(path, "r")
    assert [i.id for i in after.infos()] == kept_ids
    assert [i.length for i in after.infos()] == [4, 6]

    code, _, err = run_cli(capsys, "data", "delete", str(path), "episodes=[9]")
    assert code == 1
    assert "episode 9: out of range" in err and "Traceback" not in err
    assert len(EpisodeStore.open(path, "r")) == 2


@pytest.mark.parametrize(("args", "needle"), [
    (["data", "info", "{path}", "jsn=true"], "'jsn'"),
    (["data", "info", "{path}", "json=maybe"], "'json'"),
    (["data", "delete", "{path}", "episode=[0]"], "did you mean 'episodes'"),
])
def test_bad_overrides_exit_2_naming_the_key(make_store: StoreFactory,
                                             capsys: pytest.CaptureFixture[str],
                                             args: list[str], needle: str) -> None:
    path = make_store(lengths=(2,))
    code, out, err = run_cli(capsys, *[a.format(path=path) for a in args])
    assert code == 2
    assert "config error" in err and needle in err, err
    assert len(EpisodeStore.open(path, "r")) == 1  # nothing ran


def test_missing_positional_and_extra_arguments_exit_2(capsys: pytest.CaptureFixture[str],
                                                       make_store: StoreFactory,
                                                       tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "data", "info")
    assert code == 2
    assert err == "robolearn data info: missing positional argument PATH (robolearn data info " \
                  "PATH)\n"
    code, _, err = run_cli(capsys, "data", "info", str(tmp_path), "extra", "more")
    assert code == 2
    assert "too many positional arguments: 'extra' 'more'" in err and "takes PATH" in err
    code, _, err = run_cli(capsys, "train", "runs/x")  # train takes none
    assert code == 2 and "too many positional arguments: 'runs/x'" in err
    assert "takes no positional argument" in err
    # a positional argument may be given by its key instead; other missing keys stay keys
    code, out, err = run_cli(capsys, "data", "info", f"path={make_store(lengths=(2,))}")
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "policy=mlp")
    assert code == 2 and "missing required value(s): dataset" in err


@pytest.mark.parametrize("command", ["info", "verify", "delete"])
def test_missing_store_exits_1_with_clear_message(tmp_path: Path, command: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.zarr"
    code, out, err = run_cli(capsys, "data", command, str(missing))
    assert code == 1
    flat = squash(err)
    assert squash(str(missing)) in flat and "nosuchstore" in flat
    assert "Traceback" not in err + out
    assert not missing.exists()


def test_not_a_store_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(capsys, "data", "info", str(tmp_path))
    assert code == 1 and "not a robolearn episode store" in err


def test_subprocess_entry_point(make_store: StoreFactory) -> None:
    path = make_store(lengths=(4, 5))
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([str(ROBOLEARN), "data", "info", str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "episodes" in proc.stdout and str(path) in proc.stdout
    assert re.search(r"[│|] *2 *[│|] *9 *[│|]", proc.stdout), proc.stdout  # episodes, frames


def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    """The README's main command, small: real worker processes, a real SIGKILL, a real video."""
    out = tmp_path / "qs"
    proc = subprocess.run([str(ROBOLEARN), "quickstart", f"output={out}", "episodes=4",
                           "train_steps=30", "eval_episodes=2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["verify_problems"] == []
    assert report["expert_success"] == 1.0
    crash = report["crash_test"]
    assert crash["recovered_incomplete"] == 1  # killed right after a flush, mid-episode
    assert crash["episodes_after"] == report["summary"]["episodes"] >= 5
    assert (out / "expert_lift.mp4").stat().st_size > 1000
    bc = report["bc"]
    assert bc["episodes"] == 2 and 0 <= bc["success_rate"] <= 1
    assert Path(bc["learning_curve"]).stat().st_size > 1000
    assert len(bc["videos"]) == 1 and Path(bc["videos"][0]).exists()
    assert "report:" in proc.stdout


@pytest.mark.parametrize("command", [["collect", "{out}"], ["train", "policy=sac",
                                                          "output={out}"]])
def test_a_robot_key_typo_fails_before_work_naming_it(command: list[str], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = [a.format(out=out) for a in command] + ["env=robolearn/SimCar-v0", "robot.camra=true"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert "unknown key 'robot.camra' (did you mean 'robot.camera'?)" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_collect_records_with_the_typed_robot_settings(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Robot settings reach the robot (two checkpoints in the car's state) and the store's
    metadata, which ``robolearn eval`` rebuilds the env from: the env's own settings (its
    track) and the changed ones, as before robot configs were typed."""
    out = tmp_path / "car.zarr"
    code, _, err = run_cli(capsys, "collect", str(out), "env=robolearn/SimCarChicane-v0",
                           "episodes=1", "max_steps=5", "robot.n_checkpoints_obs=2",
                           "robot.max_speed=4.0", "-q")
    assert code == 0, err
    with EpisodeStore.open(out, "r") as store:
        assert store.features["observation.state"].shape == (9 + 2 * 2,)
        assert store.metadata["env_overrides"]["robot_kwargs"] == {
            "track": "chicane", "n_checkpoints_obs": 2, "max_speed": 4.0}


@pytest.mark.parametrize("command", ["train", "collect"])
@pytest.mark.parametrize(("text", "needle"), [("policy: [mlp\nenv: x\n", "not valid YAML"),
                                              ("- 1\n- 2\n", "top level must be a mapping")])
def test_a_bad_config_file_is_one_line_for_commands_whose_schema_reads_it(
        command: str, text: str, needle: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """train and collect read ``policy`` / ``env`` from the file to choose their schema; a file
    that is no YAML mapping is reported with its place, not as a traceback from that reading."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, _, err = run_cli(capsys, command, "--config", str(bad), "output=x")
    assert code == 2
    assert f"{bad}:" in err and needle in err and len(err.splitlines()) == 1, err
