"""``zegclip verify`` / ``python -m zegclip.data.verify``: check a prepared dataset (options, exit codes).

The checks are :mod:`zegclip.data.verify`. Exit status: 0 all well, 1 problems found,
2 wrong arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zegclip.cli.logs import setup_cli_logging
from zegclip.constants import IGNORE_INDEX
from zegclip.data.classes import FOLDER
from zegclip.data.folder import verify_folder
from zegclip.data.verify import DEFAULT_SAMPLE, MIN_CLASSES, VerifyReport, verify_report
from zegclip.errors import UsageError, run_command


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m zegclip.data.verify", description="Check a prepared dataset.")
    parser.add_argument("dataset", choices=sorted([*MIN_CLASSES, FOLDER]))
    parser.add_argument("--root", type=Path, required=True, help="the prepare --out folder (folder: the folder)")
    parser.add_argument(
        "--sample", type=int, default=DEFAULT_SAMPLE, help="labels to read (folder: images to decode; all labels read)"
    )
    parser.add_argument(
        "--ignore-index", type=int, default=IGNORE_INDEX, help="folder: the label value of unlabelled pixels"
    )
    return parser


def print_report(dataset: str, root: Path, report: VerifyReport) -> int:
    """Print what :func:`verify_report` found; return the exit status (0 all well, 1 problems)."""
    print(f"{dataset} in {root}")
    for split, n in report.split_sizes.items():
        print(f"  {split}: {n} ids")
    hist = report.histogram
    if hist.sum():
        top = np.argsort(hist)[::-1][:10]
        share = ", ".join(f"{v}: {hist[v] / hist.sum():.1%}" for v in top if hist[v])
        print(f"  {report.sampled} labels sampled; most frequent values: {share}")
    for msg in report.warnings:
        print(f"warning: {msg}")
    if report.problems:
        print(f"{len(report.problems)} problem(s):")
        for msg in report.problems:
            print(f"  - {msg}")
        return 1
    print("OK")
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.sample < 1:
        raise UsageError(f"--sample must be at least 1 (the number of labels to read), got {args.sample}")
    setup_cli_logging()
    if args.dataset == FOLDER:
        return print_report(args.dataset, args.root, verify_folder(args.root, args.sample, args.ignore_index))
    return print_report(args.dataset, args.root, verify_report(args.dataset, args.root, args.sample))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: prints a report; 0 if all is well, 1 on problems, 2 on bad arguments."""
    return run_command(_verify, build_parser().parse_args(argv))
