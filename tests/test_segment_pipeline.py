"""One test-time pipeline: zegclip.segment scores an image exactly as evaluation does."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from zegclip.data.transforms import ShortSideResize, eval_transform
from zegclip.model import ZegCLIP
from zegclip.model.build import zegclip_tiny
from zegclip.segmentation import encode_vocabulary, parse_vocabulary, segment

SHORT, CROP, STRIDE = 64, 64, 48
CLASSES = "cat; grass, lawn; sky; road"


@pytest.fixture(scope="module")
def model() -> ZegCLIP:
    torch.manual_seed(0)
    return zegclip_tiny().eval()


def _evaluation_scores(model: ZegCLIP, image: np.ndarray, seen: list[bool] | None, mode: str) -> torch.Tensor:
    """The validation path: the datamodule's eval_transform, a collated batch, predict_labels' call."""
    transform = eval_transform(SHORT)  # SegDataModule: eval_transform(self.eval_short_side)
    label = np.zeros(image.shape[:2], np.uint8)
    out = transform(image=image, mask=label)  # SegDataset.__getitem__
    batch = default_collate([{"image": out["image"], "label": out["mask"]}])
    class_embeds = encode_vocabulary(model, parse_vocabulary(CLASSES))
    return model.predict(  # ZegCLIPModule.predict_labels, before its argmax
        batch["image"],
        class_embeds,
        seen_mask=seen,
        mode=mode,
        crop=CROP,
        stride=STRIDE,
        window_batch=8,
        shift=0.1,
        output_size=tuple(batch["label"].shape[-2:]),
    )[0]


@pytest.mark.parametrize(("mode", "seen"), [("slide", None), ("whole", None), ("slide", ["lawn", "sky"])])
def test_segment_scores_equal_the_evaluation_path(model: ZegCLIP, mode: str, seen: list[str] | None) -> None:
    image = np.random.default_rng(3).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)  # odd sizes: 64 x 92
    result = segment(model, image, CLASSES, seen=seen, mode=mode, short_side=SHORT, crop=CROP, stride=STRIDE)
    mask = None if seen is None else [False, True, True, False]
    expected = _evaluation_scores(model, image, mask, mode)
    assert result.scores.shape == expected.shape == (4, 37, 53)
    assert torch.equal(result.scores, expected)
    np.testing.assert_array_equal(result.labels, expected.argmax(0).numpy())


def test_evaluation_resize_is_a_uint8_opencv_bilinear_resize() -> None:
    """ShortSideResize (evaluation) is mmseg's resize: OpenCV bilinear on uint8, short side 37 -> 64,
    53 x 64 / 37 = 91.7 -> 92 (not a float torch resize, which rounds differently)."""
    image = np.random.default_rng(4).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    resized = ShortSideResize(SHORT).apply(image)
    assert resized.dtype == np.uint8 and resized.shape == (64, 92, 3)
    np.testing.assert_array_equal(resized, cv2.resize(image, (92, 64), interpolation=cv2.INTER_LINEAR))
