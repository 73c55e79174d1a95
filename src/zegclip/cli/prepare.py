"""``zegclip prepare`` / ``python -m zegclip.data.prepare``: dataset preparation (options, exit codes).

The work is done by :mod:`zegclip.data.prepare`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from zegclip.cli.logs import setup_cli_logging
from zegclip.data.classes import FOLDER
from zegclip.data.folder import make_split
from zegclip.data.prepare import EXTRACT_DIR, PREPARERS, default_workers
from zegclip.errors import UsageError, run_command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m zegclip.data.prepare",
        description="Build the dataset layouts (docs/method.md §9) from the raw downloads.",
    )
    parser.add_argument("dataset", choices=sorted([*PREPARERS, FOLDER]))
    parser.add_argument("--raw", type=Path, help="folder with the downloads (required but for folder)")
    parser.add_argument("--out", type=Path, help="output root (data root; required but for folder)")
    folder = parser.add_argument_group("folder (your own images: writes train.txt and val.txt)")
    folder.add_argument("--root", type=Path, help="the folder holding images/, labels/, classes.txt")
    folder.add_argument("--val-fraction", type=float, default=0.2, help="share of the images for validation")
    folder.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    folder.add_argument("--force", action="store_true", help="replace existing lists")
    parser.add_argument("--workers", type=int, default=default_workers(), help="label conversion processes")
    parser.add_argument("--strict", action="store_true", help="fail when counts differ from the official ones")
    return parser


def _split_folder(args: argparse.Namespace) -> int:
    if args.root is None:
        raise UsageError("prepare folder needs --root (the folder holding images/, labels/, classes.txt)")
    setup_cli_logging()
    split = make_split(args.root, args.val_fraction, args.seed, args.force)
    print(f"folder {args.root}: train {len(split['train'])}, val {len(split['val'])} ids (seed {args.seed})")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    if args.dataset == FOLDER:
        return _split_folder(args)
    if args.raw is None or args.out is None:
        raise UsageError(f"prepare {args.dataset} needs --raw (the downloads) and --out (the data root)")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    setup_cli_logging()
    counts = PREPARERS[args.dataset](args.raw, args.out, workers=args.workers, strict=args.strict)
    print(f"{args.dataset} prepared in {args.out}: {counts}")
    print(f"(the extracted archives in {args.out / EXTRACT_DIR}, if any, may be deleted)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when prepared, 2 on a usage error or a PrepareError (one ``error:`` line)."""
    return run_command(_prepare, build_parser().parse_args(argv))
