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
import gc
import glob
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from zegclip.atomic import atomic_write
from zegclip.data.classes import DATASETS
from zegclip.errors import UsageError, ensure_writable_folder, run_command
from zegclip.model import ZegCLIP, load_model
from zegclip.model.build import zegclip_tiny
from zegclip.openvino import BACKENDS, command_precision, compile_model
from zegclip.openvino import PRECISIONS as OPENVINO_PRECISIONS
from zegclip.segmentation import (
    MAX_ASPECT_RATIO,
    MAX_SHORT_SIDE,
    MIN_SIDE,
    PRECISIONS,
    ImageReadError,
    ScaleWarning,
    SegmentResult,
    Vocabulary,
    load_image,
    parse_vocabulary,
    resolve_device,
    seen_mask,
    segment_batch,
)
from zegclip.visualize import label_image, overlay_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PREDICTIONS_FILE = "predictions.jsonl"
LABEL_SUFFIX = "_label.png"
OVERLAY_SUFFIX = "_overlay.jpg"


@dataclass(frozen=True)
class Job:
    """One input image and the output stem (relative to the output folder) for it."""

    image: Path
    stem: Path


# ---------------------------------------------------------------- inputs


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def collect_jobs(inputs: Sequence[str]) -> list[Job]:
    """Expand files, folders (recursive) and glob patterns into jobs with unique output stems.

    Raises:
        UsageError: an input neither exists nor matches anything.
    """
    found: list[tuple[Path, Path]] = []  # (image, name relative to the output folder)
    for spec in inputs:
        path = Path(spec)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p))
            if not images:
                raise UsageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {spec}")
            found += [(p, p.relative_to(path)) for p in images]
        elif path.is_file():
            found.append((path, Path(path.name)))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
            images = [p for p in matches if p.is_file() and _is_image(p)]
            if not images:
                raise UsageError(f"no images match {spec!r}")
            found += [(p, Path(p.name)) for p in images]
        else:
            raise UsageError(f"input not found: {spec}")
    jobs, used, done = [], set(), set()
    for image, rel in found:
        key = image.resolve()
        if key in done:  # the same file named twice
            continue
        done.add(key)
        stem = rel.with_suffix("")
        candidate, n = stem, 1
        while str(candidate).lower() in used:  # a.jpg and a.png, or same names from two folders
            n += 1
            candidate = stem.with_name(f"{stem.name}_{n}")
        used.add(str(candidate).lower())
        jobs.append(Job(image, candidate))
    return jobs


def parse_seen(spec: str | None, vocabulary: Vocabulary) -> list[str] | None:
    """``--seen``: names separated by ``;`` or ``,``, or a dataset name (its seen classes)."""
    if spec is None:
        return None
    if spec.strip() in DATASETS:
        info = DATASETS[spec.strip()]
        names = [info.class_names[i] for i in info.seen_ids]
    else:
        names = [n.strip() for n in spec.replace(";", ",").split(",") if n.strip()]
    seen_mask(vocabulary, names)  # raises for names outside the vocabulary
    return names


# ---------------------------------------------------------------- outputs


def _save_atomic(image: Image.Image, path: Path, fmt: str, **kwargs) -> None:
    """Write to a temporary name next to ``path``, then rename (never a half-written file)."""
    with atomic_write(path, durable=False) as f:
        image.save(f, format=fmt, **kwargs)


def _record_keys(record: dict) -> tuple[str | None, str | None]:
    """(image, label file) identifying a predictions.jsonl record; None where absent."""
    image, label = record.get("image"), record.get("label_png")
    image = os.path.normcase(os.path.abspath(image)) if isinstance(image, str) else None
    return image, label if isinstance(label, str) else None


