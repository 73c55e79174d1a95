"""Augmentation pipelines: mmseg 0.x semantics, image/label alignment, seeding."""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from zegclip.data.transforms import (
    MEAN,
    STD,
    ClassRatioRandomCrop,
    PhotoMetricDistortion,
    RatioRangeRescale,
    SeededTransform,
    crop_is_balanced,
    eval_transform,
    rescale_size,
    train_transform,
)
from zegclip.resize import short_side_size

PALETTE = np.array(
    [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230], [230, 20, 230]],
    dtype=np.uint8,
)


def seeded(compose: A.Compose, seed: int) -> A.Compose:
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return compose


def block_sample(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Label of random 24-px blocks of classes 0..5 (some 255); image coloured by class."""
    cells = rng.integers(0, 7, size=(-(-height // 24), -(-width // 24)))
    cells[cells == 6] = 255
    label = np.kron(cells, np.ones((24, 24), dtype=np.int64))[:height, :width].astype(np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    known = label != 255
    image[known] = PALETTE[label[known]]
    return image, label


def test_rescale_size_follows_mmcv_rounding() -> None:
    # 500 x 375, scale (2048, 512): factor = min(2048/500, 512/375) = 1.3653...
    assert rescale_size(500, 375, (2048, 512)) == (683, 512)
    # factor = min(200/99, 50/70) = 0.714...; width 99 * 0.714 = 70.71 -> int(71.21) = 71
    assert rescale_size(99, 70, (200, 50)) == (71, 50)
    # the one test-size rule, (height, width) order (zegclip.model.inference)
    assert short_side_size(375, 500, 512) == (512, 683)
    assert short_side_size(500, 333, 512) == (769, 512)  # 500 * 512/333 = 768.77


def test_ratio_rescale_truncates_the_target_scale() -> None:
    # r = 1.3: target (int(2662.4), int(665.6)) = (2662, 665); factor 665/375 -> 887 x 665
    # (without truncating the target the height would be int(666.1) = 666)
    t = A.Compose([RatioRangeRescale((2048, 512), (1.3, 1.3))])
    out = t(image=np.zeros((375, 500, 3), np.uint8), mask=np.zeros((375, 500), np.uint8))
    assert out["image"].shape == (665, 887, 3) and out["mask"].shape == (665, 887)


def test_rescale_label_is_nearest() -> None:
    t = seeded(A.Compose([RatioRangeRescale((2048, 512), (0.5, 2.0))]), 0)
    rng = np.random.default_rng(0)
    image, label = block_sample(rng, 96, 120)
    for _ in range(5):
        out = t(image=image, mask=label)
        assert set(np.unique(out["mask"])) <= set(np.unique(label))


@pytest.mark.parametrize("seed", range(4))
def test_train_pipeline_keeps_image_and_label_aligned(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image, label = block_sample(rng, 150, 200)
    t = seeded(train_transform(64, (200, 100), (0.5, 2.0), photometric=False, normalize=False), seed)
    for _ in range(6):
        out = t(image=image, mask=label)
        img = out["image"].permute(1, 2, 0).numpy()  # 64 x 64 x 3 float
        lab = out["mask"].numpy()
        assert img.shape == (64, 64, 3) and lab.shape == (64, 64)
        # interior pixels (5 x 5 neighbourhood of one class, not 255): the nearest palette
        # colour must be the class; boundary pixels mix colours through bilinear resizing
        # (so do the crop's edge pixels, whose neighbours were cut off)
        lab8 = lab.astype(np.uint8)
        kernel = np.ones((5, 5), np.uint8)
        known = (cv2.erode(lab8, kernel) == cv2.dilate(lab8, kernel)) & (lab != 255)
        known[:2], known[-2:], known[:, :2], known[:, -2:] = False, False, False, False
        assert known.sum() > 200
        dist = ((img[known][:, None, :] - PALETTE[None].astype(np.float32)) ** 2).sum(-1)
        agree = (dist.argmin(1) == lab[known]).mean()
        assert agree >= 0.995, agree
    assert out["image"].dtype == torch.float32 and out["mask"].dtype == torch.int64


def test_alignment_check_detects_a_misaligned_label() -> None:
    """The check above can fail: a label flipped without its image disagrees."""
    image, label = block_sample(np.random.default_rng(1), 96, 96)
    dist = ((image[:, ::-1].reshape(-1, 1, 3).astype(np.float32) - PALETTE[None]) ** 2).sum(-1)
    known = label.ravel() != 255
    assert (dist.argmin(1)[known] == label.ravel()[known]).mean() < 0.9


def test_crop_rule_picks_a_balanced_crop_when_one_exists() -> None:
    # 256 x 256 of class 0 with one 96 x 96 block of class 1: ~29% of 64-px crops pass the
    # rule, so 1 + 10 draws pass with probability ~97%
    label = np.zeros((256, 256), np.uint8)
    label[100:196, 100:196] = 1
    image = np.zeros((256, 256, 3), np.uint8)

    def balanced_fraction(cat_max_ratio: float) -> float:
        crop = ClassRatioRandomCrop(64, 64, cat_max_ratio=cat_max_ratio)
        t = seeded(A.Compose([crop]), 0)
        hits = [crop_is_balanced(t(image=image, mask=label)["mask"], 0.75, 255) for _ in range(200)]
        return float(np.mean(hits))

    assert balanced_fraction(1.0) < 0.4  # without the rule most crops fail it
    assert balanced_fraction(0.75) > 0.93  # with 10 retries almost all pass


def test_crop_rule_counts_ignore_and_keeps_small_sides() -> None:
    assert not crop_is_balanced(np.array([[0, 0, 255, 255]], np.uint8), 0.75, 255)
    assert crop_is_balanced(np.array([[0, 1, 255, 255]], np.uint8), 0.75, 255)
    assert not crop_is_balanced(np.array([[0, 0, 0, 1]], np.uint8), 0.75, 255)
    t = A.Compose([ClassRatioRandomCrop(64, 64)])
    out = t(image=np.zeros((40, 100, 3), np.uint8), mask=np.zeros((40, 100), np.uint8))
    assert out["image"].shape == (40, 64, 3) and out["mask"].shape == (40, 64)


def test_pad_fills_image_zero_and_label_ignore() -> None:
    image = np.full((40, 60, 3), 200, np.uint8)
    label = np.ones((40, 60), np.uint8)
    label[:, :30] = 2
    t = train_transform(64, (60, 40), (1.0, 1.0), photometric=False)
    out = t(image=image, mask=label)
    img, lab = out["image"].numpy(), out["mask"].numpy()  # 3 x 64 x 64, 64 x 64
    assert img.shape == (3, 64, 64)
    assert (img[:, 40:] == 0).all() and (img[:, :, 60:] == 0).all()
    assert (lab[40:] == 255).all() and (lab[:, 60:] == 255).all()
    assert set(np.unique(lab[:40, :60])) == {1, 2}
    expected = (200 - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(img[:, 0, 0], expected, rtol=1e-5)


def test_train_pipeline_applies_the_label_lut_after_the_crop() -> None:
    lut = np.full(256, 255, np.uint8)
    lut[1] = 0
    lut[2] = 254
    label = np.ones((40, 60), np.uint8)
    label[:, :30] = 2
    t = train_transform(64, (60, 40), (1.0, 1.0), label_lut=lut, photometric=False)
    lab = t(image=np.zeros((40, 60, 3), np.uint8), mask=label)["mask"].numpy()
    assert set(np.unique(lab[:40, :60])) == {0, 254} and (lab[40:] == 255).all()


def test_eval_transform_short_side_and_untouched_label() -> None:
    label = np.random.default_rng(0).integers(0, 20, (375, 500)).astype(np.uint8)
    out = eval_transform(512)(image=np.zeros((375, 500, 3), np.uint8), mask=label)
    assert out["image"].shape == (3, 512, 683)
    np.testing.assert_array_equal(out["mask"].numpy(), label)
    tall = np.zeros((500, 333), np.uint8)
    out = eval_transform(512)(image=np.zeros((500, 333, 3), np.uint8), mask=tall)
    assert out["image"].shape == (3, 769, 512) and out["mask"].shape == (500, 333)


def test_eval_resize_is_opencv_bilinear_on_uint8_without_a_long_side_cap() -> None:
    """The authors' mmseg resize (cv2 bilinear, uint8); evaluation never caps extreme aspect ratios."""
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    out = eval_transform(64, normalize=False)(image=image, mask=np.zeros((37, 53), np.uint8))["image"]
    resized = cv2.resize(image, (92, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out.numpy(), resized.transpose(2, 0, 1).astype(np.float32))
    strip = np.zeros((10, 200, 3), np.uint8)  # 20:1, capped by zegclip.segment but not here
    out = eval_transform(64, normalize=False)(image=strip, mask=np.zeros((10, 200), np.uint8))["image"]
    assert out.shape == (3, 64, 1280)


def test_photometric_changes_only_the_image_and_stays_uint8() -> None:
    rng = np.random.default_rng(0)
    image, label = block_sample(rng, 64, 64)
    t = seeded(A.Compose([PhotoMetricDistortion(step_p=1.0)]), 0)
    out = t(image=image, mask=label)
    assert out["image"].dtype == np.uint8 and out["image"].shape == image.shape
    assert not np.array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], label)


