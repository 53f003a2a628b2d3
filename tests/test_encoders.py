"""The camera encoder's random-shift augmentation (EncoderConfig.random_shift)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from policies.encoders import EncoderConfig, ImageEncoder, random_shift
from robolearn_core.config import InvalidValue


def test_random_shift_is_a_window_of_the_padded_frame() -> None:
    torch.manual_seed(0)
    pad = 3
    x = torch.rand(16, 3, 12, 10)
    y = random_shift(x, pad)
    assert y.shape == x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = set()
    for i in range(len(x)):  # each frame is exactly one whole-pixel window, within +-pad
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(padded[i, :, dy:dy + 12, dx:dx + 10], y[i])]
        assert hits, f"frame {i} is not a shifted window of its input"
        offsets.add(hits[0])
    assert len(offsets) > 1  # frames get different shifts


def test_encoder_shifts_only_while_training() -> None:
    torch.manual_seed(0)
    enc = ImageEncoder(3, EncoderConfig(random_shift=4))
    x = torch.rand(8, 3, 32, 32)
    enc.eval()
    assert torch.equal(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))
    plain = ImageEncoder(3, EncoderConfig())  # default: off, training is deterministic
    plain.train()
    assert torch.equal(plain(x), plain(x))


def test_negative_shift_is_rejected_naming_the_key() -> None:
    with pytest.raises(InvalidValue, match="random_shift"):
        EncoderConfig(random_shift=-1)
