"""LeRobot and robomimic interop, and ``data show``: real stores, datasets written and read by
lerobot itself, an HDF5 file laid out the way robomimic writes one, real MP4/PNG files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import h5py
import numpy as np
import pytest

import data.interop.lerobot  # noqa: F401  (first: it keeps lerobot offline and quiet)
from data import EpisodeStore
from robolearn.cli import main
from tests.conftest import smooth_image

CAM = "observation.images.front"
GREY = "observation.images.depth"
FEATURES: dict[str, dict[str, Any]] = {
    "observation.state": {"dtype": "float32", "shape": [3], "names": ["x", "y", "grip"]},
    CAM: {"dtype": "uint8", "shape": [32, 40, 3]},
    GREY: {"dtype": "uint8", "shape": [32, 32, 1]},
    "action": {"dtype": "float32", "shape": [2]},
    "next.reward": {"dtype": "float32", "shape": []},
    "observation.contact": {"dtype": "bool", "shape": [2]},
}
LENGTHS = (6, 4, 5)
pytestmark = pytest.mark.filterwarnings("ignore:Cannot enable progress bars")
VIDEO_TOLERANCE = 8.0  # mean |difference| in grey levels after AV1 (crf 30) of smooth frames


def _frame(e: int, t: int) -> dict[str, Any]:
    return {"observation.state": np.array([e, t, 0.5 * t], np.float32) + 0.125,
            CAM: smooth_image((32, 40, 3), 17 * e + 5 * t),
            GREY: smooth_image((32, 32, 1), 40 + 9 * e + 3 * t),
            "action": np.array([t / 7, -e], np.float32),
            "next.reward": np.float32(e + t / 4),
            "observation.contact": np.array([t % 2 == 0, e == 1])}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Three episodes: success, failure with metadata, and one cut short by an exception (kept
    as incomplete); sources alternate teleop / intervention."""
    path = tmp_path / "demos.zarr"
    with EpisodeStore.create(path, FEATURES, fps=10, robot_type="so101",
                             tasks=["lift", "stack", "unused"], site="lab") as st:
        with st.recorder() as rec:
            for e, n in enumerate(LENGTHS[:2]):
                rec.start_episode(task=["lift", "stack"][e])
                for t in range(n):
                    rec.add(_frame(e, t), source="intervention" if t % 3 == 2 else "teleop")
                rec.end_episode(success=e == 0, tags=[f"ep{e}"], operator="ana", trial=e)
        with pytest.raises(KeyboardInterrupt), st.recorder() as rec:
            for t in range(LENGTHS[2]):
                rec.add(_frame(2, t), source="policy")
            raise KeyboardInterrupt
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name
                  or ".creating-" in p.name)


def _lerobot(path: Path) -> Any:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset("test/demos", root=path)


