"""Segment images with an open vocabulary: image loading, the paper's test resize, vocabularies.

The one place that turns user input (a path, a PIL image or an array; class names as
a string, a file or a dataset name) into what :meth:`ZegCLIP.predict` takes, following
the paper's test pipeline (docs/method.md §6): resize keeping the aspect ratio so that the
short side is 512, normalise, slide 512 x 512 windows with stride 426, resize the scores
to the original size, argmax.

The resize (`resize_short_side`: OpenCV bilinear on the uint8 image, as mmseg's) and the
normalisation are the ones of the evaluation pipeline (``zegclip.data.transforms.eval_transform``
calls `resize_short_side` too), so `segment` and ``zegclip.eval`` score an image identically.
Only here, not in evaluation, the long side is capped at `MAX_ASPECT_RATIO` x the short side
(extreme aspect ratios would otherwise need unbounded memory), with a `ScaleWarning`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from zegclip.errors import ZegCLIPError
from zegclip.model import ZegCLIP
from zegclip.resize import (  # noqa: F401 (re-exported: the size rule's names, as before)
    MAX_ASPECT_RATIO,
    MAX_SHORT_SIDE,
    MIN_SIDE,
    check_short_side,
    inference_size,
    resize_short_side,
    scale_note,
    short_side_size,
)
from zegclip.vocabulary import (  # noqa: F401 (re-exported, as before)
    Vocabulary,
    VocabularyError,
    parse_vocabulary,
    seen_mask,
)

if TYPE_CHECKING:
    from zegclip.openvino import OpenVINOZegCLIP

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_LABEL_CHUNK = 1 << 24
"""Upsampled score elements held at once when only the labels are kept (64 MB in fp32)."""

ImageInput = str | os.PathLike | Image.Image | np.ndarray


class ImageReadError(ZegCLIPError, ValueError):
    """An image that cannot be read or has an unusable layout; the message names it."""


class DeviceError(ZegCLIPError, ValueError):
    """A device that is not there (CUDA asked for on a machine without it)."""


class ScaleWarning(UserWarning):
    """An image segmented at another size than the test scale (extreme aspect ratio, tiny image)."""


@dataclass
class SegmentResult:
    """The segmentation of one image.

    Attributes:
        labels: H x W int64 class indices at the original image size.
        scores: C x H x W float32 calibrated scores at the original size (their argmax
            is ``labels``), or None when not kept.
        class_names: C display names (the first synonym of each class).
        note: why the image was segmented at another size than the test scale, or None.
    """

    labels: np.ndarray
    scores: torch.Tensor | None
    class_names: list[str]
    note: str | None = None
    """Set when the image was treated specially (see `ScaleWarning`), else None."""

    def areas(self) -> dict[str, float]:
        """Percent of the image covered by each class present, largest first (sums to 100)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        total = counts.sum()
        order = np.argsort(-counts, kind="stable")
        return {self.class_names[i]: 100.0 * float(counts[i]) / total for i in order if counts[i] > 0}


# ---------------------------------------------------------------- vocabularies


@torch.no_grad()
def encode_vocabulary(
    model: ZegCLIP | OpenVINOZegCLIP, vocabulary: Vocabulary, templates: str | Sequence[str] = "single"
) -> torch.Tensor:
    """Class embeddings C x D; a class with synonyms gets their normalised mean embedding."""
    names = [name for synonyms in vocabulary for name in synonyms]
    embeds = model.encode_text(names, templates)  # (sum of synonyms) x D, each L2-normalised
    out, start = [], 0
    for synonyms in vocabulary:
        group = embeds[start : start + len(synonyms)]
        start += len(synonyms)
        out.append(group[0] if len(synonyms) == 1 else F.normalize(group.mean(0), dim=-1))
    return torch.stack(out)