def _read_records(path: Path) -> tuple[str, list[dict]] | None:
    """(text, the JSON-object lines) of predictions.jsonl; None when there is no such file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return text, records


def compact_predictions(path: Path) -> None:
    """Keep one line per image and per label file in predictions.jsonl, the latest.

    Runs into the same folder append; an image processed again (or another image written
    to the same output names) replaces the older line. Lines that are not JSON objects
    (e.g. cut short by a killed run) are dropped. Rewritten atomically, only when changed.
    """
    read = _read_records(path)
    if read is None:
        return
    text, records = read
    kept, images, labels = [], set(), set()
    for record in reversed(records):  # the latest line of each image / label file wins
        image, label = _record_keys(record)
        if (image is not None and image in images) or (label is not None and label in labels):
            continue
        images.add(image)
        labels.add(label)
        kept.append(record)
    compacted = "".join(json.dumps(record) + "\n" for record in reversed(kept))
    if compacted != text:
        with atomic_write(path, durable=False) as f:
            f.write(compacted.encode("utf-8"))


FileId = tuple[int, int]
"""(device, inode): the same file under any name (links, case-insensitive file systems)."""


def _file_id(path: Path) -> FileId | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def output_paths(output: Path, stem: Path) -> tuple[Path, Path]:
    """(label PNG, overlay JPEG) of the output stem ``stem``."""
    return output / stem.with_name(stem.name + LABEL_SUFFIX), output / stem.with_name(stem.name + OVERLAY_SUFFIX)


def earlier_outputs(output: Path) -> set[FileId]:
    """The files an earlier run wrote into ``output``: those its predictions.jsonl lists.

    Raises:
        UsageError: ``predictions.jsonl`` exists but holds no record of zegclip predict
            (someone else's file, which the run would rewrite).
    """
    path = output / PREDICTIONS_FILE
    read = _read_records(path)
    if read is None:
        return set()
    text, records = read
    ours = [r for r in records if isinstance(r.get("label_png"), str)]
    if text.strip() and not ours:
        raise UsageError(f"{path} exists and was not written by zegclip predict; choose another --output")
    found = set()
    for record in ours:
        for key in ("label_png", "overlay"):
            name = record.get(key)
            if isinstance(name, str) and not Path(name).is_absolute() and ".." not in Path(name).parts:
                file_id = _file_id(output / name)
                if file_id is not None:
                    found.add(file_id)
    return found


def place_outputs(jobs: Sequence[Job], output: Path, ours: set[FileId]) -> list[Job]:
    """The jobs with output stems whose files are neither an input nor a file this command did not write.

    A stem whose label or overlay would replace an input, or an existing file not listed
    in ``ours`` (:func:`earlier_outputs`), gets the next free ``_2``, ``_3``, ... suffix.
    """
    inputs = {_file_id(job.image) for job in jobs} - {None}
    used: set[str] = set()
    placed = []
    for job in jobs:
        stem, n = job.stem, 1
        while True:
            candidate = stem if n == 1 else stem.with_name(f"{stem.name}_{n}")
            ids = [_file_id(path) for path in output_paths(output, candidate)]
            taken = any(i is not None and (i in inputs or i not in ours) for i in ids)
            if str(candidate).lower() not in used and not taken:
                break
            n += 1
        used.add(str(candidate).lower())
        placed.append(Job(job.image, candidate))
    return placed


def write_outputs(job: Job, image: np.ndarray, result: SegmentResult, output: Path, *, legend: bool = True) -> dict:
    """Label PNG, overlay JPEG (its legend drawn unless ``legend`` is False), then the JSON line
    (last, so a listed image is complete)."""
    label_path, overlay_path = output_paths(output, job.stem)
    _save_atomic(label_image(result.labels), label_path, "PNG")
    _save_atomic(overlay_image(image, result, legend=legend), overlay_path, "JPEG", quality=90)
    record = {
        "image": str(job.image),
        "label_png": str(label_path.relative_to(output)),
        "overlay": str(overlay_path.relative_to(output)),
        "classes": result.class_names,
        "areas": {name: round(area, 4) for name, area in result.areas().items()},
    }
    if result.note is not None:
        record["note"] = result.note
    with open(output / PREDICTIONS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The command line options."""
    parser = argparse.ArgumentParser(
        prog="zegclip-predict",
        description="Segment images with ZegCLIP and a vocabulary of your choice.",
        epilog='example: zegclip-predict photos/ --checkpoint ZegCLIP_voc.pth --classes "cat; grass, lawn" -o out/',
    )
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="ZegCLIP.save file, training .ckpt, or the authors' .pth")
    source.add_argument("--tiny", action="store_true", help="tiny random model (demos and tests; meaningless masks)")
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
        "--short-side",
        type=int,
        default=512,
        help=f"resize so the short side is this, {MIN_SIDE}..{MAX_SHORT_SIDE} (paper: 512; 0: keep size); "
        f"the long side is capped at {MAX_ASPECT_RATIO:g}x this",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="openvino: the image side in OpenVINO, CPU only (pip install 'zegclip[openvino]'; converted once, cached)",
    )
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


def load_checkpoint_model(args: argparse.Namespace) -> ZegCLIP:
    """The model of ``--checkpoint`` (any kind), or the seeded tiny model with ``--tiny``."""
    if args.tiny:
        torch.manual_seed(0)
        return zegclip_tiny()
    return load_model(args.checkpoint, map_location="cpu")  # a file that does not fit: CheckpointError


def default_precision(device: torch.device) -> str:
    """fp32 on a CPU (bf16 pays off only with AMX or AVX-512 bf16); bf16 on a GPU that has it, else fp16."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def check_args(args: argparse.Namespace) -> None:
    """Option values that can be checked without reading anything."""
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.short_side != 0 and not MIN_SIDE <= args.short_side <= MAX_SHORT_SIDE:
        raise UsageError(
            f"--short-side must be between {MIN_SIDE} and {MAX_SHORT_SIDE} (or 0 to keep the image size), "
            f"got {args.short_side}"
        )


def prepare_output(output: Path) -> None:
    """Create the output folder and check it is writable (before the model loads)."""
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} exists and is not a folder")
    ensure_writable_folder(output)


def one_line(err: BaseException) -> str:
    """``Type: first line of the message``, for a per-image error line."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def segment_jobs(
    model: ZegCLIP, loaded: list[tuple[Job, np.ndarray]], **options
) -> Iterator[tuple[Job, np.ndarray, SegmentResult | Exception]]:
    """Segment loaded images; a failure (out of memory, ...) is returned for its image alone.

    A group (whole mode) that fails is retried one image at a time, so the other images
    of the group still get their result.
    """
    if not loaded:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScaleWarning)  # reported from result.note instead
            results = list(segment_batch(model, [image for _, image in loaded], **options))
    except Exception as err:  # one bad image must not stop the others
        err.__traceback__ = None  # its frames hold the failed batch's tensors
        _free_memory()
        if len(loaded) > 1:
            for item in loaded:
                yield from segment_jobs(model, [item], **options)
            return
        job, image = loaded[0]
        yield job, image, err
        return
    for (job, image), result in zip(loaded, results, strict=True):
        yield job, image, result