# --------------------------------------------------------------------------- export to lerobot
@pytest.mark.parametrize("video", [False, True])
def test_export_loads_in_lerobot_with_every_frame_equal(store: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        video: bool) -> None:
    out = tmp_path / "lerobot"
    code, _, err = run(capsys, "data", "export", str(store), str(out), "format=lerobot",
                       f"video={str(video).lower()}")
    assert code == 0, err
    ds = _lerobot(out)
    src = EpisodeStore.open(store)
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (3, sum(LENGTHS), 10)
    assert ds.meta.robot_type == "so101"
    feats = ds.features
    assert feats["observation.state"]["names"] == ["x", "y", "grip"]
    assert feats[CAM]["dtype"] == ("video" if video else "image")
    assert tuple(feats[CAM]["shape"]) == (32, 40, 3) and tuple(feats[GREY]["shape"]) == (32, 32, 3)
    assert tuple(feats["next.reward"]["shape"]) == (1,)
    ends = np.cumsum(LENGTHS)
    assert list(ds.meta.episodes["dataset_from_index"]) == [0, *ends[:-1]]
    assert list(ds.meta.episodes["dataset_to_index"]) == list(ends)
    assert [list(t) for t in ds.meta.episodes["tasks"]] == [["lift"], ["stack"], [""]]
    diffs = []
    for e in range(3):
        ep = src.episode(e)
        for t in range(LENGTHS[e]):
            item = ds[int(ends[e] - LENGTHS[e] + t)]
            assert item["episode_index"] == e and item["frame_index"] == t
            assert item["task"] == (ep.info.task or "")
            assert item["timestamp"].item() == pytest.approx(t / 10)
            for key in ("observation.state", "action", "observation.contact"):
                np.testing.assert_array_equal(item[key].numpy(), ep[key][t], err_msg=key)
            assert item["next.reward"].item() == ep["next.reward"][t]
            assert item["source"].item() == ep["source"][t]
            for key in (CAM, GREY):
                got = np.round(item[key].numpy().transpose(1, 2, 0) * 255)
                want = np.broadcast_to(ep[key][t], got.shape)  # grey: copied to 3 channels
                if video:
                    diffs.append(np.abs(got - want).mean())
                else:
                    np.testing.assert_array_equal(got, want, err_msg=key)
    if video:
        assert max(diffs) < VIDEO_TOLERANCE, max(diffs)
    side = json.loads((out / "meta" / "robolearn.json").read_text())
    assert [e["success"] for e in side["episodes"]] == [True, False, None]
    assert [e["complete"] for e in side["episodes"]] == [True, True, False]
    assert side["episodes"][1]["metadata"] == {"operator": "ana", "trial": 1}
    assert side["store"]["tasks"] == ["lift", "stack", "unused"]
    assert leftovers(tmp_path) == []


def test_round_trip_store_lerobot_store(store: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "data", "export", str(store), str(tmp_path / "le"), "video=false")[0] == 0
    code, _, err = run(capsys, "data", "import", str(tmp_path / "le"), str(tmp_path / "back"))
    assert code == 0, err
    a, b = EpisodeStore.open(store), EpisodeStore.open(tmp_path / "back")
    assert b.features == a.features and b.fps == a.fps and b.robot_type == a.robot_type
    assert b.tasks == a.tasks
    assert b.summary()["metadata"]["site"] == "lab"
    assert len(b) == len(a)
    for e in range(len(a)):
        ea, eb = a.episode(e), b.episode(e)
        for field in ("length", "success", "complete", "task", "tags", "sources", "metadata"):
            assert getattr(eb.info, field) == getattr(ea.info, field), (e, field)
        for key in ea.data:
            if a.features.get(key) and a.features[key].image:  # JPEG again: within a level
                assert np.abs(eb[key].astype(int) - ea[key]).max() <= 2, key
            else:
                np.testing.assert_array_equal(eb[key], ea[key], err_msg=key)
                assert eb[key].dtype == ea[key].dtype


