"""``zegclip synthetic`` / ``python -m zegclip.data.synthetic``: write the synthetic dataset (options, exit codes).

The work is done by :mod:`zegclip.data.synthetic`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import zegclip.data.synthetic as lib
from zegclip.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m zegclip.data.synthetic", description=lib.__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder (dataset root)")
    parser.add_argument(
        "--layout",
        choices=sorted(lib.LAYOUT_WRITERS),
        default="voc",
        help="voc: the PASCAL VOC 2012 layout (dataset synthetic); folder: images/, labels/, classes.txt, "
        "train.txt, val.txt (dataset folder, for your own data)",
    )
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--num-val", type=int, default=12)
    parser.add_argument("--size", type=int, nargs="+", default=[160], help="side or H W")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--border", type=int, default=2)
    return parser


def _write(args: argparse.Namespace) -> int:
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    options = {"num_train": args.num_train, "num_val": args.num_val, "size": size, "seed": args.seed}
    root = lib.write_synthetic(args.out, args.layout, border=args.border, **options)
    print(f"wrote synthetic {'VOC' if args.layout == 'voc' else 'folder'}-layout dataset to {root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when written, 2 on settings the generator cannot honour (one ``error:`` line)."""
    return run_command(_write, build_parser().parse_args(argv))
