"""``zegclip efficiency`` / ``python -m zegclip.efficiency``: parameters, FLOPs, images/s (options, exit codes).

The work is done by :mod:`zegclip.efficiency`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import zegclip.efficiency as lib
from zegclip.data.datasets import get_dataset_info
from zegclip.efficiency import efficiency_report
from zegclip.errors import UsageError, run_command
from zegclip.model import MODEL_PRESETS, build_zegclip, load_model
from zegclip.model.build import zegclip_tiny


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m zegclip.efficiency", description=lib.__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. experiment=voc_inductive (random weights, that model)"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tiny", action="store_true", help="the tiny random model")
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="a preset with random weights")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=20, help="vocabulary size (VOC: 20, COCO-Stuff: 171)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def _report(args: argparse.Namespace) -> int:
    for option in ("height", "width", "num_classes", "batch_size", "repeats"):
        if getattr(args, option) < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.overrides:
        from zegclip.training.config import compose_config  # Hydra only on this path

        cfg = compose_config("train", args.overrides)
        model = build_zegclip(**{**dict(cfg.model), "pretrained": None})
        args.num_classes = len(get_dataset_info(cfg.data.dataset).class_names)
    elif args.tiny:
        model = zegclip_tiny()
    elif args.preset:
        model = MODEL_PRESETS[args.preset](pretrained=None)
    else:
        model = load_model(args.checkpoint, map_location="cpu")
    report = efficiency_report(
        model,
        height=args.height,
        width=args.width,
        num_classes=args.num_classes,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    print(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Print :func:`efficiency_report` as JSON; 2 on a usage, config or checkpoint error (one line)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.tiny or args.preset or args.checkpoint or args.overrides):
        parser.error("give experiment=NAME (Hydra overrides), --tiny, --preset or --checkpoint")
    return run_command(_report, args)
