"""Parameters, FLOPs and throughput of a ZegCLIP model (the paper's efficiency table, docs/method.md §8).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one forward of
the network on a ``height x width`` image (class embeddings given; the text tower is
not run). The paper's figures (110.4 G for VOC) come from fvcore, which counts one
multiply-add as one "FLOP"; ``macs`` (= FLOPs / 2) is that figure.

Example::

    python -m zegclip.efficiency --preset vitb16_voc --device cuda --precision fp16
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from zegclip.model import ZegCLIP
from zegclip.segmentation import autocast, resolve_device

SLIDE_IMAGE_SIZE = (512, 683)
"""A typical VOC test image after the short-side-512 resize (500 x 375 -> 683 x 512)."""


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(learnable, total) parameter counts."""
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return learnable, sum(p.numel() for p in model.parameters())


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q K^T and A V of scaled dot-product attention: B x heads x L x E shapes."""
    B, heads, Lq, E = query_shape
    Lk, Ev = key_shape[-2], value_shape[-1]
    return 2 * B * heads * Lq * Lk * (E + Ev)


EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    getattr(torch.ops.aten, name): _attention_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if hasattr(torch.ops.aten, name)
}
"""FLOP formulas for ``FlopCounterMode(custom_mapping=...)``: torch's counter knows the CUDA attention
kernels but not the CPU one, which the CLIP ViT runs on CPU."""


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls, convolutions and attention that ``fn`` runs.

    Runs with autograd on: the counter's module tracker hooks tensors that require grad
    and fails on the grad-less ones ``no_grad`` makes of trainable parameters.
    """
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS) as counter:
        fn()
    return int(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; a no-op elsewhere), so a clock
    read after it times the work, not the kernel launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(fn: Callable[[], Any], images: int, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return images * repeats / (time.perf_counter() - start)


@torch.no_grad()
def efficiency_report(
    model: ZegCLIP,
    *,
    height: int = 512,
    width: int = 512,
    num_classes: int = 20,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    batch_size: int = 1,
    repeats: int = 3,
) -> dict[str, Any]:
    """Parameter counts, FLOPs of one forward, and inference throughput.

    Args:
        model: the model (moved to ``device``, put in eval mode).
        height: image height for the FLOP count and the whole-image timing.
        width: image width for the same.
        num_classes: vocabulary size (random unit class embeddings).
        device: where to time it.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        batch_size: images per forward for the whole-image timing; windows per forward
            for the sliding-window timing.
        repeats: timed runs after one warm-up.

    Returns:
        A JSON-ready dict: ``learnable_params``, ``total_params``, ``flops`` and ``gflops``
        (one image), ``macs`` and ``gmacs`` (fvcore's "FLOPs", the paper's unit),
        ``images_per_second_whole`` and ``images_per_second_slide`` (a 512 x 683 image,
        512 windows with stride 426), and the settings used.
    """
    device = resolve_device(device, model)
    model.to(device).eval()
    learnable, total = count_parameters(model)
    dim = model.relationship.proj.out_features
    class_embeds = F.normalize(torch.randn(num_classes, dim, device=device), dim=-1)
    one = torch.randn(1, 3, height, width, device=device)
    with autocast(device, precision):
        flops = count_flops(lambda: model(one, class_embeds))
        batch = torch.randn(batch_size, 3, height, width, device=device)
        whole = _images_per_second(
            lambda: model.predict(batch, class_embeds, mode="whole"), batch_size, device, repeats
        )
        slide_image = torch.randn(1, 3, *SLIDE_IMAGE_SIZE, device=device)
        slide = _images_per_second(
            lambda: model.predict(slide_image, class_embeds, mode="slide", window_batch=batch_size), 1, device, repeats
        )
    return {
        "learnable_params": learnable,
        "total_params": total,
        "flops": flops,
        "gflops": flops / 1e9,
        "macs": flops // 2,
        "gmacs": flops / 2e9,
        "images_per_second_whole": whole,
        "images_per_second_slide": slide,
        "height": height,
        "width": width,
        "slide_image_size": list(SLIDE_IMAGE_SIZE),
        "num_classes": num_classes,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "batch_size": batch_size,
        "repeats": repeats,
    }