def _mmseg_reference(img: np.ndarray, b: float, c: float, s: float, h: int, first: bool):
    """mmseg 0.x PhotoMetricDistortion written out step by step (BGR as mmcv loads)."""

    def convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    bgr = img[..., ::-1].copy()
    bgr = convert(bgr, beta=b)
    if first:
        bgr = convert(bgr, alpha=c)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[..., 1] = convert(hsv[..., 1], alpha=s)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + h) % 180
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if not first:
        bgr = convert(bgr, alpha=c)
    return bgr[..., ::-1]


@pytest.mark.parametrize("first", [True, False])
def test_photometric_matches_mmseg_on_bgr(first: bool) -> None:
    img = np.random.default_rng(3).integers(0, 256, (32, 48, 3)).astype(np.uint8)
    params = {"brightness": 20.7, "contrast": 1.37, "saturation": 0.61, "hue": -15}
    out = PhotoMetricDistortion().apply(img, contrast_first=first, **params)
    ref = _mmseg_reference(img, 20.7, 1.37, 0.61, -15, first)
    np.testing.assert_array_equal(out, ref)


def test_photometric_hue_wraps_mod_180() -> None:
    hsv = np.zeros((4, 4, 3), np.uint8)
    hsv[..., 0], hsv[..., 1], hsv[..., 2] = 175, 255, 255
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    out = PhotoMetricDistortion().apply(img, hue=10)
    hue = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[..., 0]
    assert np.abs(hue.astype(int) - 5).max() <= 1  # (175 + 10) % 180 = 5, not 185 or 255
    # sampled shifts lie in numpy's [-18, 18)
    t = PhotoMetricDistortion(step_p=1.0)
    t.set_random_seed(0)
    hues = {t.get_params()["hue"] for _ in range(400)}
    assert min(hues) == -18 and max(hues) == 17


def test_seeded_transform_per_seed_and_rank() -> None:
    image, label = block_sample(np.random.default_rng(0), 150, 200)

    def crops(seed: int, rank: int) -> list[np.ndarray]:
        t = SeededTransform(train_transform(64, (200, 100), photometric=False), rank=rank)
        torch.manual_seed(seed)
        return [t(image=image, mask=label)["mask"].numpy() for _ in range(3)]

    a, b = crops(1, 0), crops(1, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c, d = crops(2, 0), crops(1, 1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d, strict=True))
