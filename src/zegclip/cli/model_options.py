"""The options ``zegclip predict`` and ``zegclip demo`` share: which model, on which device and
backend, at which test scale; their checks (before anything loads) and the model's loading."""

from __future__ import annotations

import argparse

import torch

from zegclip.errors import UsageError
from zegclip.model import ZegCLIP, load_model
from zegclip.model.build import zegclip_tiny
from zegclip.openvino import BACKENDS
from zegclip.resize import MAX_ASPECT_RATIO, MAX_SHORT_SIDE, MIN_SIDE, check_short_side
from zegclip.segmentation import check_device


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``/``--tiny``, ``--device``, ``--backend`` and ``--short-side``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--tiny", action="store_true", help="tiny random model (no download; meaningless masks)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="openvino: the image side in OpenVINO, CPU only (pip install 'zegclip[openvino]'; converted once, cached)",
    )
    parser.add_argument(
        "--short-side",
        type=int,
        default=512,
        help=f"resize so the short side is this, {MIN_SIDE}..{MAX_SHORT_SIDE} (paper: 512; 0: keep size); "
        f"the long side is capped at {MAX_ASPECT_RATIO:g}x this",
    )


def check_model_options(args: argparse.Namespace) -> None:
    """The shared options' values, checked without reading anything.

    Raises:
        UsageError: ``--short-side`` out of range.
        DeviceError: ``--device cuda`` without CUDA.
    """
    try:
        check_short_side(args.short_side or None)
    except ValueError as err:
        raise UsageError(
            f"--short-side must be between {MIN_SIDE} and {MAX_SHORT_SIDE} (or 0 to keep the image size), "
            f"got {args.short_side}"
        ) from err
    check_device(args.device)


def load_checkpoint_model(args: argparse.Namespace) -> ZegCLIP:
    """The model of ``--checkpoint`` (any kind), or the seeded tiny model with ``--tiny``."""
    if args.tiny:
        torch.manual_seed(0)
        return zegclip_tiny()
    return load_model(args.checkpoint, map_location="cpu")  # a file that does not fit: CheckpointError
