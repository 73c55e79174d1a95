"""``zegclip prepare`` / ``python -m zegclip.data.prepare``: dataset preparation (options, exit codes).

The work is done by :mod:`zegclip.data.prepare`. Also the logging setup of the data
commands (:func:`setup_cli_logging`), shared with :mod:`zegclip.cli.verify`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zegclip.data.classes import FOLDER
from zegclip.data.folder import make_split
from zegclip.data.prepare import EXTRACT_DIR, PREPARERS, default_workers
from zegclip.errors import UsageError, run_command

__all__ = ["UsageError", "build_parser", "main", "setup_cli_logging"]


class _CliFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record."""

    _zegclip_cli = True

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_cli_logging() -> None:
    """Send ``zegclip.data`` log records to stderr (info plain, warnings prefixed).

    The library loggers have fixed names (``zegclip.data.prepare``, ``zegclip.data.verify``),
    so ``python -m zegclip.data.prepare`` prints the same lines as ``zegclip prepare``.
    """
    pkg = logging.getLogger("zegclip.data")
    if not any(getattr(h, "_zegclip_cli", False) for h in pkg.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_CliFormatter())
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)


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
