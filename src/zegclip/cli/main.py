"""``zegclip <command> ...``: one command for every tool.

Each subcommand is also reachable as before: ``python -m zegclip.train``,
``python -m zegclip.eval``, ``python -m zegclip.predict`` (or ``zegclip-predict``),
``python -m zegclip.data.prepare``, ``python -m zegclip.data.verify``,
``python -m zegclip.data.synthetic``, ``python -m zegclip.export``, ``python -m zegclip.efficiency``.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import warnings
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("zegclip.training.train", "train (Hydra overrides: experiment=voc_inductive ...)"),
    "eval": ("zegclip.training.eval", "evaluate a checkpoint (experiment=... checkpoint=PATH)"),
    "suite": ("zegclip.training.suite", "evaluate a checkpoint on the open-vocabulary benchmarks, one table"),
    "predict": ("zegclip.cli.predict", "segment images with any vocabulary"),
    "demo": ("zegclip.cli.demo", "web page to segment uploaded images (needs the demo extra)"),
    "prepare": ("zegclip.cli.prepare", "prepare a dataset from its raw archives"),
    "verify": ("zegclip.cli.verify", "check a prepared dataset before training"),
    "synthetic": ("zegclip.cli.synthetic", "write the small synthetic dataset (VOC or folder layout)"),
    "export": ("zegclip.cli.export", "export the network to ONNX"),
    "efficiency": ("zegclip.cli.efficiency", "parameters, FLOPs and images/s of a model"),
}
HYDRA_COMMANDS = {"train": "zegclip.train", "eval": "zegclip.eval"}
"""Hydra apps (they read their overrides from ``sys.argv``) and the module each runs as."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return (
        "usage: zegclip <command> [options]\n\ncommands:\n"
        + "\n".join(lines)
        + ("\n\n`zegclip <command> --help` for a command's options.")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if name in HYDRA_COMMANDS:
        run_as_main(HYDRA_COMMANDS[name], rest)  # exits with its own code on errors
        return 0
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


def run_as_main(module: str, args: Sequence[str]) -> None:
    """Run ``module`` exactly as ``python -m module args`` would, in this process.

    Processes that re-run the command (Lightning's DDP launcher starts each extra rank with
    ``python -m <__main__'s module> <sys.argv[1:]>``) then find a real module to run, not
    the name of this console script.
    """
    saved = sys.argv
    sys.argv = [module, *args]
    try:
        with warnings.catch_warnings():  # already imported by an earlier in-process call (tests)
            warnings.filterwarnings("ignore", message=".*found in sys.modules.*", category=RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
