"""The open-vocabulary table: one checkpoint evaluated on every benchmark, one table out.

``zegclip suite --checkpoint PATH [--benchmarks A-847,PC-459,...] [Hydra overrides]`` runs
``zegclip eval`` for each benchmark (the model is loaded once), each into its own folder,
and writes ``suite.md`` and ``suite.csv``: mIoU per benchmark in the column order of the
open-vocabulary papers (SAN, CAT-Seg, ODISE): A-847, PC-459, A-150, PC-59, PAS-20.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import hydra

from zegclip.atomic import atomic_write
from zegclip.errors import ZegCLIPError, run_command
from zegclip.model import load_model
from zegclip.openvino import BACKENDS
from zegclip.training.config import compose_config
from zegclip.training.eval import evaluate

BENCHMARKS: dict[str, str] = {
    "A-847": "coco_to_ade847",
    "PC-459": "coco_to_pc459",
    "A-150": "coco_to_ade150",
    "PC-59": "coco_to_pc59",
    "PAS-20": "coco_to_voc",
}
"""Column name -> the evaluation experiment behind it (conf/experiment/<name>.yaml)."""


class SuiteError(ZegCLIPError):
    """A benchmark that cannot run (unknown name, missing dataset); nothing was evaluated."""


def _configs(names: Sequence[str], output: Path, overrides: Sequence[str], checkpoint: str) -> dict:
    configs = {}
    for name in names:
        experiment = BENCHMARKS[name]
        where = [f"experiment={experiment}", f"checkpoint={checkpoint}", f"paths.output_dir={output / experiment}"]
        configs[name] = compose_config("eval", [*where, *overrides])
    return configs


def check_data(configs: dict) -> None:
    """Every benchmark's data root exists, checked before any model loads."""
    missing = []
    for name, cfg in configs.items():
        try:
            hydra.utils.instantiate(cfg.data, _convert_="all").check_root()
        except ZegCLIPError as err:
            missing.append(f"{name}: {err}")
    if missing:
        raise SuiteError(
            "missing datasets (prepare them, or choose benchmarks with --benchmarks): " + " | ".join(missing)
        )


def write_table(results: dict[str, float], output: Path, checkpoint: str) -> tuple[Path, Path]:
    """``suite.md`` and ``suite.csv`` in ``output``: one row, mIoU per benchmark (percent)."""
    names = list(results)
    csv_path, md_path = output / "suite.csv", output / "suite.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["checkpoint", *names])
        writer.writerow([checkpoint, *(f"{results[n]:.1f}" for n in names)])
    lines = [
        f"mIoU (%) of `{checkpoint}`, {datetime.now():%Y-%m-%d}",
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
        "| " + " | ".join(f"{results[n]:.1f}" for n in names) + " |",
    ]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


RESULTS_FILE = "suite.json"
"""Kept in ``--output`` after each benchmark: a rerun there evaluates only the missing ones."""


def _earlier_results(output: Path, checkpoint: str) -> dict[str, float]:
    path = output / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return dict(saved.get("results", {})) if saved.get("checkpoint") == checkpoint else {}


def _keep_results(output: Path, checkpoint: str, results: dict[str, float]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(output / RESULTS_FILE, "w") as f:
        json.dump({"checkpoint": checkpoint, "results": results}, f, indent=2)


def run_suite(checkpoint: str, names: Sequence[str], output: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Evaluate ``checkpoint`` on ``names`` (keys of :data:`BENCHMARKS`); returns mIoU per benchmark.

    Each result is kept in ``output/suite.json`` as soon as it is known, so a suite stopped
    by SIGTERM or Ctrl-C (exit 143 / 130) keeps what it evaluated, and the same command
    evaluates only the benchmarks still missing.
    """
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SuiteError(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
    earlier = _earlier_results(output, checkpoint)
    kept = {n: earlier[n] for n in names if n in earlier}
    if kept:
        print(f"kept from an earlier run in {output}: {', '.join(kept)}")
    todo = [n for n in names if n not in kept]
    configs = _configs(todo, output, overrides, checkpoint)
    check_data(configs)
    results = dict(kept)
    if todo:
        network = load_model(checkpoint)
        for name, cfg in configs.items():
            results[name] = evaluate(cfg, network=network)["val/mIoU"]
            _keep_results(output, checkpoint, {**earlier, **results})
    results = {n: results[n] for n in names}
    md_path, csv_path = write_table(results, output, checkpoint)
    print(md_path.read_text(), end="")
    print(f"wrote {md_path} and {csv_path}; per-benchmark outputs in {output}/<experiment>/")
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zegclip suite", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    parser.add_argument(
        "--benchmarks", default=",".join(BENCHMARKS), help=f"comma-separated, of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--output", type=Path, help="folder for the table and per-benchmark outputs")
    parser.add_argument(
        "--backend", default="torch", choices=BACKENDS, help="openvino: the image side in OpenVINO (backend= of eval)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every benchmark, e.g. paths.data_dir=/data")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = args.output or Path("outputs") / "suite" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]
    with stop_signals() as received:
        try:
            return run_command(run_suite, args.checkpoint, names, output, [f"backend={args.backend}", *args.overrides])
        except SystemExit:  # Lightning ends an evaluation stopped by SIGTERM / Ctrl-C with SystemExit
            if not received:
                raise
            done = list(_earlier_results(output, args.checkpoint))
            print(
                f"interrupted: {signal.Signals(received[-1]).name}; evaluated {', '.join(done) or 'nothing'} "
                f"(kept in {output / RESULTS_FILE}); the same command with --output {output} evaluates the rest",
                file=sys.stderr,
            )
            return 128 + received[-1]  # 143 after SIGTERM, 130 after Ctrl-C


@contextlib.contextmanager
def stop_signals():
    """Record SIGTERM / SIGINT (in a list this yields) and pass them on to the handlers before.

    Lightning stops an evaluation on either and ends it with ``SystemExit``; the list tells
    that exit apart from others.
    """
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def record(signum: int, frame) -> None:
        received.append(signum)
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        elif handler == signal.SIG_DFL:  # SIGTERM with nobody listening: stop here
            raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    for signum in previous:
        signal.signal(signum, record)
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
