"""Training and evaluation pipelines with mmsegmentation 0.x semantics (docs/method.md §6-7).

Built from albumentations 2.0.8 pieces plus small custom transforms for what it lacks:
`RatioRangeRescale` (mmseg ``Resize(img_scale, ratio_range)``), `ClassRatioRandomCrop`
(mmseg ``RandomCrop(cat_max_ratio)``), `PhotoMetricDistortion` (mmseg's, on uint8),
`ShortSideResize` (the test-time resize), `RemapLabels` (a uint8 lookup table on the
label) and `ToTensors`.

Randomness: every transform draws from the Compose's ``random_generator`` (numpy
``Generator``) and ``py_random``. `SeededTransform` re-seeds them from
``torch.initial_seed()`` and a rank the first time it runs in a process, so each
DataLoader worker (whose torch seed is ``base_seed + worker_id``, ``base_seed`` drawn from
the main process's torch RNG, which ``seed_everything`` fixes) gets its own reproducible
stream, and DDP ranks differ.
"""

from __future__ import annotations

import random
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from zegclip.constants import IGNORE_INDEX
from zegclip.resize import resize_short_side

__all__ = [
    "MEAN",
    "STD",
    "ClassRatioRandomCrop",
    "PhotoMetricDistortion",
    "RatioRangeRescale",
    "RemapLabels",
    "SeededTransform",
    "ShortSideResize",
    "ToTensors",
    "crop_is_balanced",
    "eval_transform",
    "rescale_size",
    "train_transform",
]

MEAN = (123.675, 116.28, 103.53)
"""RGB mean on 0..255 (CLIP's, as in the released configs)."""
STD = (58.395, 57.12, 57.375)


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """New (width, height) of mmcv ``imrescale(img, scale)`` keeping the aspect ratio.

    factor = min(max(scale) / long side, min(scale) / short side); each side becomes
    ``int(side * factor + 0.5)``.
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


class RatioRangeRescale(A.DualTransform):
    """mmseg ``Resize(img_scale=scale, ratio_range=ratio_range, keep_ratio=True)``.

    Draws r ~ U[ratio_range), target scale ``(int(scale[0] * r), int(scale[1] * r))``, then
    rescales with `rescale_size`; image bilinear, label nearest.
    """

    def __init__(
        self,
        scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        low, high = self.ratio_range
        ratio = self.random_generator.random() * (high - low) + low
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return {"size": rescale_size(width, height, target)}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio_range")


def crop_is_balanced(label: np.ndarray, cat_max_ratio: float, ignore_index: int) -> bool:
    """mmseg's crop rule: > 1 class (ignore excluded) and the largest < cat_max_ratio."""
    counts = np.bincount(label.ravel(), minlength=256)
    counts[ignore_index] = 0
    counts = counts[counts > 0]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