# ---------------------------------------------------------------- images


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer or float values -> uint8 0..255 (see `load_image`)."""
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # 16-bit, either byte order
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(value / 257)
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if array.dtype.kind in "iu" and low >= 0 and high <= 65535:  # 16-bit data read as 32-bit ("I")
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if array.dtype.kind == "f" and low >= 0 and high <= 1:
        scaled = values * 255
    elif array.dtype.kind == "f" and low >= 0 and high <= 255:
        scaled = values
    else:  # any other range: stretch min..max to 0..255
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _pil_to_rgb(pil: Image.Image) -> np.ndarray:
    if pil.mode in _HIGH_DEPTH_MODES:  # convert("RGB") would clip these to 0/255
        grey = _high_depth_to_uint8(np.asarray(pil))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(pil.convert("RGB"))


def load_image(image: ImageInput) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB; a file's EXIF orientation tag is applied.

    This is the rule of predict and the demo: the image as a viewer shows it, labels
    written in that orientation. Readers of labelled images use the stored pixels instead
    (``zegclip.data.datasets.read_image``). Arrays and PIL images are taken as given.

    High bit depths are scaled, not clipped: 16-bit images (PIL modes ``I;16*``, uint16
    arrays) become round(value / 257); 32-bit integer images (mode ``I``) the same when
    their values fit in 0..65535 (16-bit files read as 32-bit), else min..max is stretched
    to 0..255; float images (mode ``F``) are multiplied by 255 when within 0..1, kept when
    within 0..255, else stretched.

    Raises:
        ImageReadError: the file is missing or unreadable, or the array has a bad layout.
    """
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as pil:
                pil.load()
                pil = ImageOps.exif_transpose(pil)
                return _pil_to_rgb(pil)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            raise ImageReadError(f"cannot read image {image}: {err}") from err
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    array = np.asarray(image)
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # uint16, either byte order
        array = _high_depth_to_uint8(array)
    if array.dtype != np.uint8:
        raise ImageReadError(f"expected a uint8 (0..255) or uint16 image array, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or 0 in array.shape:
        raise ImageReadError(f"expected an H x W x 3 image array, got shape {array.shape}")
    return np.ascontiguousarray(array[..., :3])


def preprocess_images(
    model: ZegCLIP | OpenVINOZegCLIP,
    images: Sequence[np.ndarray],
    short_side: int | None = 512,
    device: torch.device | None = None,
    max_aspect_ratio: float | None = None,
) -> torch.Tensor:
    """Same-size H x W x 3 uint8 arrays -> normalised B x 3 x H' x W' at the test scale."""
    resized = np.stack([resize_short_side(image, short_side, max_aspect_ratio) for image in images])
    batch = torch.from_numpy(resized).permute(0, 3, 1, 2)  # B x 3 x H' x W' uint8
    return model.preprocess(batch.to(device if device is not None else model.pixel_mean.device))


# ---------------------------------------------------------------- segmentation


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a `DeviceError` when it is CUDA and CUDA is not there."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return device


def resolve_device(device: str | torch.device | None, model: ZegCLIP | OpenVINOZegCLIP) -> torch.device:
    """The requested device (the model's own when None); errors when CUDA is not there."""
    return model.pixel_mean.device if device is None else check_device(device)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` (``fp32``: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def segment_batch(
    model: ZegCLIP | OpenVINOZegCLIP,
    images: Sequence[ImageInput],
    classes: str | os.PathLike | Sequence[str | Sequence[str]],
    *,
    templates: str | Sequence[str] = "single",
    seen: Sequence[str] | None = None,
    mode: str = "slide",
    short_side: int | None = 512,
    crop: int = 512,
    stride: int = 426,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    batch_size: int = 8,
    keep_scores: bool = True,
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> Iterator[SegmentResult]:
    """Segment several images with one vocabulary, yielding results in input order.

    ``batch_size`` is the number of crops per forward pass: sliding windows in slide
    mode (one image at a time), consecutive same-size images in whole mode. Other
    arguments as in :func:`segment`; ``keep_scores=False`` drops the C x H x W scores
    and computes the labels a few classes at a time (memory bounded for large images
    and vocabularies).
    """
    check_short_side(short_side)
    if max_aspect_ratio is not None and not max_aspect_ratio >= 1:
        raise ValueError(f"max_aspect_ratio must be at least 1 (or None for no cap), got {max_aspect_ratio}")
    vocabulary = parse_vocabulary(classes)
    mask = seen_mask(vocabulary, seen)
    device = resolve_device(device, model)
    model.to(device).eval()
    class_embeds = encode_vocabulary(model, vocabulary, templates)
    names = [synonyms[0] for synonyms in vocabulary]
    group: list[np.ndarray] = []

    def run(group: list[np.ndarray]) -> Iterator[SegmentResult]:
        size = group[0].shape[:2]
        note = scale_note(*size, short_side, max_aspect_ratio)
        if note is not None:
            warnings.warn(note, ScaleWarning, stacklevel=3)
        inputs = preprocess_images(model, group, short_side, device, max_aspect_ratio)
        windows = {"mode": mode, "crop": crop, "stride": stride, "window_batch": batch_size}
        with autocast(device, precision):
            if keep_scores:  # as the evaluation does: scores resized to the original size, then calibrated
                scores = model.predict(inputs, class_embeds, mask, output_size=size, **windows)  # B x C x H x W
                labels = [image_scores.argmax(0) for image_scores in scores]
            else:  # a few classes at a time: memory bounded for any vocabulary and image size
                labels = model.predict_labels(inputs, class_embeds, mask, output_size=size, **windows)  # B x H x W
        for b, image_labels in enumerate(labels):
            image_scores = scores[b].float().cpu() if keep_scores else None
            yield SegmentResult(image_labels.cpu().numpy().astype(np.int64), image_scores, names, note)

    group_limit = batch_size if mode == "whole" else 1
    for image in images:
        array = load_image(image)
        if group and (array.shape != group[0].shape or len(group) >= group_limit):
            yield from run(group)
            group = []
        group.append(array)
    if group:
        yield from run(group)


def segment(
    model: ZegCLIP | OpenVINOZegCLIP,
    image: ImageInput,
    classes: str | os.PathLike | Sequence[str | Sequence[str]],
    *,
    templates: str | Sequence[str] = "single",
    seen: Sequence[str] | None = None,
    mode: str = "slide",
    short_side: int | None = 512,
    crop: int = 512,
    stride: int = 426,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    max_aspect_ratio: float | None = MAX_ASPECT_RATIO,
) -> SegmentResult:
    """Segment one image with an open vocabulary, following the paper's test pipeline.

    Args:
        model: a ZegCLIP (moved to ``device`` and set to eval mode), or its OpenVINO form
            (`zegclip.openvino.compile_model`, CPU only; its own precision, so ``precision``
            applies to the PyTorch model only).
        image: a path, a PIL image or an H x W x 3 uint8 RGB array.
        classes: class names, lists of synonyms (their embeddings are averaged), or a
            specification that :func:`parse_vocabulary` reads (``"cat; grass, lawn"``,
            a text file, a dataset name).
        templates: prompt templates: ``"single"``, ``"ensemble"`` or format strings.
        seen: names of classes the model was trained on; their scores drop by 0.1
            (inductive calibration). None: no calibration.
        mode: ``"slide"`` (crop x crop windows, ``stride`` apart) or ``"whole"``.
        crop: sliding-window size (512).
        stride: sliding-window step (426).
        short_side: the image is resized so its short side is this (None: original size),
            with OpenCV bilinear on the uint8 image, exactly as the evaluation pipeline.
            Between `MIN_SIDE` and `MAX_SHORT_SIDE`.
        device: where to run (default: the model's device).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        max_aspect_ratio: cap the test-scale long side at this x ``short_side`` (bounds
            memory for extreme aspect ratios; None: no cap, as in evaluation). A side below
            `MIN_SIDE` is stretched to it. Either emits a `ScaleWarning` and sets
            ``result.note``.

    Returns:
        Labels H x W and scores C x H x W at the original image size.

    Raises:
        ValueError: ``short_side`` out of range, unknown precision or mode.
    """
    return next(
        segment_batch(
            model,
            [image],
            classes,
            templates=templates,
            seen=seen,
            mode=mode,
            short_side=short_side,
            crop=crop,
            stride=stride,
            device=device,
            precision=precision,
            batch_size=8,
            max_aspect_ratio=max_aspect_ratio,
        )
    )