def test_recorded_times_survive_the_round_trip(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    feats = {"observation.state": {"dtype": "float64", "shape": [1]},
             "action": {"dtype": "float32", "shape": [1]}}
    times = [0.0, 0.13, 0.19, 0.31]  # a real-time loop's jitter, not step / fps
    with EpisodeStore.create(tmp_path / "s", feats, fps=5) as st, st.recorder() as rec:
        for t, ts in enumerate(times):
            rec.add({"observation.state": [t], "action": [t]}, timestamp=ts)
        rec.end_episode(success=True)
    assert run(capsys, "data", "export", str(tmp_path / "s"), str(tmp_path / "le"))[0] == 0
    assert "robolearn.timestamp" in _lerobot(tmp_path / "le").features
    assert run(capsys, "data", "import", str(tmp_path / "le"), str(tmp_path / "b"))[0] == 0
    back = EpisodeStore.open(tmp_path / "b").episode(0)
    np.testing.assert_array_equal(back["timestamp"], times)


# --------------------------------------------------------------------------- import from lerobot
def test_import_a_dataset_written_by_lerobot(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src = tmp_path / "theirs"
    feats = {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
             "action": {"dtype": "float32", "shape": (2,), "names": None},
             "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
             CAM: {"dtype": "video", "shape": (32, 40, 3),
                   "names": ["height", "width", "channels"]}}
    ds = LeRobotDataset.create("them/demo", fps=15, features=feats, root=src, robot_type="koch")
    for e, (n, task) in enumerate([(5, "open"), (3, "close")]):
        for t in range(n):
            ds.add_frame({"observation.state": np.array([e, t], np.float32),
                          "action": np.array([t / 3, 1], np.float32),
                          "next.reward": np.array([t], np.float32),
                          CAM: smooth_image((32, 40, 3), 20 * e + 4 * t), "task": task})
        ds.save_episode(parallel_encoding=False)
    ds.finalize()
    code, _, err = run(capsys, "data", "import", str(src), str(tmp_path / "ours"),
                       "source=scripted")
    assert code == 0, err
    theirs = LeRobotDataset("them/demo", root=src)
    ours = EpisodeStore.open(tmp_path / "ours")
    assert (len(ours), ours.num_frames, ours.fps, ours.robot_type) == (2, 8, 15.0, "koch")
    assert ours.tasks == ["open", "close"]
    assert ours.features["next.reward"].shape == (1,) and ours.features[CAM].image
    for e in range(2):
        ep = ours.episode(e)
        assert (ep.info.task, ep.info.success, ep.info.complete) == (["open", "close"][e], None,
                                                                     True)
        assert ep.info.sources == {"scripted": len(ep)}
        start = int(theirs.meta.episodes[e]["dataset_from_index"])
        for t in range(len(ep)):
            item = theirs[start + t]
            for key in ("observation.state", "action", "next.reward"):
                np.testing.assert_array_equal(ep[key][t], item[key].numpy().reshape(-1))
            frame = np.round(item[CAM].numpy().transpose(1, 2, 0) * 255)
            assert np.abs(ep[CAM][t] - frame).mean() < 2  # lerobot's frame, through JPEG q90
            assert ep["timestamp"][t] == pytest.approx(t / 15)


# --------------------------------------------------------------------------- robomimic
def write_robomimic(path: Path, lengths: dict[str, int], *, broken: str | None = None) -> None:
    """A file laid out as robomimic's dataset_states_to_obs.py writes one (its docs' "Dataset
    Structure"): data/demo_N/{obs,next_obs}/*, actions, rewards, dones, states; attributes
    num_samples and model_file per demo, total and env_args on data; filter keys under mask/."""
    env_args = {"env_name": "Lift", "type": 1, "env_version": "1.5.1",
                "env_kwargs": {"robots": ["Panda"], "control_freq": 20, "camera_heights": 32,
                               "camera_widths": 32, "reward_shaping": False}}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for name, n in lengths.items():
            k = int(name.split("_")[1])
            g = data.create_group(name)
            obs = {"agentview_image": np.stack([smooth_image((32, 32, 3), 7 * k + t)
                                                for t in range(n + 1)]),
                   "robot0_eef_pos": np.arange((n + 1) * 3, dtype=np.float64).reshape(-1, 3) + k,
                   "object": np.full((n + 1, 10), 0.5 * k)}
            for key, v in obs.items():
                if broken == name and key == "object":
                    continue
                g.create_dataset(f"obs/{key}", data=v[:-1], compression="gzip")
                g.create_dataset(f"next_obs/{key}", data=v[1:], compression="gzip")
            g.create_dataset("actions", data=np.linspace(-1, 1, n * 7).reshape(n, 7) * (k + 1))
            g.create_dataset("states", data=np.arange(n * 12, dtype=np.float64).reshape(n, 12))
            g.create_dataset("rewards", data=(np.arange(n) == n - 1).astype(np.float64))
            g.create_dataset("dones", data=(np.arange(n) == n - 1).astype(np.int64))
            g.attrs["num_samples"] = n
            g.attrs["model_file"] = "<mujoco model='lift'>...</mujoco>"
        data.attrs["total"] = sum(lengths.values())
        data.attrs["env_args"] = json.dumps(env_args, indent=4)
        names = list(lengths)
        f["mask/train"] = np.array(names[:-1], dtype="S")
        f["mask/valid"] = np.array(names[-1:], dtype="S")


def test_robomimic_import_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "lift.hdf5"
    lengths = {"demo_0": 24, "demo_2": 20, "demo_10": 22}  # robomimic orders 2 before 10
    write_robomimic(src, lengths)
    out = tmp_path / "lift.zarr"
    code, _, err = run(capsys, "data", "import", str(src), str(out))  # format from .hdf5
    assert code == 0, err
    store = EpisodeStore.open(out)
    assert store.fps == 20.0 and store.robot_type == "Panda" and store.tasks == ["Lift"]
    assert set(store.features) == {"observation.images.agentview_image",
                                   "observation.robot0_eef_pos", "observation.object", "action",
                                   "next.reward", "next.done", "states"}
    assert store.features["observation.images.agentview_image"].image
    meta = store.summary()["metadata"]
    assert meta["robomimic"]["env_args"]["env_kwargs"]["robots"] == ["Panda"]
    assert meta["robomimic"]["filter_keys"] == ["train", "valid"]
    with h5py.File(src) as f:
        for e, name in enumerate(lengths):
            ep, g = store.episode(e), f["data"][name]
            assert ep.info.metadata["robomimic_demo"] == name and len(ep) == lengths[name]
            assert "robomimic_model_file" not in ep.info.metadata
            assert ep.info.tags == (("valid",) if name == "demo_10" else ("train",))
            assert ep.info.task == "Lift" and ep.info.sources == {"teleop": lengths[name]}
            for key, path in [("action", "actions"), ("next.reward", "rewards"),
                              ("next.done", "dones"), ("states", "states"),
                              ("observation.robot0_eef_pos", "obs/robot0_eef_pos"),
                              ("observation.object", "obs/object")]:
                np.testing.assert_array_equal(ep[key], g[path][()], err_msg=key)
                assert ep[key].dtype == g[path].dtype
            image = ep["observation.images.agentview_image"].astype(int)
            assert np.abs(image - g["obs/agentview_image"][()]).max() <= 3  # JPEG q90
    assert store.select(tags=["valid"]) == [2]
    run_dir = tmp_path / "run"
    code, _, err = run(capsys, "train", f"dataset={out}", f"output={run_dir}", "policy=mlp",
                       "steps=3", "batch_size=4", "num_workers=0", "log_every=1", "save_every=3",
                       "optim.warmup_steps=1", "policy_config.action_horizon=4",
                       "policy_config.n_action_steps=2", "-q")
    assert code == 0, err
    assert (run_dir / "checkpoints" / "last" / "policy" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in rows) == 3


# --------------------------------------------------------------------------- data show
def test_show_writes_a_video_with_a_moving_cursor(store: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ep1.mp4"
    code, _, err = run(capsys, "data", "show", str(store), "episode=1", f"output={out}")
    assert code == 0, err
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == LENGTHS[1]
    h, w, _ = frames[0].shape
    assert w > h > 200  # cameras beside the traces, not a bare camera frame
    changed = [np.abs(a.astype(int) - b).mean() > 0.05
               for a, b in zip(frames, frames[1:], strict=False)]
    assert all(changed)  # each step redraws the frames and moves the cursor
    code, _, err = run(capsys, "data", "show", str(store), "episode=1", f"output={out}")
    assert code == 1 and "already exists" in err


def test_show_without_cameras_writes_the_traces_as_png(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    feats = {k: v for k, v in FEATURES.items() if "images" not in k}
    with EpisodeStore.create(tmp_path / "low.zarr", feats, fps=10) as st, st.recorder() as rec:
        for t in range(8):
            rec.add({k: v for k, v in _frame(0, t).items() if k in feats})
        rec.end_episode(success=True)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "data", "show", str(tmp_path / "low.zarr"), "episode=-1")
    assert code == 0, err
    png = tmp_path / "low-episode0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05  # a drawn figure, not blank


# --------------------------------------------------------------------------- bad input
BadCase = Callable[[Path], list[str]]


def _narrow_camera(tmp: Path) -> list[str]:
    feats = {"observation.images.c": {"dtype": "uint8", "shape": [16, 16, 3]},
             "action": {"dtype": "float32", "shape": [1]}}
    with EpisodeStore.create(tmp / "narrow", feats, fps=10) as st, st.recorder() as rec:
        rec.add({"observation.images.c": np.zeros((16, 16, 3), np.uint8), "action": [0.0]})
        rec.end_episode()
    return ["data", "export", str(tmp / "narrow"), str(tmp / "out")]


def _v21_dataset(tmp: Path) -> list[str]:
    (tmp / "old" / "meta").mkdir(parents=True)
    (tmp / "old" / "meta" / "info.json").write_text(json.dumps(
        {"codebase_version": "v2.1", "fps": 30, "features": {}}))
    return ["data", "import", str(tmp / "old"), str(tmp / "out"), "format=lerobot"]


def _mismatched_demo(tmp: Path) -> list[str]:
    write_robomimic(tmp / "bad.hdf5", {"demo_0": 4, "demo_1": 4, "demo_2": 3}, broken="demo_2")
    return ["data", "import", str(tmp / "bad.hdf5"), str(tmp / "out")]


def _fractional_fps(tmp: Path) -> list[str]:
    feats = {"action": {"dtype": "float32", "shape": [1]}}
    with EpisodeStore.create(tmp / "slow", feats, fps=12.5) as st, st.recorder() as rec:
        rec.add({"action": [0.0]})
        rec.end_episode()
    return ["data", "export", str(tmp / "slow"), str(tmp / "out")]


def _lerobot_with_text_and_two_tasks(tmp: Path) -> Path:
    """Written by lerobot: a text feature, and an episode whose frames carry two tasks."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    feats = {"action": {"dtype": "float32", "shape": (1,), "names": None},
             "note": {"dtype": "string", "shape": (1,), "names": None}}
    ds = LeRobotDataset.create("them/text", fps=10, features=feats, root=tmp / "text")
    for t in range(4):
        ds.add_frame({"action": np.array([t], np.float32), "note": f"n{t}",
                      "task": "open" if t < 2 else "close"})
    ds.save_episode()
    ds.finalize()
    return tmp / "text"


def _empty_lerobot(tmp: Path) -> list[str]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    LeRobotDataset.create("them/empty", fps=10, root=tmp / "empty", features={
        "action": {"dtype": "float32", "shape": (1,), "names": None}}).finalize()
    return ["data", "import", str(tmp / "empty"), str(tmp / "out")]


def _text_feature(tmp: Path) -> list[str]:
    return ["data", "import", str(_lerobot_with_text_and_two_tasks(tmp)), str(tmp / "out")]


def _two_tasks(tmp: Path) -> list[str]:
    return [*_text_feature(tmp), "skip=[note]"]


def _truncated_parquet(tmp: Path) -> list[str]:
    src = _lerobot_with_text_and_two_tasks(tmp)
    data = next(src.glob("data/*/*.parquet"))
    data.write_bytes(data.read_bytes()[:100])
    return ["data", "import", str(src), str(tmp / "out"), "skip=[note]"]


def _damaged_demo(tmp: Path) -> list[str]:
    """The compressed bytes of the last demo's obs/object overwritten: found only while copying,
    after two demos went into the output."""
    write_robomimic(tmp / "d.hdf5", {"demo_0": 4, "demo_1": 4, "demo_2": 3})
    with h5py.File(tmp / "d.hdf5") as f:
        chunk = f["data/demo_2/obs/object"].id.get_chunk_info(0)
    with open(tmp / "d.hdf5", "r+b") as raw:
        raw.seek(chunk.byte_offset)
        raw.write(b"\xff" * chunk.size)
    return ["data", "import", str(tmp / "d.hdf5"), str(tmp / "out")]


def _not_hdf5(tmp: Path) -> list[str]:
    (tmp / "x.hdf5").write_text("not hdf5")
    return ["data", "import", str(tmp / "x.hdf5"), str(tmp / "out")]


def _no_control_freq(tmp: Path) -> list[str]:
    write_robomimic(tmp / "f.hdf5", {"demo_0": 3})
    with h5py.File(tmp / "f.hdf5", "a") as f:
        f["data"].attrs["env_args"] = json.dumps({"env_name": "Gym", "type": 2,
                                                  "env_kwargs": {}})
    return ["data", "import", str(tmp / "f.hdf5"), str(tmp / "out")]


@pytest.mark.parametrize(("make", "code", "words"), [
    (_narrow_camera, 1, ["16 px wide", "video=false"]),
    (_fractional_fps, 1, ["12.5 fps", "whole number"]),
    (_empty_lerobot, 1, ["no episodes to import"]),
    (_text_feature, 1, ["feature 'note'", "dtype 'string'", "skip=[note]"]),
    (_two_tasks, 1, ["episode 0: 2 tasks", "one task"]),
    (_truncated_parquet, 1, ["file-000.parquet", "not a readable parquet file"]),
    (_v21_dataset, 1, ["v2.1", "convert"]),
    (_mismatched_demo, 1, ["data/demo_2", "obs/object", "skip="]),
    (_damaged_demo, 1, ["data/demo_2", "damaged"]),
    (_not_hdf5, 1, ["not an HDF5 file"]),
    (_no_control_freq, 1, ["control_freq", "fps="]),
    (lambda tmp: ["data", "import", str(tmp), str(tmp / "out")], 2, ["cannot tell the format"]),
    (lambda tmp: ["data", "import", str(tmp / "none"), str(tmp / "out"), "format=lerobot"], 1,
     ["no such folder"]),
    (lambda tmp: ["data", "export", str(tmp), str(tmp / "out"), "format=rlds"], 2,
     ["unknown format 'rlds'", "lerobot"]),
    (lambda tmp: ["data", "export", str(tmp), str(tmp / "out")], 1,
     ["not a robolearn episode store"]),
    (lambda tmp: ["data", "show", str(_narrow_camera(tmp)[2]), f"output={tmp / 'out'}.gif"], 2,
     ["should end in .mp4"]),
    (lambda tmp: ["data", "show", str(_narrow_camera(tmp)[2]), "episode=1"], 1,
     ["no episode 1 (1 episodes)"]),
], ids=["narrow-camera", "fractional-fps", "empty-lerobot", "text-feature", "two-tasks",
        "truncated-parquet", "lerobot-v2.1", "robomimic-mismatch", "robomimic-damaged",
        "not-hdf5", "no-fps", "unknown-input", "missing-input", "unknown-format", "not-a-store",
        "show-wrong-suffix", "show-no-such-episode"])
def test_bad_input_one_line_and_no_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          make: BadCase, code: int, words: list[str]) -> None:
    args = make(tmp_path)
    capsys.readouterr()  # what making the input printed
    got, out, err = run(capsys, *args)
    assert got == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_existing_output_is_refused_and_left_alone(store: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for args in (["data", "export", str(store), str(mine)],
                 ["data", "import", str(tmp_path / "x.hdf5"), str(mine)]):
        code, _, err = run(capsys, *args)
        assert code == 1 and "already exists" in err, err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"


def test_a_failure_is_exactly_one_line_on_a_pipe(tmp_path: Path) -> None:
    """Through the real entry point with stderr on a pipe (a log, CI): the failure found after
    two demos were copied is the only line; no progress bar residue, no traceback."""
    args = _damaged_demo(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "robolearn.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robolearn data import: "), proc.stderr
    assert proc.stdout == "" and leftovers(tmp_path) == []
