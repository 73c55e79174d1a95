"""Whole-image and sliding-window inference, seen-class calibration, class chunks (docs/method.md §6 and §10).

`Predictor` holds ``predict`` and ``predict_labels`` for every backend (PyTorch, OpenVINO).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from zegclip.model.loss import upsample

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""Images N x 3 x h x w -> per-class scores N x C x h x w at the same size."""

SCORE_BUDGET = 1 << 24
"""Score values `predict_labels` holds at once by default (64 MB in fp32)."""


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets along one axis; the last window touches the border (docs/method.md §10)."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride, length - crop), 0) for i in range(count)]


def slide_inference(
    score_fn: ScoreFn,
    images: torch.Tensor,
    *,
    crop: int = 512,
    stride: int = 426,
    window_batch: int = 8,
) -> torch.Tensor:
    """Average the scores of overlapping crop x crop windows.

    All windows of all images are gathered and scored ``window_batch`` at a time.

    Args:
        score_fn: maps window images to per-class scores at window size.
        images: B x 3 x H x W.

    Returns:
        B x C x H x W mean scores.
    """
    B, _, H, W = images.shape
    crop_h, crop_w = min(crop, H), min(crop, W)
    boxes = [(y, x) for y in window_starts(H, crop, stride) for x in window_starts(W, crop, stride)]
    windows = torch.stack([images[:, :, y : y + crop_h, x : x + crop_w] for y, x in boxes], dim=1).flatten(
        0, 1
    )  # (B * windows) x 3 x crop_h x crop_w, image-major
    canvas = None
    count = images.new_zeros(H, W)
    for y, x in boxes:
        count[y : y + crop_h, x : x + crop_w] += 1
    for first, chunk in zip(range(0, len(windows), window_batch), windows.split(window_batch), strict=True):
        scores = score_fn(chunk)  # n x C x crop_h x crop_w, added to the canvas as they come
        if canvas is None:
            canvas = scores.new_zeros(B, scores.shape[1], H, W)
        for j, window_scores in enumerate(scores):
            b, i = divmod(first + j, len(boxes))
            y, x = boxes[i]
            canvas[b, :, y : y + crop_h, x : x + crop_w] += window_scores
    return canvas.div_(count.to(canvas.dtype))


def calibrate(scores: torch.Tensor, seen_mask: torch.Tensor | None, shift: float = 0.1) -> torch.Tensor:
    """Subtract ``shift`` from the scores of seen classes (inductive models only).

    Args:
        scores: B x C x H x W.
        seen_mask: C booleans, True for seen classes; None means no calibration.
    """
    if seen_mask is None:
        return scores
    seen = torch.as_tensor(seen_mask, dtype=torch.bool, device=scores.device)
    if seen.shape != (scores.shape[1],):
        raise ValueError(f"seen_mask has {seen.numel()} entries for {scores.shape[1]} classes")
    return scores - shift * seen.to(scores.dtype).view(1, -1, 1, 1)


