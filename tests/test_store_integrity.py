"""The episode store's integrity with real files on disk: one writer at a time, read-only
opens, what foreign or newer data looks like, and corrupt or truncated chunks reported for
their episode only."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from data import EpisodeStore, StoreCorruptError, StoreError, StoreFormatError, StoreLockedError
from data.sampling import WindowSampler, WindowSpec
from tests.conftest import CAM, FEATURES, FPS, StoreFactory, episode_arrays, shard_file

# ------------------------------------------------------------------------------- locking


def test_second_writer_is_refused_while_readers_are_not(make_store: StoreFactory) -> None:
    path = make_store(lengths=(3,))
    writer = EpisodeStore.open(path, "a")
    with pytest.raises(StoreLockedError) as err:
        EpisodeStore.open(path, "a")
    assert str(path) in str(err.value) and f"pid {os.getpid()}" in str(err.value)
    assert len(EpisodeStore.open(path, "r")) == 1
    writer.close()
    EpisodeStore.open(path, "a").close()  # free again


@pytest.mark.parametrize("action", [
    lambda s: s.recorder(),
    lambda s: s.delete([0]),
    lambda s: s.add_task("new"),
    lambda s: s.append_from(s),
])
def test_read_only_store_refuses_to_write(make_store: StoreFactory,
                                          action: Callable[[EpisodeStore], Any]) -> None:
    path = make_store(lengths=(3,))
    store = EpisodeStore.open(path, "r")
    with pytest.raises(StoreError, match="read-only"):
        action(store)
    assert len(EpisodeStore.open(path, "r")) == 1


def test_open_rejects_bad_mode(make_store: StoreFactory) -> None:
    with pytest.raises(ValueError, match="mode"):
        EpisodeStore.open(make_store(lengths=(1,)), "w")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- foreign data


def _foreign_dir(p: Path) -> None:
    p.mkdir()
    (p / "notes.txt").write_text("hello")


def _plain_zarr_group(p: Path) -> None:
    zarr.open_group(str(p), mode="w", zarr_format=3).attrs["owner"] = "someone else"


def _bad_json(p: Path) -> None:
    p.mkdir()
    (p / "zarr.json").write_text("{not json")


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: None, "no such store"),
    (lambda p: p.mkdir(), "no zarr.json"),
    (_foreign_dir, "no zarr.json"),
    (_plain_zarr_group, "not a robolearn episode store"),
    (_bad_json, "not valid JSON"),
])
@pytest.mark.parametrize("mode", ["r", "a"])
def test_opening_something_else_raises_format_error(
        tmp_path: Path, make: Callable[[Path], None], needle: str, mode: str) -> None:
    path = tmp_path / "thing"
    make(path)
    with pytest.raises(StoreFormatError) as err:
        EpisodeStore.open(path, mode)  # type: ignore[arg-type]
    assert str(path) in str(err.value) and needle in str(err.value)


def test_newer_format_version_is_refused(make_store: StoreFactory) -> None:
    path = make_store(lengths=(2,))
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["robolearn"]["format_version"] += 1
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreFormatError) as err:
        EpisodeStore.open(path, "r")
    assert str(path) in str(err.value) and "newer robolearn" in str(err.value)


def test_create_refuses_existing_store_and_foreign_files(make_store: StoreFactory,
                                                         tmp_path: Path) -> None:
    path = make_store(lengths=(2,))
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(path, FEATURES, fps=FPS)
    with EpisodeStore.create(path, FEATURES, fps=FPS, exist_ok=True) as same:
        assert len(same) == 1
    _foreign_dir(tmp_path / "foreign")
    with pytest.raises(StoreError, match="not empty"):
        EpisodeStore.create(tmp_path / "foreign", FEATURES, fps=FPS)
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "hello"
    with pytest.raises(ValueError, match="fps"):
        EpisodeStore.create(tmp_path / "nofps", FEATURES, fps=0)
    with pytest.raises(TypeError, match="metadata.when"):
        EpisodeStore.create(tmp_path / "badmeta", FEATURES, fps=FPS, when=object())


# ------------------------------------------------------------------------------- corruption

WIDE = {**FEATURES, "observation.wide": {"dtype": "float32", "shape": [1024]}}


def _flip_bytes(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    for k in range(mid, min(len(blob), mid + 8)):
        blob[k] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


@pytest.mark.parametrize(("key", "damage", "needle"), [
    ("observation.wide", _flip_bytes, "cannot read"),  # 4 KiB steps: 256-step chunks
    (CAM, _truncate, "cannot read"),
    (CAM, Path.unlink, "missing"),
    ("observation.wide", Path.unlink, "missing"),
])
def test_damaged_chunk_is_reported_for_its_episode_only(
        make_store: StoreFactory, key: str, damage: Callable[[Path], None],
        needle: str) -> None:
    path = make_store(lengths=(10, 12, 9), features=WIDE)
    store = EpisodeStore.open(path, "r")
    bad = store.info(1)
    arr = store.array(key)
    step = arr.shards[0] if arr.shards is not None else arr.chunks[0]
    assert bad.start % step == 0 and bad.length <= step  # episode 1 owns exactly one file
    files = list((path / "data" / key / "c" / str(bad.start // step)).rglob("*"))
    chunk = next(f for f in files if f.is_file())
    good = {i: episode_arrays(store, i) for i in (0, 2)}
    damage(chunk)

    store = EpisodeStore.open(path, "r")
    problems = store.verify()
    assert len(problems) == 1, problems
    assert f"episode 1 (id {bad.id})" in problems[0] and f"data/{key}" in problems[0]
    assert needle in problems[0] and str(path) in problems[0]
    assert "episode 0" not in problems[0] and "episode 2" not in problems[0]

    if damage is not Path.unlink:  # a missing chunk reads as fill values through zarr
        with pytest.raises(StoreCorruptError) as err:
            store.episode(1)
        msg = str(err.value)
        assert str(path) in msg and "episode 1" in msg and f"data/{key}" in msg, msg
    for i, arrays in good.items():  # the other episodes still read, unchanged
        for k, v in episode_arrays(store, i).items():
            np.testing.assert_array_equal(v, arrays[k], err_msg=k)


def test_truncated_shard_fails_window_reads_naming_the_episode(make_store: StoreFactory) -> None:
    path = make_store(lengths=(6, 6), features=WIDE)
    store = EpisodeStore.open(path, "r")
    _truncate(shard_file(store, store.info(1).start))
    sampler = WindowSampler(EpisodeStore.open(path, "r"), WindowSpec(1, 1))
    try:
        assert sampler.get_batch([0, 5])[CAM].shape == (2, 1, 32, 32, 3)  # episode 0 is fine
        with pytest.raises(StoreCorruptError) as err:
            sampler.get_batch([7])
        msg = str(err.value)
        assert str(path) in msg and "episode 1" in msg and f"data/{CAM}" in msg, msg
    finally:
        sampler.close()


def test_verify_is_clean_on_a_good_store(make_store: StoreFactory) -> None:
    assert EpisodeStore.open(make_store(lengths=(3, 4)), "r").verify() == []
