"""The real-path observation checks of bench/vision_lift_checks.py: JPEG, encoder grid, lag."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.vision_lift_checks import STEP_RAD, RealPathObs, jpeg_roundtrip, quantise_state


class Recorder:
    """A policy that remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.resets: list[int | None] = []

    def reset(self, seed: int | None = None) -> None:
        self.resets.append(seed)

    def select_action(self, obs: dict[str, Any]) -> np.ndarray:
        self.seen.append(obs)
        return np.zeros(6, np.float32)


def _frame(value: int) -> np.ndarray:
    frame = np.full((32, 32, 3), value, np.uint8)  # smooth: JPEG keeps it within a few levels
    frame[8:24, 8:24] = value + 100
    return frame


def test_jpeg_roundtrip_is_lossy_but_close_and_keeps_rgb_order() -> None:
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[..., 0] = 200  # pure red: a swapped channel order would turn it blue
    frame[10:20, 10:20] = np.random.default_rng(0).integers(0, 255, (10, 10, 3))
    out = jpeg_roundtrip(frame, 90)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frame)  # JPEG loses something
    assert abs(int(out[2, 2, 0]) - 200) < 8 and out[2, 2, 2] < 8
    assert np.abs(out.astype(int) - frame).mean() < np.abs(
        jpeg_roundtrip(frame, 10).astype(int) - frame).mean()


def test_quantise_state_puts_positions_and_velocities_on_the_encoder_grid() -> None:
    state = np.random.default_rng(1).uniform(-2, 2, 12).astype(np.float32)
    q = quantise_state(state)
    steps = q.astype(np.float64) / STEP_RAD
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(q - state).max() <= STEP_RAD / 2 + 1e-6
    assert not np.array_equal(q, state)


def test_real_path_obs_degrades_and_lags_the_frame_and_resets() -> None:
    policy = Recorder()
    wrapped = RealPathObs(policy, jpeg_quality=90, quantise=True, camera_lag=1)
    wrapped.reset(seed=7)
    frames = [_frame(v) for v in (10, 50, 90)]
    state = np.full(12, 0.1234567, np.float32)
    for f in frames:
        wrapped.select_action({"observation.images.front": f, "observation.state": state})
    shown = [o["observation.images.front"] for o in policy.seen]
    # step 0 sees its own frame (nothing older), then each step sees the previous one
    for got, want in zip(shown, [frames[0], frames[0], frames[1]], strict=True):
        assert np.abs(got.astype(int) - want).mean() < 4
    assert np.abs(shown[2].astype(int) - frames[2]).mean() > 20
    assert policy.seen[0]["observation.state"][0] != state[0]
    wrapped.reset(seed=8)  # a new episode forgets the old frames
    wrapped.select_action({"observation.images.front": frames[2], "observation.state": state})
    assert np.abs(policy.seen[-1]["observation.images.front"].astype(int) - frames[2]).mean() < 4
    assert policy.resets == [7, 8]


def test_clean_path_passes_observations_through() -> None:
    policy = Recorder()
    obs = {"observation.images.front": _frame(3), "observation.state": np.ones(12, np.float32)}
    RealPathObs(policy).select_action(obs)
    for key, value in obs.items():
        assert np.array_equal(policy.seen[0][key], value)


@pytest.mark.parametrize("kwargs", [{"jpeg_quality": 0}, {"camera_lag": -1}])
def test_bad_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RealPathObs(Recorder(), **kwargs)