def logits_to_scores(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask logits B x C x h x w -> sigmoid scores at ``size`` (logits upsampled first)."""
    scores = upsample(mask_logits, size).float()
    return scores.sigmoid() if scores.data_ptr() == mask_logits.data_ptr() else scores.sigmoid_()


def over_windows(
    score_fn: ScoreFn, images: torch.Tensor, mode: str, crop: int, stride: int, batch: int
) -> torch.Tensor:
    """Scores of the whole image, or averaged over sliding windows (docs/method.md §6)."""
    if mode == "whole":
        return score_fn(images)
    if mode == "slide":
        return slide_inference(score_fn, images, crop=crop, stride=stride, window_batch=batch)
    raise ValueError(f"mode must be 'slide' or 'whole', got {mode!r}")


class Predictor:
    """``predict`` and ``predict_labels`` for a network split into `encode_images` and `decode_logits`.

    `ZegCLIP` (PyTorch) and the OpenVINO backend (``zegclip.openvino``) both inherit them: the
    windows, calibration and class chunks are shared, only the two network calls differ.
    """

    def encode_images(self, images: torch.Tensor) -> Any:
        """Normalised images N x 3 x h x w -> the image encoder's outputs, as `decode_logits` takes them."""
        raise NotImplementedError

    def decode_logits(self, encoded: Any, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Encoder outputs and class embeddings C x D -> mask logits N x C x h/patch x w/patch."""
        raise NotImplementedError

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        class_embeddings: torch.Tensor,
        seen_mask: torch.Tensor | Sequence[bool] | None = None,
        mode: str = "slide",
        crop: int = 512,
        stride: int = 426,
        *,
        output_size: tuple[int, int] | None = None,
        window_batch: int = 8,
        shift: float = 0.1,
    ) -> torch.Tensor:
        """Calibrated per-class scores B x C x H x W; their argmax is the segmentation.

        Args:
            images: normalised B x 3 x H x W (for the paper's protocol, short side 512).
            class_embeddings: C x D.
            seen_mask: C booleans marking seen classes, whose scores drop by ``shift``
                (inductive models); None for no calibration.
            mode: ``"slide"`` (crop x crop windows, ``stride`` apart) or ``"whole"``.
            output_size: resize the scores to this (H, W), e.g. the original image's.
        """

        def score_fn(x: torch.Tensor) -> torch.Tensor:
            return logits_to_scores(self.decode_logits(self.encode_images(x), class_embeddings), x.shape[-2:])

        scores = over_windows(score_fn, images, mode, crop, stride, window_batch)
        if output_size is not None:
            scores = upsample(scores, output_size)
        if seen_mask is not None:
            seen_mask = torch.as_tensor(seen_mask, dtype=torch.bool)
        return calibrate(scores, seen_mask, shift)

    @torch.no_grad()
    def predict_labels(
        self,
        images: torch.Tensor,
        class_embeddings: torch.Tensor,
        seen_mask: torch.Tensor | Sequence[bool] | None = None,
        mode: str = "slide",
        crop: int = 512,
        stride: int = 426,
        *,
        output_size: tuple[int, int] | None = None,
        window_batch: int = 8,
        shift: float = 0.1,
        class_chunk: int | None = None,
    ) -> torch.Tensor:
        """``predict(...).argmax(1)``, B x H x W int64, in memory bounded for any vocabulary.

        The classes are scored ``class_chunk`` at a time (default: as many as fit `SCORE_BUDGET`,
        2**24 score values at the output size, 64 MB) and only the running best score and class
        per pixel are kept; the image encoder runs once, its outputs reused for every chunk.
        Ties go to the lower class index, as with ``argmax``. For 847 classes on a 512 x 683
        image this holds about 70 MB of scores instead of 2.4 GB.
        """
        num_classes = class_embeddings.shape[0]
        size = output_size or tuple(images.shape[-2:])
        chunk = class_chunk or max(1, SCORE_BUDGET // (images.shape[0] * size[0] * size[1]))
        if num_classes <= chunk:
            return self.predict(
                images, class_embeddings, seen_mask, mode, crop, stride,
                output_size=output_size, window_batch=window_batch, shift=shift,
            ).argmax(1)  # fmt: skip
        seen = None if seen_mask is None else torch.as_tensor(seen_mask, dtype=torch.bool)
        encoded: list[Any] = []  # encoder outputs, in call order

        def scores_of(embeds: torch.Tensor) -> torch.Tensor:
            calls = itertools.count()

            def score_fn(x: torch.Tensor) -> torch.Tensor:
                call = next(calls)
                if call == len(encoded):  # first chunk: run the encoder and keep what it gives
                    encoded.append(self.encode_images(x))
                return logits_to_scores(self.decode_logits(encoded[call], embeds), x.shape[-2:])

            return over_windows(score_fn, images, mode, crop, stride, window_batch)

        best = labels = None
        for first in range(0, num_classes, chunk):
            scores = upsample(scores_of(class_embeddings[first : first + chunk]), size)  # B x K x H x W
            scores = calibrate(scores, None if seen is None else seen[first : first + chunk], shift)
            value, index = scores.max(1)  # first maximum within the chunk
            if best is None:
                best, labels = value, index
            else:
                better = value > best  # strictly: a tie keeps the earlier class
                best = torch.where(better, value, best)
                labels = torch.where(better, index + first, labels)
        return labels
