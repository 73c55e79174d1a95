"""Check a prepared dataset before training on it.

Usage::

    python -m zegclip.data.verify {voc,coco_stuff,context,pc459,ade150,ade847} --root DIR [--sample N]

``--root`` is the prepare ``--out`` folder. Checks: every id of every split has an
image and a label; on a sample of labels (fixed seed): single-channel index maps
(not colour PNGs; 16-bit for pc459 and ade847), values in the dataset's range, label size equal to
the stored image size, and a class histogram that looks like a segmentation dataset's. Images
with an EXIF orientation tag (viewers show them turned; the readers use the stored pixels) are
named in a warning. A sampled image or
label that cannot be decoded (truncated, not an image) is a problem naming the file.
Exit status: 0 all well, 1 problems found, 2 wrong arguments. The command line is
:mod:`zegclip.cli.verify`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zegclip.data.checks import (  # noqa: F401 (re-exported, as before)
    DEFAULT_SAMPLE,
    ORIENTATION_TAG,
    VerifyReport,
    check_presence,
    examples,
    exif_orientation,
    image_size,
    orientation_warning,
    size_mismatch,
)
from zegclip.data.classes import DATASETS
from zegclip.data.folder import verify_folder
from zegclip.data.prepare import PrepareError, dataset_items, valid_label_values
from zegclip.errors import ZegCLIPError

logger = logging.getLogger("zegclip.data.verify")  # fixed: __name__ is "__main__" under python -m

MIN_CLASSES = {"voc": 5, "context": 10, "coco_stuff": 20, "pc459": 20, "ade150": 20, "ade847": 20}
"""Fewest distinct classes (background and the ignore value not counted) a full-size sample must show."""
MIN_LABELS_FOR_HISTOGRAM = 50
"""Below this many sampled labels the histogram checks only warn."""
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I")
"""Modes of 16-bit grayscale PNGs (``I``: as some Pillow versions open them), for labels above 255 classes."""


class VerifyError(ZegCLIPError, ValueError):
    """A wrong argument to the checks (not a problem found in the data: those are reported)."""


def colour_label_message(name: str, paths: Sequence[Path], mode: str) -> str:
    """The problem reported for colour (RGB/RGBA) label PNGs."""
    return (
        f"{len(paths)} sampled label(s) are COLOUR images (mode {mode}), e.g. {examples(paths)}: "
        "labels must be single-channel class-index maps; a colour label read as indices was "
        "the most common cause of near-zero mIoU. Fix: use the official VOC SegmentationClass "
        "palette PNGs as they are (they read as indices) and the grayscale PNGs written by "
        f"`python -m zegclip.data.prepare {name} --raw DIR --out DIR`; never re-save labels "
        "as RGB."
    )


def _decode(path: Path, unreadable: list[str]) -> tuple[str, np.ndarray | None] | None:
    """Open and fully decode an image: ``(mode, array or None for modes other than L/P)``.

    A file that cannot be decoded (truncated, corrupt, not an image) is added to
    ``unreadable`` as ``"<path> (<reason>)"`` and None is returned.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return im.mode, (np.asarray(im) if im.mode in ("L", "P", *_WIDE_MODES) else None)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        reason = " ".join(str(e).split()) or type(e).__name__
        unreadable.append(f"{path} ({reason})")
        return None


def _label_counts(
    label: np.ndarray, label_path: Path, valid: np.ndarray, bad_values: dict[int, list[Path]]
) -> np.ndarray:
    """A label's histogram over the valid range; each value outside it names the file in ``bad_values``."""
    values = label.ravel().astype(np.int64)
    beyond = (values < 0) | (values >= len(valid))  # mode I only: 32-bit values
    for v in np.unique(values[beyond]):
        bad_values.setdefault(int(v), []).append(label_path)
    counts = np.bincount(values[~beyond], minlength=len(valid))
    for v in np.flatnonzero((counts > 0) & ~valid):
        bad_values.setdefault(int(v), []).append(label_path)
    return counts


@dataclass
class _LabelFindings:
    """What the sampled label maps showed, gathered before it is reported."""

    colour: dict[str, list[Path]] = field(default_factory=dict)
    bad_mode: list[str] = field(default_factory=list)
    bad_values: dict[int, list[Path]] = field(default_factory=dict)
    bad_size: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    tagged: list[str] = field(default_factory=list)


def _scan_pair(
    image_path: Path, label_path: Path, modes: Sequence[str], valid: np.ndarray, found: _LabelFindings
) -> np.ndarray | None:
    """The label value counts of one (image, label) pair; None (and a finding) when it cannot be counted."""
    decoded = _decode(label_path, found.unreadable)
    image = _decode(image_path, found.unreadable)
    if decoded is None:
        return None
    mode, label = decoded
    if mode in ("RGB", "RGBA"):
        found.colour.setdefault(mode, []).append(label_path)
        return None
    if label is None or mode not in modes:
        found.bad_mode.append(f"{label_path} ({mode})")
        return None
    if image is None:
        return None
    width, height, orientation = image_size(image_path, found.tagged)
    if label.shape != (height, width):
        found.bad_size.append(size_mismatch(label_path, label.shape, width, height, orientation))
    return _label_counts(label, label_path, valid, found.bad_values)


