"""``robolearn data`` and ``collect`` when things go wrong, through the real command line: one
line naming what and where, a non-zero exit, no traceback, nothing half-made. A merge killed
with SIGKILL leaves no output; read-only file systems are real (a tmpfs remounted read-only)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from data import EpisodeStore
from robolearn.cli import main
from tests.conftest import CAM, FEATURES, StoreFactory
from tests.mounts import remount_read_only, tmpfs

ROOT = Path(__file__).resolve().parents[1]
LOWDIM = {k: v for k, v in FEATURES.items() if k != CAM}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stderr; asserts the error (if any) is one line without a traceback."""
    code = main([*args, "-q"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code:
        assert len(err.strip().splitlines()) == 1, err
    return code, err


def staging_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob(".*.creating-*"))


# ------------------------------------------------------------------------------- merge


def test_merge_without_inputs_is_an_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "data", "merge", str(tmp_path / "out"), "inputs=[]")
    assert code == 2 and "inputs" in err and "at least one store" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("second", ["mismatched", "missing"])
def test_merge_checks_every_input_before_copying(make_store: StoreFactory, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 second: str) -> None:
    """A mismatched second input failed only after the first was copied into OUT."""
    a = make_store("a", lengths=(3, 4))
    b = make_store("b", lengths=(2,), features=LOWDIM) if second == "mismatched" \
        else tmp_path / "b"
    out = tmp_path / "out"
    code, err = run_cli(capsys, "data", "merge", str(out), f"inputs=[{a},{b}]")
    assert code == 1 and str(b) in err
    assert ("features differ" if second == "mismatched" else "no such store") in err
    assert not out.exists() and staging_dirs(tmp_path) == []


def test_killed_merge_leaves_no_output_and_the_next_merge_cleans_up(
        make_store: StoreFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 200 episodes, each commit fsync'd: the copy lasts long enough for the kill to land in it
    a = make_store("a", lengths=[4] * 200, features=LOWDIM)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", "data", "merge", str(out),
                             f"inputs=[{a}]", "-q"], cwd=ROOT, stderr=subprocess.PIPE)

    def copying() -> bool:  # the first episode is committed in the output being built
        return any((d / "episodes.jsonl").exists() and (d / "episodes.jsonl").stat().st_size
                   for d in [out, *staging_dirs(tmp_path)])

    deadline = time.monotonic() + 120
    while not copying() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the merge ended before the kill"
    assert not out.exists()  # was a store of the episodes copied so far, verifying clean
    [stale] = staging_dirs(tmp_path)
    assert (stale / ".robolearn-staging").is_file()  # recognisably robolearn's
    foreign = tmp_path / ".out.creating-by-hand"  # same pattern, not robolearn's: kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")

    code, _ = run_cli(capsys, "data", "merge", str(out), f"inputs=[{a}]")
    assert code == 0
    assert staging_dirs(tmp_path) == [foreign] and (foreign / "notes.txt").exists()
    with EpisodeStore.open(out) as merged:
        assert len(merged) == 200 and merged.verify() == []
        assert not (out / ".robolearn-staging").exists()


# ------------------------------------------------------------------------------- read-only


@pytest.fixture
def read_only(tmp_path: Path, make_store: StoreFactory) -> Iterator[tuple[Path, Path]]:
    """(mount point, a store on it) after remounting the tmpfs read-only."""
    with tmpfs(tmp_path / "ro", "16m") as mnt:
        store = make_store("ro/store", lengths=(3, 4), features=LOWDIM)
        remount_read_only(mnt)
        yield mnt, store


