"""Export the ZegCLIP network to ONNX: (normalised images, class embeddings) -> mask logits.

The vocabulary is an input, so one exported file serves any class list: compute the
class embeddings with :meth:`ZegCLIP.encode_text` (or ``zegclip.segmentation.encode_vocabulary``)
and feed them next to the images. Batch size and class count are dynamic; the image
size is fixed at export time (the positional embedding is resized for it).

Example::

    python -m zegclip.export --checkpoint ZegCLIP_voc.pth --format onnx --output zegclip_voc.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from zegclip.model import CheckpointError, CLIPLoadError, ZegCLIP, load_model
from zegclip.model.zegclip import zegclip_tiny

INPUT_NAMES = ("images", "class_embeddings")
OUTPUT_NAMES = ("mask_logits",)


class MaskLogits(nn.Module):
    """``ZegCLIP.forward`` reduced to its final mask logits (a plain tensor output)."""

    def __init__(self, model: ZegCLIP) -> None:
        """Wrap ``model``."""
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Normalised images B x 3 x H x W, class embeddings C x D -> logits B x C x h x w."""
        return self.model(images, class_embeddings).logits


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
    """
    patch = model.patch_size
    if height % patch or width % patch:
        raise ValueError(f"height and width must be multiples of the patch size {patch}, got {height} x {width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    device = model.pixel_mean.device
    dim = model.relationship.proj.out_features
    images = torch.zeros(2, 3, height, width, device=device)
    class_embeds = nn.functional.normalize(torch.randn(num_classes, dim, device=device), dim=-1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m zegclip.export", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--tiny", action="store_true", help="the tiny random model (tests, demos)")
    parser.add_argument("--format", default="onnx", choices=["onnx"])
    parser.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m zegclip.export``."""
    args = build_parser().parse_args(argv)
    try:
        if args.tiny:
            torch.manual_seed(0)
            model = zegclip_tiny()
        else:
            model = load_model(args.checkpoint, map_location="cpu")
        path = export_onnx(model, args.output, height=args.height, width=args.width, opset=args.opset)
    except (CheckpointError, CLIPLoadError, KeyError, ValueError) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(f"wrote {path} (inputs: images B x 3 x {args.height} x {args.width}, class_embeddings C x D)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
