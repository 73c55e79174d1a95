"""Whole-image and sliding-window inference, seen-class calibration (docs/method.md §6 and §10)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from zegclip.model.loss import upsample

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""Images N x 3 x h x w -> per-class scores N x C x h x w at the same size."""


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