def test_delete_on_a_read_only_filesystem(read_only: tuple[Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, store = read_only
    code, err = run_cli(capsys, "data", "delete", str(store), "episodes=[0]")
    assert code == 1 and str(store) in err and "read-only file system" in err
    with EpisodeStore.open(store) as s:
        assert len(s) == 2


def test_merge_onto_a_read_only_filesystem(read_only: tuple[Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    mnt, store = read_only
    code, err = run_cli(capsys, "data", "merge", str(mnt / "out"), f"inputs=[{store}]")
    assert code == 1 and str(mnt / "out") in err and "read-only file system" in err
    assert sorted(p.name for p in mnt.iterdir()) == ["store"]
    # reading from a read-only store is fine
    code, _ = run_cli(capsys, "data", "merge", str(tmp_path / "copy"), f"inputs=[{store}]")
    assert code == 0 and len(EpisodeStore.open(tmp_path / "copy")) == 2


def test_collect_onto_a_read_only_filesystem(read_only: tuple[Path, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    mnt, _ = read_only
    code, err = run_cli(capsys, "collect", str(mnt / "new.zarr"),
                        "env=robolearn/SimArmReach-v0", "episodes=1")
    assert code == 1 and str(mnt / "new.zarr") in err and "read-only file system" in err
    assert sorted(p.name for p in mnt.iterdir()) == ["store"]


def test_collect_to_a_path_that_is_a_file(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, err = run_cli(capsys, "collect", str(target), "env=robolearn/SimArmReach-v0",
                        "episodes=1")
    assert code == 1 and str(target) in err and "not a directory" in err
    assert target.read_text() == "mine" and sorted(tmp_path.iterdir()) == [target]


# ------------------------------------------------------------------------------- bad JSON


def _edit_line(path: Path, line: int, edit: Callable[[dict[str, Any]], None]) -> None:
    log = path / "episodes.jsonl"
    lines = log.read_text().splitlines()
    rec = json.loads(lines[line - 1])
    edit(rec)
    lines[line - 1] = json.dumps(rec)
    log.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("line", "edit", "needle"), [
    (2, lambda r: r.pop("length"), "line 2 (byte offset"),
    (1, lambda r: r.update(start="0"), "field 'start' is '0', expected an integer >= 0"),
    (2, lambda r: r.update(id=True), "field 'id' is True"),
    (1, lambda r: r.update(tags="ep0"), "field 'tags' is 'ep0', expected a list of strings"),
    (1, lambda r: r.update(sources={"teleop": "2"}), "field 'sources'"),
    (3, lambda r: r.update(ids=["0"]), "field 'ids' is ['0']"),
])
def test_malformed_commit_records_name_file_line_and_field(
        make_store: StoreFactory, capsys: pytest.CaptureFixture[str], line: int,
        edit: Callable[[dict[str, Any]], None], needle: str) -> None:
    path = make_store(lengths=(3, 4))
    with EpisodeStore.open(path, "a") as store:
        store.delete([0])  # line 3: a delete record
    _edit_line(path, line, edit)
    for command in ("info", "verify", "delete"):
        code, err = run_cli(capsys, "data", command, str(path), *(
            ["episodes=[0]"] if command == "delete" else []))
        assert code == 1 and f"{path}/episodes.jsonl line {line}" in err and needle in err, err


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda a: a.pop("fps"), "no field 'fps'"),
    (lambda a: a.update(fps="fast"), "field 'fps' is 'fast', expected a number > 0"),
    (lambda a: a.pop("features"), "no field 'features'"),
    (lambda a: a.update(shard_len="16"), "field 'shard_len' is '16'"),
    (lambda a: a["features"]["action"].update(shape="two"), "field 'features'"),
    (lambda a: a["features"].update(action=7), "field 'features.action' is 7"),
    (lambda a: a.update(tasks="pick"), "field 'tasks' is 'pick'"),
])
def test_malformed_zarr_json_names_the_field(make_store: StoreFactory,
                                             capsys: pytest.CaptureFixture[str],
                                             edit: Callable[[dict[str, Any]], None],
                                             needle: str) -> None:
    path = make_store(lengths=(3,))
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"]["robolearn"])
    (path / "zarr.json").write_text(json.dumps(meta))
    for command in ("info", "delete"):
        code, err = run_cli(capsys, "data", command, str(path))
        assert code == 1 and f"{path}/zarr.json" in err and needle in err, err
