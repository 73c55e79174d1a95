"""``zegclip export`` / ``python -m zegclip.export``: ONNX export (options, exit codes).

The work is done by :mod:`zegclip.export`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

import zegclip.export as lib
from zegclip.errors import UsageError, ensure_writable_folder, run_command
from zegclip.export import check_output, export_onnx
from zegclip.model import load_model
from zegclip.model.build import zegclip_tiny


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m zegclip.export", description=lib.__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--tiny", action="store_true", help="the tiny random model (tests, demos)")
    parser.add_argument("--format", default="onnx", choices=["onnx"])
    parser.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    return parser


def _export(args: argparse.Namespace) -> int:
    output = check_output(args.output)
    if args.height < 1 or args.width < 1:
        raise UsageError(f"--height and --width must be positive, got {args.height} x {args.width}")
    ensure_writable_folder(output.parent, "folder of --output")  # before the model loads
    if args.tiny:
        torch.manual_seed(0)
        model = zegclip_tiny()
    else:
        model = load_model(args.checkpoint, map_location="cpu")
    path = export_onnx(model, output, height=args.height, width=args.width, opset=args.opset)
    print(f"wrote {path} (inputs: images B x 3 x {args.height} x {args.width}, class_embeddings C x D)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m zegclip.export``: 0 written, 2 a usage or checkpoint error (one line)."""
    return run_command(_export, build_parser().parse_args(argv))
