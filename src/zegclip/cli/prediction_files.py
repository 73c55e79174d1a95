"""The outputs of ``zegclip predict`` and the demo, and the rule that protects other files.

Per image: ``<stem>_label.png`` (palette label map at the original size), ``<stem>_overlay.jpg``
(image blended with the colours) and one JSON line in ``predictions.jsonl``. The records of
``predictions.jsonl`` are also the list of what this command wrote into a folder: a file they
do not list is never written over, and an input never is.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from zegclip.atomic import atomic_write
from zegclip.cli.image_files import Job, first_free_stem
from zegclip.errors import UsageError
from zegclip.segmentation import SegmentResult
from zegclip.visualize import label_image, overlay_image

PREDICTIONS_FILE = "predictions.jsonl"
LABEL_SUFFIX = "_label.png"
OVERLAY_SUFFIX = "_overlay.jpg"

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


# ---------------------------------------------------------------- predictions.jsonl


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


# ---------------------------------------------------------------- which names are free


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
    names = [record.get(key) for record in ours for key in ("label_png", "overlay")]
    inside = [n for n in names if isinstance(n, str) and not Path(n).is_absolute() and ".." not in Path(n).parts]
    return {file_id for file_id in map(_file_id, (output / name for name in inside)) if file_id is not None}


def place_outputs(jobs: Sequence[Job], output: Path, ours: set[FileId]) -> list[Job]:
    """The jobs with output stems whose files are neither an input nor a file this command did not write.

    A stem whose label or overlay would replace an input, or an existing file not listed
    in ``ours`` (:func:`earlier_outputs`), gets the next free ``_2``, ``_3``, ... suffix.
    """
    inputs = {_file_id(job.image) for job in jobs} - {None}
    used: set[str] = set()

    def taken(candidate: Path) -> bool:
        ids = [_file_id(path) for path in output_paths(output, candidate)]
        return str(candidate).lower() in used or any(i is not None and (i in inputs or i not in ours) for i in ids)

    placed = []
    for job in jobs:
        stem = first_free_stem(job.stem, taken)
        used.add(str(stem).lower())
        placed.append(Job(job.image, stem, job.name))
    return placed


def skip_earlier_outputs(jobs: list[Job], output: Path) -> list[Job]:
    """Leave out the inputs an earlier run wrote into ``output``; place the outputs of the others.

    Raises:
        UsageError: every input is such an output (nothing to segment).
    """
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


# ---------------------------------------------------------------- writing


def _save_atomic(image: Image.Image, path: Path, fmt: str, **kwargs) -> None:
    """Write to a temporary name next to ``path``, then rename (never a half-written file)."""
    with atomic_write(path, durable=False) as f:
        image.save(f, format=fmt, **kwargs)


def write_outputs(job: Job, image: np.ndarray, result: SegmentResult, output: Path, *, legend: bool = True) -> dict:
    """Label PNG, overlay JPEG (its legend drawn unless ``legend`` is False), then the JSON line
    (last, so a listed image is complete). Returns the record."""
    label_path, overlay_path = output_paths(output, job.stem)
    _save_atomic(label_image(result.labels), label_path, "PNG")
    _save_atomic(overlay_image(image, result, legend=legend), overlay_path, "JPEG", quality=90)
    record = {
        "image": job.label,
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
