"""HIL-SERL in practice: an actor learning from a reward classifier's verdict alone, the
classifier trained on labelled frames and reviewed episodes, interventions marked and added to
RLPD's offline half, the scripted expert taking over as a simulated teacher."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data.schema import Source
from robolearn.practice.link import LinkServer
from robolearn_core.config import ConfigError
from tests.practice_util import ROOT, FakeLearner, cli


# ---------------------------------------------------------------------- HIL-SERL's reward
@pytest.mark.parametrize("threshold", [-1.0, 1.0])
def test_an_actor_with_a_reward_classifier_learns_from_its_verdict_alone(
        tmp_path: Path, threshold: float) -> None:
    """threshold -1: every frame is a success (reward 1, each episode ends at once);
    threshold 1: none is (reward 0, though the arm task's own shaped reward is not)."""
    from policies.reward_classifier import ClassifierConfig, RewardClassifier

    RewardClassifier(ClassifierConfig(threshold=threshold)).save(tmp_path / "clf")
    learner = FakeLearner()
    got: list[dict[str, np.ndarray]] = []

    def receive(aid: str, first: int, arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        got.append(arrays)
        return learner.receive(aid, first, arrays)

    server = LinkServer("127.0.0.1:0", learner.hello, receive).start()
    try:
        proc = subprocess.run(cli(
            "actor", server.address, "env=robolearn/SimArmLift-v0", "robot.cameras=[front]",
            f"output={tmp_path / 'a'}", "env_steps=40", "time_scale=10",
            f"reward_classifier={tmp_path / 'clf'}"), cwd=ROOT, timeout=180)
        assert proc.returncode == 0
    finally:
        server.stop(0)
    reward = np.concatenate([a["reward"] for a in got])
    done = np.concatenate([a["done"] for a in got])
    assert len(reward) == 40
    assert (reward == (threshold < 0)).all() and (done == (threshold < 0)).all()
    from data import EpisodeStore

    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        assert store.num_frames == 40
        assert len(store) == (40 if threshold < 0 else 1)  # a success ends the episode
        env_reward = np.concatenate([store.episode(i, ["next.reward"])["next.reward"]
                                     for i in range(len(store))])
    assert np.abs(env_reward).sum() > 0  # the env's own reward is kept in the store


def test_the_reward_classifier_learns_labelled_frames(tmp_path: Path) -> None:
    from bench.practice import record_labelled
    from robolearn.practice.reward_cmd import RewardTrainConfig, train

    record_labelled(tmp_path / "frames.zarr", 12)
    cfg = RewardTrainConfig(store=str(tmp_path / "frames.zarr"), output=str(tmp_path / "m"),
                            holdout=3)
    cfg.classifier.steps = 1000
    assert train(cfg) == 0
    heldout = json.loads((tmp_path / "m" / "eval.json").read_text())["heldout"]
    assert heldout["positives"] > 0 and heldout["precision"] >= 0.8 and \
        heldout["recall"] >= 0.5, heldout
    # the baseline: the same network untrained, on the same held-out frames
    from policies.reward_classifier import RewardClassifier, precision_recall
    from robolearn.practice.reward_cmd import load_labelled

    x, y = load_labelled(str(tmp_path / "frames.zarr"), cfg.classifier.cameras,
                         "label.success", range(9, 12))
    untrained = precision_recall(RewardClassifier(cfg.classifier), x, y)
    assert untrained["precision"] + untrained["recall"] < \
        heldout["precision"] + heldout["recall"] - 0.3, untrained

    # HIL-SERL's next round: reviewed practice episodes join the training frames (every
    # frame of a failed one a failure, the last frame of a successful one a success)
    from data import EpisodeStore
    from robolearn.practice.reward_cmd import load_reviewed

    cam = "observation.images.front"
    with EpisodeStore.open(tmp_path / "frames.zarr", "r") as store:
        failed = [i for i, info in enumerate(store.infos()) if info.success is False]
        want = np.concatenate([store.episode(i)[cam] if i in failed
                               else store.episode(i)[cam][-1:] for i in range(len(store))])
    assert failed == [2, 5, 8, 11]  # the random policy's episodes
    xr, yr = load_reviewed(str(tmp_path / "frames.zarr"), [cam])
    np.testing.assert_array_equal(xr[cam], want)
    assert int(yr.sum()) == 8 and len(yr) == len(want)
    again = RewardTrainConfig(store=str(tmp_path / "frames.zarr"), output=str(tmp_path / "m2"),
                              holdout=3, reviewed=[str(tmp_path / "frames.zarr")])
    again.classifier.steps = 5
    assert train(again) == 0
    report = json.loads((tmp_path / "m2" / "eval.json").read_text())
    assert (report["reviewed_frames"], report["reviewed_positives"]) == (len(want), 8)
    assert report["train_frames"] == \
        json.loads((tmp_path / "m" / "eval.json").read_text())["train_frames"] + len(want)
    with pytest.raises(ConfigError, match="reviewed: .* lacks .*wrist"):
        load_reviewed(str(tmp_path / "frames.zarr"), ["observation.images.wrist"])


def test_interventions_are_marked_and_join_the_offline_half(tmp_path: Path) -> None:
    """A takeover during practice: its steps reach the learner marked, and the learner adds
    them to RLPD's offline half (HIL-SERL); the store marks them as interventions."""
    from bench.practice import record_demo
    from robolearn.practice.actor import Actor, ActorConfig
    from robolearn.practice.learner import Learner, schema_for
    from robolearn_core.config import load_config

    class Takeover:  # hands on the controls for steps 5..9
        def __init__(self) -> None:
            self.calls = 0

        def get_action(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
            self.calls += 1
            return np.array([0.0, 0.5]) if 6 <= self.calls <= 10 else None

    record_demo(tmp_path / "demo.zarr", speed=2.0)
    overrides = [f"output={tmp_path / 'learner'}", "policy=rlpd",
                 f"dataset={tmp_path / 'demo.zarr'}", "start_after=100000"]
    learner = Learner(load_config(schema_for(None, overrides), None, overrides))
    demos = None
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive).start()
    try:
        cfg = ActorConfig(learner=server.address, output=str(tmp_path / "a"), env_steps=20,
                          time_scale=10)
        (tmp_path / "learner").mkdir()
        assert Actor(cfg, teleop=Takeover()).run() == 0
        assert learner.offline is not None
        demos = len(learner.offline) - learner.interventions
    finally:
        server.stop(0)
    assert learner.received == 20 and learner.interventions == 5
    assert learner.online is not None and len(learner.online) == 20
    assert demos is not None and demos > 200  # the demo lap, then the 5 takeover steps
    from data import EpisodeStore

    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        marked = sum(store.info(i).sources.get("intervention", 0) for i in range(len(store)))
    assert marked == 5


def test_the_scripted_expert_takes_over_as_a_simulated_teacher(tmp_path: Path) -> None:
    """``teleop=expert``: the scripted expert takes over by its random rule (HIL-SERL's
    interventions, unattended); its steps are the expert's actions, marked in the store and
    counted by the learner. A rule that needs the policy's plan is refused by name."""
    from robolearn.practice.actor import Actor, ActorConfig
    from robolearn.practice.learner import Learner, schema_for
    from robolearn_core.config import InvalidValue, load_config

    overrides = [f"output={tmp_path / 'learner'}", "policy=sac", "start_after=100000"]
    learner = Learner(load_config(schema_for(None, overrides), None, overrides))
    server = LinkServer("127.0.0.1:0", learner.hello, learner.receive).start()
    try:
        (tmp_path / "learner").mkdir()
        with pytest.raises(InvalidValue, match="distance"):
            Actor(ActorConfig(learner=server.address, output=str(tmp_path / "d"), env_steps=5,
                              teleop="expert", teleop_config={"rule": "distance"})).run()
        cfg = ActorConfig(learner=server.address, output=str(tmp_path / "a"), env_steps=60,
                          time_scale=10, teleop="expert",
                          teleop_config={"p": 0.1, "hold": 5})
        assert Actor(cfg).run() == 0
    finally:
        server.stop(0)
    from data import EpisodeStore

    marked = json.loads((tmp_path / "a" / "actor.json").read_text())["interventions"]
    assert 5 <= marked < 60 and learner.interventions == marked
    with EpisodeStore.open(tmp_path / "a" / "episodes.zarr", "r") as store:
        assert sum(i.sources.get("intervention", 0) for i in store.infos()) == marked
        runs = []  # lengths of the takeovers: the rule holds each for 5 steps
        for i in range(len(store)):
            src = store.episode(i, ["source"])["source"] == int(Source.INTERVENTION)
            edges = np.flatnonzero(np.diff(np.r_[0, src.astype(int), 0]))
            runs += [(int(b - a), int(b) == len(src))
                     for a, b in zip(edges[::2], edges[1::2], strict=True)]
    # (two takeovers back to back make one run of 10)
    assert runs and all(n % 5 == 0 or at_end for n, at_end in runs), runs
