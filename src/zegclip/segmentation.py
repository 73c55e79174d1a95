"""Segment images with an open vocabulary: image loading, the paper's test resize, vocabularies.

The one place that turns user input (a path, a PIL image or an array; class names as
a string, a file or a dataset name) into what :meth:`ZegCLIP.predict` takes, following
the paper's test pipeline (SPEC sec. 6): resize keeping the aspect ratio so that the
short side is 512, normalise, slide 512 x 512 windows with stride 426, resize the scores
to the original size, argmax.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from zegclip.data.classes import DATASETS
from zegclip.model import ZegCLIP
from zegclip.model.inference import short_side_size
from zegclip.model.loss import upsample

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

ImageInput = str | os.PathLike | Image.Image | np.ndarray
Vocabulary = list[list[str]]
"""One list of synonyms per class; the first name is the class's display name."""


class VocabularyError(ValueError):
    """A class list that cannot be used (empty, duplicated names, unknown seen names)."""


class ImageReadError(ValueError):
    """An image that cannot be read or has an unusable layout; the message names it."""


@dataclass
class SegmentResult:
    """The segmentation of one image.

    Attributes:
        labels: H x W int64 class indices at the original image size.
        scores: C x H x W float32 calibrated scores at the original size (their argmax
            is ``labels``), or None when not kept.
        class_names: C display names (the first synonym of each class).
    """

    labels: np.ndarray
    scores: torch.Tensor | None
    class_names: list[str]

    def areas(self) -> dict[str, float]:
        """Percent of the image covered by each class present, largest first (sums to 100)."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.class_names))
        total = counts.sum()
        order = np.argsort(-counts, kind="stable")
        return {self.class_names[i]: 100.0 * float(counts[i]) / total for i in order if counts[i] > 0}


# ---------------------------------------------------------------- vocabularies


def _split_names(text: str, sep: str) -> list[str]:
    return [" ".join(part.split()) for part in text.split(sep) if part.strip()]


def _check_vocabulary(vocabulary: Vocabulary, source: str) -> Vocabulary:
    vocabulary = [names for names in vocabulary if names]
    if not vocabulary:
        raise VocabularyError(f"the vocabulary {source} is empty: give at least one class name")
    seen: dict[str, int] = {}
    duplicates = []
    for names in vocabulary:
        for name in names:
            key = name.lower()  # CLIP's tokenizer lower-cases, so 'Cat' and 'cat' are one prompt
            if key in seen and name not in duplicates:
                duplicates.append(name)
            seen[key] = 1
    if duplicates:
        raise VocabularyError(f"duplicate class names in the vocabulary {source}: {', '.join(duplicates)}")
    return vocabulary


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith((".txt", ".csv", ".names"))


def parse_vocabulary(spec: str | os.PathLike | Sequence[str | Sequence[str]]) -> Vocabulary:
    """Turn a class specification into one list of synonyms per class.

    Args:
        spec: one of
            - a dataset name (``"voc"``, ``"coco_stuff"``, ``"context"``): its classes;
            - a path to a text file: one class per line, synonyms separated by commas,
              blank lines and ``#`` comments ignored;
            - a string ``"cat; grass, lawn; sky"``: ``;`` separates classes, ``,`` synonyms;
            - a list of names, or of lists of synonyms.

    Raises:
        VocabularyError: the vocabulary is empty, repeats a name, or the file is missing.
    """
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and os.path.isfile(spec)):
        path = Path(spec)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise VocabularyError(f"cannot read the vocabulary file {path}: {err}") from err
        lines = [line.split("#", 1)[0] for line in lines]
        return _check_vocabulary([_split_names(line, ",") for line in lines], f"in {path}")
    if isinstance(spec, str):
        text = spec.strip()
        if text in DATASETS:
            return _check_vocabulary([[name] for name in DATASETS[text].class_names], f"of dataset {text!r}")
        if _looks_like_path(text) and ";" not in text and "," not in text:
            raise VocabularyError(f"vocabulary file not found: {text}")
        return _check_vocabulary([_split_names(part, ",") for part in text.split(";")], repr(spec))
    vocabulary = []
    for entry in spec:
        names = _split_names(entry, ",") if isinstance(entry, str) else [n for e in entry for n in _split_names(e, ",")]
        vocabulary.append(names)
    return _check_vocabulary(vocabulary, "given")


def seen_mask(vocabulary: Vocabulary, seen: Sequence[str] | None) -> list[bool] | None:
    """C booleans marking the classes named in ``seen`` (any synonym matches), or None.

    Raises:
        VocabularyError: a seen name is not in the vocabulary (the message names them).
    """
    if seen is None:
        return None
    index = {name.lower(): c for c, names in enumerate(vocabulary) for name in names}
    wanted = [" ".join(name.split()) for name in seen if name.strip()]
    unknown = [name for name in wanted if name.lower() not in index]
    if unknown:
        raise VocabularyError(f"seen classes not in the vocabulary: {', '.join(unknown)}")
    marked = {index[name.lower()] for name in wanted}
    return [c in marked for c in range(len(vocabulary))]


@torch.no_grad()
def encode_vocabulary(
    model: ZegCLIP, vocabulary: Vocabulary, templates: str | Sequence[str] = "single"
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


def load_image(image: ImageInput) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB (EXIF orientation applied to files).

    Raises:
        ImageReadError: the file is missing or unreadable, or the array has a bad layout.
    """
    if isinstance(image, str | os.PathLike):
        try:
            with Image.open(image) as pil:
                pil.load()
                pil = ImageOps.exif_transpose(pil)
                return np.asarray(pil.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            raise ImageReadError(f"cannot read image {image}: {err}") from err
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ImageReadError(f"expected a uint8 image array (0..255), got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or 0 in array.shape:
        raise ImageReadError(f"expected an H x W x 3 image array, got shape {array.shape}")
    return np.ascontiguousarray(array[..., :3])


def resize_short_side(images: torch.Tensor, short_side: int | None = 512) -> torch.Tensor:
    """Bilinearly resize float images B x 3 x H x W so the short side is ``short_side`` (None: keep)."""
    if short_side is None:
        return images
    size = short_side_size(*images.shape[-2:], short_side)
    if size == tuple(images.shape[-2:]):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


def preprocess_images(
    model: ZegCLIP, images: Sequence[np.ndarray], short_side: int | None = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Same-size H x W x 3 uint8 arrays -> normalised B x 3 x H' x W' at the test scale."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # B x 3 x H x W, 0..255
    batch = batch.to(device if device is not None else model.pixel_mean.device)
    return model.preprocess(resize_short_side(batch, short_side))


# ---------------------------------------------------------------- segmentation


def resolve_device(device: str | torch.device | None, model: ZegCLIP) -> torch.device:
    """The requested device (the model's own when None); errors when CUDA is not there."""
    if device is None:
        return model.pixel_mean.device
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; use --device cpu")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` (``fp32``: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def segment_batch(
    model: ZegCLIP,
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
) -> Iterator[SegmentResult]:
    """Segment several images with one vocabulary, yielding results in input order.

    ``batch_size`` is the number of crops per forward pass: sliding windows in slide
    mode (one image at a time), consecutive same-size images in whole mode. Other
    arguments as in :func:`segment`; ``keep_scores=False`` drops the C x H x W scores
    (saves memory with large vocabularies).
    """
    vocabulary = parse_vocabulary(classes)
    mask = seen_mask(vocabulary, seen)
    device = resolve_device(device, model)
    model.to(device).eval()
    class_embeds = encode_vocabulary(model, vocabulary, templates)
    names = [synonyms[0] for synonyms in vocabulary]
    group: list[np.ndarray] = []

    def run(group: list[np.ndarray]) -> Iterator[SegmentResult]:
        inputs = preprocess_images(model, group, short_side, device)
        with autocast(device, precision):
            scores = model.predict(
                inputs, class_embeds, mask, mode=mode, crop=crop, stride=stride, window_batch=batch_size
            )  # B x C x H' x W' float32, at the test scale
        for array, image_scores in zip(group, scores, strict=True):
            image_scores = upsample(image_scores[None].float(), array.shape[:2])[0]  # C x H x W
            labels = image_scores.argmax(0).cpu().numpy().astype(np.int64)
            yield SegmentResult(labels, image_scores.cpu() if keep_scores else None, names)

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
    model: ZegCLIP,
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
) -> SegmentResult:
    """Segment one image with an open vocabulary, following the paper's test pipeline.

    Args:
        model: a ZegCLIP (moved to ``device`` and set to eval mode).
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
        short_side: the image is resized so its short side is this (None: original size).
        device: where to run (default: the model's device).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).

    Returns:
        Labels H x W and scores C x H x W at the original image size.
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
        )
    )