def _report_labels(name: str, valid: np.ndarray, wide: bool, found: _LabelFindings, report: VerifyReport) -> None:
    """One problem (or warning) line per kind of finding."""
    if found.unreadable:
        report.problems.append(
            f"{len(found.unreadable)} sampled file(s) cannot be decoded (truncated, corrupt or not an image; "
            "check the download, delete these files and re-run prepare): "
            f"{examples(found.unreadable)}"
        )
    for mode, paths in found.colour.items():
        report.problems.append(colour_label_message(name, paths, mode))
    if found.bad_mode:
        kind = "16-bit index maps (mode I;16)" if wide else "8-bit index maps (mode L or P)"
        report.problems.append(f"{len(found.bad_mode)} sampled label(s) are not {kind}: {examples(found.bad_mode)}")
    if found.bad_values:
        ignore = DATASETS[name].ignore_index
        allowed = "0..59" if name == "context" else f"0..{int(np.flatnonzero(valid[:ignore]).max())} or {ignore}"
        paths = sorted({p for ps in found.bad_values.values() for p in ps})
        report.problems.append(
            f"{len(paths)} sampled label(s) hold values outside {allowed} "
            f"(values {sorted(found.bad_values)[:10]}), e.g. {examples(paths)}"
        )
    if found.bad_size:
        report.problems.append(
            f"{len(found.bad_size)} sampled label(s) differ in size from their image: {examples(found.bad_size)}"
        )
    if found.tagged:
        report.warnings.append(orientation_warning(found.tagged))


def _check_labels(name: str, pairs: list[tuple[Path, Path]], report: VerifyReport) -> None:
    valid = valid_label_values(name)
    wide = DATASETS[name].ignore_index > 255  # 16-bit labels
    modes = _WIDE_MODES if wide else ("L", "P")
    found = _LabelFindings()
    for image_path, label_path in pairs:
        counts = _scan_pair(image_path, label_path, modes, valid, found)
        if counts is not None:
            report.histogram += counts
    _report_labels(name, valid, wide, found, report)


def _check_histogram(name: str, report: VerifyReport) -> None:
    hist, total = report.histogram, int(report.histogram.sum())
    if not total:
        return
    found = []
    top = int(hist.argmax())
    if hist[top] == total:
        found.append(f"all {total} sampled label pixels have value {top}")
    classes = np.flatnonzero(hist > 0)
    first = 1 if DATASETS[name].reduce_zero_label else 0  # background is no class
    classes = [int(c) for c in classes if c >= first and c != DATASETS[name].ignore_index]
    if len(classes) < MIN_CLASSES[name]:
        found.append(
            f"only {len(classes)} distinct classes in the sampled labels "
            f"(expected at least {MIN_CLASSES[name]} for {name})"
        )
    small = report.sampled < MIN_LABELS_FOR_HISTOGRAM
    for msg in found:
        (report.warnings if small else report.problems).append(
            msg + (f" (only {report.sampled} labels sampled)" if small else "")
        )


def verify_report(name: str, root: str | Path, sample: int = DEFAULT_SAMPLE) -> VerifyReport:
    """Run every check on a prepared dataset and return the full report.

    Raises:
        VerifyError: if ``sample`` is below 1.
    """
    if sample < 1:
        raise VerifyError(f"sample must be at least 1 (labels to read), got {sample}")
    if name == "folder":  # your own images (labels ignoring 255; else call verify_folder)
        return verify_folder(root, sample)
    report = VerifyReport()
    try:
        items = dataset_items(name, root)
    except PrepareError as e:
        report.problems.append(str(e))
        return report
    check_presence(items, report)
    pairs = sorted({(img, lab) for rows in items.values() for _i, img, lab in rows if img.is_file() and lab.is_file()})
    if sample < len(pairs):
        pairs = random.Random(0).sample(pairs, sample)
    report.sampled = len(pairs)
    report.histogram = np.zeros(len(valid_label_values(name)), dtype=np.int64)  # 65536 values for 16-bit labels
    _check_labels(name, pairs, report)
    _check_histogram(name, report)
    return report


def verify_dataset(name: str, root: str | Path, sample: int = DEFAULT_SAMPLE) -> list[str]:
    """Check a prepared dataset.

    Args:
        name: ``voc``, ``coco_stuff`` or ``context``.
        root: The prepare ``--out`` folder (holding ``VOCdevkit/`` or ``coco_stuff164k/``).
        sample: Labels to read (random, fixed seed; all if fewer).

    Returns:
        The problems found (empty if the dataset looks right). Soft findings on tiny
        samples are logged as warnings.
    """
    report = verify_report(name, root, sample)
    for msg in report.warnings:
        logger.warning(msg)
    return report.problems
