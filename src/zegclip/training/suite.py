"""The open-vocabulary table: one checkpoint evaluated on every benchmark, one table out.

``zegclip suite --checkpoint PATH [--benchmarks A-847,PC-459,...] [Hydra overrides]`` runs
``zegclip eval`` for each benchmark (the model is loaded once), each into its own folder,
and writes ``suite.md`` and ``suite.csv``: mIoU per benchmark in the column order of the
open-vocabulary papers (SAN, CAT-Seg, ODISE): A-847, PC-459, A-150, PC-59, PAS-20.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import hydra

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


def run_suite(checkpoint: str, names: Sequence[str], output: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Evaluate ``checkpoint`` on ``names`` (keys of :data:`BENCHMARKS`); returns mIoU per benchmark."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SuiteError(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
    configs = _configs(names, output, overrides, checkpoint)
    check_data(configs)
    network = load_model(checkpoint)
    results = {name: evaluate(cfg, network=network)["val/mIoU"] for name, cfg in configs.items()}
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
    return run_command(run_suite, args.checkpoint, names, output, [f"backend={args.backend}", *args.overrides])


if __name__ == "__main__":
    sys.exit(main())