class ClassRatioRandomCrop(A.DualTransform):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio)``.

    Offsets uniform over the valid range; a side shorter than the crop is kept whole.
    As mmseg does: draw a crop, then up to ``max_tries`` times check it against the rule
    (`crop_is_balanced`) and draw again when it fails; the crop drawn after the last
    failed check is kept unchecked. ``cat_max_ratio >= 1`` disables the rule.
    Needs the ``mask`` target.
    """

    def __init__(
        self,
        height: int = 512,
        width: int = 512,
        cat_max_ratio: float = 0.75,
        ignore_index: int = IGNORE_INDEX,
        max_tries: int = 10,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.height, self.width = height, width
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def _draw(self, height: int, width: int) -> tuple[int, int, int, int]:
        y1 = int(self.random_generator.integers(0, max(height - self.height, 0) + 1))
        x1 = int(self.random_generator.integers(0, max(width - self.width, 0) + 1))
        return y1, y1 + self.height, x1, x1 + self.width

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        box = self._draw(height, width)
        if self.cat_max_ratio < 1.0:
            mask = data["mask"]
            for _ in range(self.max_tries):
                y1, y2, x1, x2 = box
                if crop_is_balanced(mask[y1:y2, x1:x2], self.cat_max_ratio, self.ignore_index):
                    break
                box = self._draw(height, width)
        return {"box": box}

    def apply(self, img: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        y1, y2, x1, x2 = box
        return img[y1:y2, x1:x2]

    def apply_to_mask(self, mask: np.ndarray, box: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        y1, y2, x1, x2 = box
        return mask[y1:y2, x1:x2]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg ``PhotoMetricDistortion.convert``: float32 affine, clip, truncate to uint8.

    The result depends on each uint8 value alone, so it is computed once per value (same
    float32 arithmetic) and applied as a lookup table: identical output, ~10x faster.
    """
    lut = np.clip(np.arange(256, dtype=np.float32) * alpha + beta, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(img), lut)


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg 0.x ``PhotoMetricDistortion`` on a uint8 RGB image.

    Brightness (add U(-32, 32)); contrast (multiply U(0.5, 1.5)) before saturation/hue
    when ``mode == 1`` else after; saturation (multiply HSV S by U(0.5, 1.5)); hue (add
    ``integers(-18, 18)``, numpy's exclusive high as in mmseg, modulo 180). Each step with
    probability ``step_p`` (0.5 in mmseg), clipped and truncated to uint8 after each.
    OpenCV's RGB<->HSV on our RGB image equals mmcv's BGR<->HSV on its BGR image.
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        step_p: float = 0.5,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta
        self.step_p = step_p

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator

        def coin() -> bool:
            return bool(rng.random() < self.step_p)

        delta = self.brightness_delta
        brightness = float(rng.uniform(-delta, delta)) if coin() else None
        contrast_first = bool(rng.integers(2) == 1)
        contrast = float(rng.uniform(*self.contrast_range)) if coin() else None
        saturation = float(rng.uniform(*self.saturation_range)) if coin() else None
        hue = int(rng.integers(-self.hue_delta, self.hue_delta)) if coin() else None
        return {
            "brightness": brightness,
            "contrast_first": contrast_first,
            "contrast": contrast,
            "saturation": saturation,
            "hue": hue,
        }

    def apply(
        self,
        img: np.ndarray,
        brightness: float | None = None,
        contrast_first: bool = True,
        contrast: float | None = None,
        saturation: float | None = None,
        hue: int | None = None,
        **params: Any,
    ) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"PhotoMetricDistortion expects a uint8 image, got {img.dtype}")
        if brightness is not None:
            img = _convert(img, beta=brightness)
        if contrast_first and contrast is not None:
            img = _convert(img, alpha=contrast)
        if saturation is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # H in 0..179
            hsv[..., 1] = _convert(hsv[..., 1], alpha=saturation)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + hue) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and contrast is not None:
            img = _convert(img, alpha=contrast)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta", "step_p")