def skip_earlier_outputs(jobs: list[Job], output: Path) -> list[Job]:
    """Leave out the inputs an earlier run wrote into ``output``; place the outputs of the others."""
    ours = earlier_outputs(output)
    kept = [job for job in jobs if _file_id(job.image) not in ours]
    if len(kept) < len(jobs):
        print(
            f"note: {len(jobs) - len(kept)} input(s) are outputs of an earlier run into {output} "
            f"(listed in its {PREDICTIONS_FILE}): not segmented again",
            file=sys.stderr,
        )
        if not kept:
            raise UsageError(f"every input is an output of an earlier run into {output}; nothing to segment")
    return place_outputs(kept, output, ours)


def run(args: argparse.Namespace) -> int:
    """Segment every input; returns the exit code (0 all done, 1 some failed)."""
    check_args(args)
    jobs = collect_jobs(args.images)
    vocabulary = parse_vocabulary(args.classes)
    seen = parse_seen(args.seen, vocabulary)
    output = Path(args.output)
    device = str(args.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available")
    prepare_output(output)
    jobs = skip_earlier_outputs(jobs, output)
    if args.backend == "openvino":
        openvino_fp = command_precision(args.precision, device)
        if args.compile:
            raise UsageError("--compile is for --backend torch (OpenVINO compiles its own graphs)")
    elif args.precision is not None and args.precision not in PRECISIONS:
        raise UsageError(f"--precision {args.precision} is for --backend openvino")
    model = load_checkpoint_model(args)
    device = resolve_device(device, model)
    model.to(device).eval()
    if args.backend == "openvino":  # the image side in OpenVINO; scores, windows and text stay as they are
        model = compile_model(model, openvino_fp, release_torch_weights=True)  # this process segments through it only
        print(f"backend: {model.describe()}", file=sys.stderr)
        precision = "fp32"  # no torch autocast around it
    else:
        precision = args.precision or default_precision(device)
    if precision != "fp32":  # frozen CLIP weights cast once instead of by autocast on every call
        model.image_encoder.cast_frozen_matmuls(PRECISIONS[precision])
    if args.compile:
        model.image_encoder.compile_for_inference()
    options = {
        "classes": vocabulary,
        "templates": args.templates,
        "seen": seen,
        "mode": args.mode,
        "short_side": args.short_side or None,
        "device": device,
        "precision": precision,
        "batch_size": args.batch_size,
        "keep_scores": False,
    }
    predictions = output / PREDICTIONS_FILE
    try:
        compact_predictions(predictions)  # also ends the file with a newline before appending
    except OSError as err:
        raise UsageError(f"cannot update {predictions}: {err.strerror or err}") from err
    start, done, failed = time.perf_counter(), 0, 0
    chunk = args.batch_size if args.mode == "whole" else 1
    try:
        with tqdm(total=len(jobs), unit="img", desc="zegclip") as bar:
            for first in range(0, len(jobs), chunk):
                loaded = []
                for job in jobs[first : first + chunk]:
                    try:
                        loaded.append((job, load_image(job.image)))
                    except ImageReadError as err:
                        failed += 1
                        bar.write(f"error: {err}", file=sys.stderr)
                        bar.update()
                    except Exception as err:  # e.g. MemoryError decoding a huge image
                        failed += 1
                        bar.write(f"error: cannot read image {job.image}: {one_line(err)}", file=sys.stderr)
                        bar.update()
                for job, image, result in segment_jobs(model, loaded, **options):
                    if isinstance(result, Exception):
                        failed += 1
                        bar.write(f"error: cannot segment {job.image}: {one_line(result)}", file=sys.stderr)
                        bar.update()
                        continue
                    if result.note is not None:
                        bar.write(f"note: {job.image}: {result.note}", file=sys.stderr)
                    try:
                        write_outputs(job, image, result, output)
                        done += 1
                    except Exception as err:  # e.g. disk full, an image too large for JPEG
                        failed += 1
                        bar.write(f"error: cannot write outputs for {job.image}: {one_line(err)}", file=sys.stderr)
                    bar.update()
    finally:
        try:
            compact_predictions(predictions)
        except OSError as err:
            failed += 1
            print(f"error: cannot rewrite {predictions}: {err.strerror or err}", file=sys.stderr)
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
