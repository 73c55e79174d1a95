"""Window placement, sliding-window averaging, calibration."""

from __future__ import annotations

import pytest
import torch

from zegclip.model.inference import calibrate, slide_inference, window_starts


@pytest.mark.parametrize(
    ("length", "expected"),
    [(512, [0]), (300, [0]), (683, [0, 171]), (1000, [0, 426, 488]), (938, [0, 426])],
)
def test_window_starts(length, expected):
    # count = max(L - 512 + 425, 0) // 426 + 1; start = min(i * 426, L - 512) clipped at 0
    assert window_starts(length, 512, 426) == expected


def test_slide_averages_overlaps_exactly():
    images = torch.randn(2, 3, 40, 70)
    calls = []

    def score_fn(x):
        calls.append(x.shape[0])
        return x[:, :2] * 2  # position-wise: the average of identical values is that value

    out = slide_inference(score_fn, images, crop=32, stride=20, window_batch=3)
    assert out.shape == (2, 2, 40, 70)
    assert torch.allclose(out, images[:, :2] * 2, atol=1e-6)
    # windows: 2 rows x 3 columns per image -> 12, scored 3 at a time
    assert calls == [3, 3, 3, 3]


def test_slide_equals_whole_when_one_window_covers(tiny_model):
    images = torch.randn(1, 3, 48, 64)
    embeds = tiny_model.encode_text(["a", "b", "c"])
    whole = tiny_model.predict(images, embeds, mode="whole")
    slide = tiny_model.predict(images, embeds, mode="slide", crop=64, stride=48)
    assert torch.allclose(whole, slide, atol=1e-6)


def test_calibration_shifts_seen_only():
    scores = torch.rand(1, 3, 2, 2)
    out = calibrate(scores, torch.tensor([True, False, True]))
    assert torch.allclose(out[:, 0], scores[:, 0] - 0.1)
    assert torch.equal(out[:, 1], scores[:, 1])
    assert calibrate(scores, None) is scores
    with pytest.raises(ValueError, match="2 entries for 3 classes"):
        calibrate(scores, torch.tensor([True, False]))
