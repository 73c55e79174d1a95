"""Export the ZegCLIP network to ONNX: (normalised images, class embeddings) -> mask logits.

The vocabulary is an input, so one exported file serves any class list: compute the
class embeddings with :meth:`ZegCLIP.encode_text` (or ``zegclip.segmentation.encode_vocabulary``)
and feed them next to the images. Batch size and class count are dynamic; the image
size is fixed at export time (the positional embedding is resized for it).

Example::

    python -m zegclip.export --checkpoint ZegCLIP_voc.pth --format onnx --output zegclip_voc.onnx
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from zegclip.atomic import atomic_path
from zegclip.errors import ZegCLIPError
from zegclip.model import ZegCLIP

INPUT_NAMES = ("images", "class_embeddings")
OUTPUT_NAMES = ("mask_logits",)


class ExportError(ZegCLIPError, ValueError):
    """An export that cannot be written as asked (image size, output path); the message says why."""


class MaskLogits(nn.Module):
    """``ZegCLIP.forward`` reduced to its final mask logits (a plain tensor output)."""

    def __init__(self, model: ZegCLIP) -> None:
        """Wrap ``model``."""
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Normalised images B x 3 x H x W, class embeddings C x D -> logits B x C x h x w."""
        return self.model(images, class_embeddings).logits


def check_export(model: ZegCLIP, path: str | os.PathLike, height: int, width: int) -> None:
    """Refuse, before any tracing, an image size the patches do not tile or an output path that is a folder.

    Raises:
        ExportError: naming the size or the path.
    """
    patch = model.patch_size
    if height < patch or width < patch or height % patch or width % patch:
        raise ExportError(
            f"height and width must be positive multiples of the patch size {patch}, got {height} x {width}"
        )
    check_output(path)


def check_output(path: str | os.PathLike) -> Path:
    """``path`` as the file to write; ExportError when it is an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give the .onnx file to write, e.g. {path / 'zegclip.onnx'}")
    return path


def export_onnx(
    model: ZegCLIP,
    path: str | os.PathLike,
    *,
    height: int = 512,
    width: int = 512,
    opset: int = 17,
    num_classes: int = 3,
) -> Path:
    """Write the network forward as ONNX with dynamic batch and class count.

    Args:
        model: the ZegCLIP to export (exported in eval mode, on its current device).
        path: the ``.onnx`` file to write (written to a temporary name, then renamed).
        height: input image height (a multiple of the patch size).
        width: input image width (a multiple of the patch size).
        opset: ONNX opset version.
        num_classes: classes in the example input used for tracing (any count works later).

    Returns:
        The path written.

    Raises:
        ExportError: the size is not a multiple of the patch size, or ``path`` is a folder.
    """
    check_export(model, path, height, width)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    device = model.pixel_mean.device
    dim = model.relationship.proj.out_features
    images = torch.zeros(2, 3, height, width, device=device)
    class_embeds = nn.functional.normalize(torch.randn(num_classes, dim, device=device), dim=-1)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings():
            # tracing notes about Python ints taken from shapes (the image size is fixed by design)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # the legacy exporter is deliberate (the dynamo one needs onnxscript, not a dependency);
            # it and its internals announce their own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                MaskLogits(model),
                (images, class_embeds),
                str(tmp),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    "images": {0: "batch"},
                    "class_embeddings": {0: "classes"},
                    "mask_logits": {0: "batch", 1: "classes"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        model.train(was_training)
    return path