class ShortSideResize(A.ImageOnlyTransform):
    """Test-time resize: short side exactly ``short_side``, aspect kept, OpenCV bilinear on uint8.

    Calls ``zegclip.resize.resize_short_side`` (the one test-size rule), the resize
    `zegclip.segment` uses too; no long-side cap here (the paper's protocol). Image only: evaluation keeps the label
    at its original size.
    """

    def __init__(self, short_side: int = 512, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.short_side = short_side

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return resize_short_side(img, self.short_side)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("short_side",)


class RemapLabels(A.DualTransform):
    """Map label values through a 256-entry uint8 lookup table; the image is unchanged."""

    def __init__(self, lut: np.ndarray, p: float = 1.0) -> None:
        super().__init__(p=p)
        lut = np.asarray(lut)
        if lut.shape != (256,) or lut.dtype != np.uint8:
            raise ValueError(f"lut must be uint8 of shape (256,), got {lut.dtype} {lut.shape}")
        self.lut = lut

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return self.lut[mask]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("lut",)


class ToTensors(A.DualTransform):
    """Image H x W x 3 -> float32 3 x H x W tensor; label H x W -> int64 H x W tensor."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__(p=p)

    def apply(self, img: np.ndarray, **params: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> torch.Tensor:
        return torch.from_numpy(mask.astype(np.int64))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def train_transform(
    crop_size: int | tuple[int, int] = 512,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    *,
    label_lut: np.ndarray | None = None,
    flip_p: float = 0.5,
    photometric: bool = True,
    normalize: bool = True,
) -> A.Compose:
    """The released training pipeline (docs/method.md §7), input uint8 RGB + reduced uint8 label.

    Steps: rescale -> class-ratio crop -> [label_lut] -> flip -> photometric -> normalise
    -> pad bottom/right to the crop (image 0, label 255) -> tensors.

    ``label_lut`` (the training vocabulary, see ``SegDataModule``) is applied right after
    the crop: the crop rule then sees the true classes, as in the released code, which
    maps unseen classes inside the model, after its data pipeline. Every later step
    commutes with a per-pixel lookup (pad adds 255, which every table keeps).

    Returns:
        Compose called as ``t(image=..., mask=...)`` giving ``image`` float32 3 x H x W and
        ``mask`` int64 H x W tensors (H = W = crop size after padding).
    """
    crop_h, crop_w = _pair(crop_size)
    steps: list[A.BasicTransform] = [
        RatioRangeRescale(scale=scale, ratio_range=ratio_range),
        ClassRatioRandomCrop(height=crop_h, width=crop_w, cat_max_ratio=cat_max_ratio),
    ]
    if label_lut is not None:
        steps.append(RemapLabels(label_lut))
    steps.append(A.HorizontalFlip(p=flip_p))
    if photometric:
        steps.append(PhotoMetricDistortion())
    if normalize:
        steps.append(A.Normalize(mean=MEAN, std=STD, max_pixel_value=1.0, p=1.0))
    steps += [
        A.PadIfNeeded(
            min_height=crop_h,
            min_width=crop_w,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=IGNORE_INDEX,
            p=1.0,
        ),
        ToTensors(),
    ]
    return A.Compose(steps, p=1.0)


def eval_transform(short_side: int = 512, *, normalize: bool = True) -> A.Compose:
    """Test pipeline (docs/method.md §6): short side -> ``short_side``, normalise, tensors.

    The label is NOT resized (evaluation happens at the original size); it comes back
    as an int64 tensor of the original H x W.
    """
    steps: list[A.BasicTransform] = [ShortSideResize(short_side)]
    if normalize:
        steps.append(A.Normalize(mean=MEAN, std=STD, max_pixel_value=1.0, p=1.0))
    steps.append(ToTensors())
    return A.Compose(steps, p=1.0)


def seed_pipeline(transform: A.BaseCompose, seed: int, rank: int = 0) -> None:
    """Replace a Compose's numpy and Python generators by ones seeded from (seed, rank)."""
    seq = np.random.SeedSequence([seed % 2**64, rank])
    py_seed = int(seq.generate_state(2, dtype=np.uint64)[1])
    transform.set_random_state(np.random.default_rng(seq), random.Random(py_seed))


class SeededTransform:
    """Wrap a Compose so each process/worker draws its own reproducible random stream.

    On the first call in a process (and again whenever ``torch.initial_seed()`` changes,
    i.e. in a new DataLoader worker) the Compose's generators are replaced by ones seeded
    from ``SeedSequence([torch.initial_seed(), rank])``.
    """

    def __init__(self, transform: A.BaseCompose, rank: int = 0) -> None:
        self.transform = transform
        self.rank = rank
        self._seeded_from: int | None = None

    def reseed(self, seed: int) -> None:
        """Seed the wrapped pipeline from ``seed`` and this wrapper's rank."""
        seed_pipeline(self.transform, seed, self.rank)
        self._seeded_from = seed

    def __call__(self, **data: Any) -> dict[str, Any]:
        seed = torch.initial_seed()
        if seed != self._seeded_from:
            self.reseed(seed)
        return self.transform(**data)
