"""Command line: segment image files with a ZegCLIP checkpoint and an open vocabulary.

Example::

    zegclip-predict photos/ --checkpoint ZegCLIP_voc.pth --classes "cat; grass, lawn; sky" --output out/

Writes, per image, ``<stem>_label.png`` (palette label map at the original size),
``<stem>_overlay.jpg`` (image blended with the colours, legend of the classes present)
and one JSON line in ``predictions.jsonl`` (one line per image across runs into the same
folder: a re-run replaces the lines of the images it processes again).

It never writes over an input nor over a file it did not write itself (a file that
``predictions.jsonl`` does not list): such a name gets a ``_2``, ``_3``, ... suffix. The
output folder may be an input folder: the files an earlier run wrote there are not
segmented again.

Exit codes: 0 every image done; 1 some image failed (each reported on one ``error:``
line; the others still run); 2 a usage or configuration error (one ``error:`` line,
nothing segmented).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from zegclip.cli.image_files import Job, collect_jobs
from zegclip.cli.model_options import add_model_options, check_model_options, load_checkpoint_model
from zegclip.cli.prediction_files import PREDICTIONS_FILE, compact_predictions, skip_earlier_outputs
from zegclip.cli.segment_files import Outcome, segment_files
from zegclip.data.classes import DATASETS
from zegclip.errors import UsageError, ensure_writable_folder, run_command
from zegclip.model import ZegCLIP
from zegclip.openvino import PRECISIONS as OPENVINO_PRECISIONS
from zegclip.openvino import command_precision, compile_model
from zegclip.segmentation import PRECISIONS, parse_vocabulary, resolve_device
from zegclip.vocabulary import seen_names


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="zegclip-predict",
        description="Segment images with ZegCLIP and a vocabulary of your choice.",
        epilog='example: zegclip-predict photos/ --checkpoint ZegCLIP_voc.pth --classes "cat; grass, lawn" -o out/',
    )
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    add_model_options(parser)
    parser.add_argument(
        "--classes",
        required=True,
        help='"cat; grass, lawn; sky" (";" between classes, "," between synonyms), a text file '
        "(one class per line), or a dataset name: " + ", ".join(sorted(DATASETS)),
    )
    parser.add_argument("--templates", default="single", choices=["single", "ensemble"], help="prompt templates")
    parser.add_argument(
        "--seen", help="classes the model was trained on (scores -0.1, inductive models), or a dataset name"
    )
    parser.add_argument("--mode", default="slide", choices=["slide", "whole"], help="sliding window or whole image")
    parser.add_argument(
        "--precision",
        choices=sorted({*PRECISIONS, *OPENVINO_PRECISIONS}),
        help="torch: fp32 on cpu, bf16 on cuda (fp16 on GPUs without bf16) by default; openvino: auto (bf16 where "
        "the CPU has it); bf16: about 3x faster on CPUs with AMX",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the image encoder (first image of each size compiles, ~1 min; then ~20%% faster)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="crops per forward: windows (slide) or same-size images (whole)"
    )
    parser.add_argument("--output", "-o", required=True, help="output folder")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Option values that can be checked without reading anything."""
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    check_model_options(args)
    if args.backend == "openvino":
        command_precision(args.precision, args.device)  # fp16, or a GPU: refused
        if args.compile:
            raise UsageError("--compile is for --backend torch (OpenVINO compiles its own graphs)")
    elif args.precision is not None and args.precision not in PRECISIONS:
        raise UsageError(f"--precision {args.precision} is for --backend openvino")


def default_precision(device: torch.device) -> str:
    """fp32 on a CPU (bf16 pays off only with AMX or AVX-512 bf16); bf16 on a GPU that has it, else fp16."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def prepare_output(output: Path) -> None:
    """Create the output folder and check it is writable (before the model loads)."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} exists and is not a folder")
    ensure_writable_folder(output)


def load_for_inference(args: argparse.Namespace) -> tuple[ZegCLIP, torch.device, str]:
    """(model ready to segment, its device, the autocast precision around it).

    With ``--backend openvino`` the image side runs in OpenVINO (scores, windows and text
    stay as they are) and no autocast is used; otherwise the frozen CLIP weights are cast
    once to a low precision instead of by autocast on every call, and ``--compile``
    compiles the image encoder.
    """
    model = load_checkpoint_model(args)
    device = resolve_device(args.device, model)
    model.to(device).eval()
    if args.backend == "openvino":  # this process segments through it only: torch's weights are let go
        model = compile_model(model, command_precision(args.precision, device), release_torch_weights=True)
        print(f"backend: {model.describe()}", file=sys.stderr)
        return model, device, "fp32"
    precision = args.precision or default_precision(device)
    if precision != "fp32":
        model.image_encoder.cast_frozen_matmuls(PRECISIONS[precision])
    if args.compile:
        model.image_encoder.compile_for_inference()
    return model, device, precision


def _compact(predictions: Path, before: bool) -> bool:
    """Compact predictions.jsonl (`compact_predictions`); False (after the run) when it cannot be rewritten."""
    try:
        compact_predictions(predictions)  # before: also ends the file with a newline before appending
    except OSError as err:
        if before:
            raise UsageError(f"cannot update {predictions}: {err.strerror or err}") from err
        print(f"error: cannot rewrite {predictions}: {err.strerror or err}", file=sys.stderr)
        return False
    return True


def report(outcome: Outcome, bar: tqdm) -> bool:
    """Print an image's note or error line above the progress bar; True when its outputs were written."""
    if outcome.result is not None and outcome.result.note is not None:
        bar.write(f"note: {outcome.job.label}: {outcome.result.note}", file=sys.stderr)
    if outcome.failed is not None:
        bar.write(f"error: {outcome.message()}", file=sys.stderr)
    bar.update()
    return outcome.failed is None


def segment_all(model: ZegCLIP, jobs: list[Job], output: Path, **options) -> tuple[int, int]:
    """Segment and write every job with a progress bar; (done, failed) image counts."""
    done = 0
    with tqdm(total=len(jobs), unit="img", desc="zegclip") as bar:
        for outcome in segment_files(model, jobs, output, **options):
            done += report(outcome, bar)
    return done, len(jobs) - done


def run(args: argparse.Namespace) -> int:
    """Segment every input; returns the exit code (0 all done, 1 some failed)."""
    check_args(args)
    jobs = collect_jobs(args.images)
    vocabulary = parse_vocabulary(args.classes)
    seen = seen_names(args.seen, vocabulary)
    output = Path(args.output)
    prepare_output(output)
    jobs = skip_earlier_outputs(jobs, output)
    model, device, precision = load_for_inference(args)
    predictions = output / PREDICTIONS_FILE
    _compact(predictions, before=True)
    start, done, failed = time.perf_counter(), 0, len(jobs)
    try:
        done, failed = segment_all(
            model,
            jobs,
            output,
            classes=vocabulary,
            templates=args.templates,
            seen=seen,
            mode=args.mode,
            short_side=args.short_side or None,
            device=device,
            precision=precision,
            batch_size=args.batch_size,
            keep_scores=False,
        )
    finally:
        failed += not _compact(predictions, before=False)
    seconds = time.perf_counter() - start
    print(
        f"done {done} image(s), failed {failed}, {seconds:.1f} s; outputs in {output} ({PREDICTIONS_FILE})",
        file=sys.stderr,
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zegclip-predict`` / ``python -m zegclip.predict``."""
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
