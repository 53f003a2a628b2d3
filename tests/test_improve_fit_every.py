"""``fit_every=episode``: the novice refitted after every episode that added training data
(ASkDAgger's Algorithm 1, step 5), on the simulated car: the next episode acts with the newer
fit, and a session SIGKILLed in the middle of an episode resumes with the fits it would have
had, the cut-off episode kept in its round."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.store import EpisodeStore
from policies.interactive import EnsembleConfig
from robolearn.cli import main
from robolearn.improve import ImproveConfig, Session
from robolearn.improve_data import NONE, History, aggregate
from robolearn_core.config import InvalidValue
from tests.improve_util import SETTING, rounds


def _args(demo: Path, out: Path) -> list[str]:
    return ["improve", str(demo), "method=askdagger", "fit_every=episode", "rounds=1",
            "episodes=3", "sag.n_min=5", f"output={out}", *SETTING]


def _acted_with_the_fits_before_them(demo: Path, out: Path) -> int:
    """Each episode of round 0 in ``out`` acted with the fit on the demonstrations and the
    episodes before it (the round's own fit for the first), its recorded uncertainty the
    fit's to 1e-4, and not the round's first fit's; the number of episodes."""
    session = Session(ImproveConfig(start=str(demo), method="askdagger",
                                    fit_every="episode", output=str(out),
                                    ensemble=EnsembleConfig(steps=600, members=3)))  # SETTING's
    with EpisodeStore.open(out / "session.zarr") as store:
        hist = History(session.obs_keys).update(store)
        eps = [store.episode(i) for i in range(len(store))]
    start = aggregate(session.demos, {})
    first = session.fit(start, 0, 0)  # the round's fit
    for e, ep in enumerate(eps):  # episode e's novice: the fit on the data before it
        before = {k: v[hist["episode"] < e] for k, v in hist.items()} if e else {}
        data = aggregate(session.demos, before)
        assert e == 0 or len(data.act) > len(start.act)  # each episode added training data
        ens = session.fit(data, 0, int((data.age > 0).sum()), len(data.act) - len(start.act))
        obs = {k: np.asarray(ep[k], np.float32) for k in session.obs_keys}
        np.testing.assert_allclose(ens.predict(obs)[1], ep["interactive.uncertainty"],
                                   rtol=1e-4, atol=1e-6)
        if e:  # not the round's first fit, which the first episode acted with
            assert not np.allclose(first.predict(obs)[1], ep["interactive.uncertainty"],
                                   rtol=1e-2)
    assert (np.concatenate([ep["interactive.event"] for ep in eps]) != NONE).any()
    return len(eps)


def test_each_episode_acts_with_the_fit_on_the_labels_before_it(tiny_demo: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "ask"
    assert main(_args(tiny_demo, out)) == 0
    row = rounds(out)[0]
    assert row["fits"] == 3, row  # the round's fit, then one after each of 2 episodes
    assert _acted_with_the_fits_before_them(tiny_demo, out) == 3


def test_a_round_killed_mid_episode_resumes_with_the_fits_it_would_have_had(
        tiny_demo: Path, tmp_path: Path) -> None:
    """SIGKILLed inside its second episode (after a block of its steps reached the store),
    the session resumes in round 0: the cut-off episode is kept as an incomplete episode of
    round 0 (its labels were given), and the next acts with the fit on everything before."""
    killed = tmp_path / "killed"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "robolearn.cli", *_args(tiny_demo, killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(root), os.environ.get("PYTHONPATH", "")])})
    deadline = time.time() + 240
    store, journal = killed / "session.zarr", killed / "session.zarr" / "inflight.json"

    def committed() -> int:  # read while the session writes
        if not (store / "zarr.json").exists():
            return 0
        with EpisodeStore.open(store) as live:
            return len(live)

    # the journal exists while an episode's flushed steps are not yet committed
    while time.time() < deadline and proc.poll() is None and not (
            journal.exists() and committed() == 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the session ended before it was killed"
    assert not (killed / "rounds.jsonl").exists()  # killed inside round 0
    assert main(_args(tiny_demo, killed)) == 0  # resumes there
    assert [r["round"] for r in rounds(killed)] == [0, 1]
    with EpisodeStore.open(store) as s:
        infos = s.infos()
    assert [i.complete for i in infos] == [True, False, True]
    assert infos[1].metadata["round"] == 0 and "recovered" in infos[1].tags
    assert _acted_with_the_fits_before_them(tiny_demo, killed) == 3


@pytest.mark.parametrize("method", ["thrifty", "rlif"])
def test_fit_every_episode_is_refused_where_it_does_not_apply(method: str) -> None:
    with pytest.raises(InvalidValue, match="fit_every"):
        ImproveConfig(start="x", method=method, fit_every="episode")
    with pytest.raises(InvalidValue, match="fit_every"):
        ImproveConfig(start="x", fit_every="step")
    with pytest.raises(InvalidValue, match="fit_every"):
        ImproveConfig(start="x", method="hgdagger", fit_every="episode",
                      keep="fewest_takeovers")
