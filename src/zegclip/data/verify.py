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

from zegclip.data.classes import DATASETS
from zegclip.data.prepare import PrepareError, dataset_items, valid_label_values
from zegclip.errors import ZegCLIPError

logger = logging.getLogger("zegclip.data.verify")  # fixed: __name__ is "__main__" under python -m

DEFAULT_SAMPLE = 200
MIN_CLASSES = {"voc": 5, "context": 10, "coco_stuff": 20, "pc459": 20, "ade150": 20, "ade847": 20}
"""Fewest distinct classes (background and the ignore value not counted) a full-size sample must show."""
MIN_LABELS_FOR_HISTOGRAM = 50
"""Below this many sampled labels the histogram checks only warn."""
_EXAMPLES = 3
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I")
"""Modes of 16-bit grayscale PNGs (``I``: as some Pillow versions open them), for labels above 255 classes."""


class VerifyError(ZegCLIPError, ValueError):
    """A wrong argument to the checks (not a problem found in the data: those are reported)."""


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    sampled: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))


def examples(paths: Sequence[object]) -> str:
    """The first few of ``paths``, for a problem line."""
    return ", ".join(str(p) for p in paths[:_EXAMPLES]) + (", ..." if len(paths) > _EXAMPLES else "")


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


ORIENTATION_TAG = 0x0112
"""The EXIF tag that tells viewers to rotate or mirror a photo (1: as stored; 2..8: turned)."""
_TURNS = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees clockwise",
    7: "mirrored and rotated 90 degrees",
    8: "rotated 90 degrees counter-clockwise",
}


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image: 1 (as stored) when absent or not a valid value."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block: viewers ignore it too
        return 1
    return value if isinstance(value, int) and value in _TURNS else 1


def image_size(path: Path, tagged: list[str]) -> tuple[int, int, int]:
    """``(width, height, orientation)`` of an image as stored (header only); a turning tag goes to ``tagged``."""
    with Image.open(path) as im:
        orientation = exif_orientation(im)
        width, height = im.size
    if orientation != 1:
        tagged.append(f"{path} (orientation {orientation}: shown {_TURNS[orientation]})")
    return width, height, orientation


def size_mismatch(label_path: Path, shape: tuple[int, ...], width: int, height: int, orientation: int) -> str:
    """The problem line of a label whose size is not its image's, with a hint when the EXIF tag explains it."""
    text = f"{label_path} {shape[1]}x{shape[0]} vs image {width}x{height}"
    if orientation in (5, 6, 7, 8) and tuple(shape[:2]) == (width, height):
        text += f" (the label fits the image as a viewer shows it, EXIF orientation {orientation})"
    return text


def orientation_warning(tagged: Sequence[str]) -> str:
    """The warning about images whose EXIF tag makes viewers show them turned."""
    return (
        f"{len(tagged)} image(s) carry an EXIF orientation tag, so photo viewers show them turned, e.g. "
        f"{examples(tagged)}; training and evaluation read labelled images as stored, the tag ignored "
        "(VOC, COCO and ADE20K labels are drawn on the stored pixels): their labels must match the stored "
        "pixels, not the turned picture"
    )


def check_presence(items: dict[str, list[tuple[str, Path, Path]]], report: VerifyReport) -> None:
    """Every split non-empty and every listed id with an image and a label; sizes recorded."""
    for split, rows in items.items():
        report.split_sizes[split] = len(rows)
        if not rows:
            report.problems.append(f"{split}: the split is empty")
            continue
        for kind, col in (("image", 1), ("label", 2)):
            lacking = [row[col] for row in rows if not row[col].is_file()]
            if lacking:
                report.problems.append(
                    f"{split}: {len(lacking)} of {len(rows)} ids have no {kind}, e.g. {examples(lacking)}"
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


def _check_labels(name: str, pairs: list[tuple[Path, Path]], report: VerifyReport) -> None:
    valid = valid_label_values(name)
    wide = DATASETS[name].ignore_index > 255  # 16-bit labels
    modes = _WIDE_MODES if wide else ("L", "P")
    colour: dict[str, list[Path]] = {}
    bad_mode: list[str] = []
    bad_values: dict[int, list[Path]] = {}
    bad_size: list[str] = []
    unreadable: list[str] = []
    tagged: list[str] = []
    for image_path, label_path in pairs:
        decoded = _decode(label_path, unreadable)
        image = _decode(image_path, unreadable)
        if decoded is None:
            continue
        mode, label = decoded
        if mode in ("RGB", "RGBA"):
            colour.setdefault(mode, []).append(label_path)
            continue
        if label is None or mode not in modes:
            bad_mode.append(f"{label_path} ({mode})")
            continue
        if image is None:
            continue
        width, height, orientation = image_size(image_path, tagged)
        if label.shape != (height, width):
            bad_size.append(size_mismatch(label_path, label.shape, width, height, orientation))
        values = label.ravel().astype(np.int64)
        beyond = (values < 0) | (values >= len(valid))  # mode I only: 32-bit values
        for v in np.unique(values[beyond]):
            bad_values.setdefault(int(v), []).append(label_path)
        counts = np.bincount(values[~beyond], minlength=len(valid))
        for v in np.flatnonzero((counts > 0) & ~valid):
            bad_values.setdefault(int(v), []).append(label_path)
        report.histogram += counts
    if unreadable:
        report.problems.append(
            f"{len(unreadable)} sampled file(s) cannot be decoded (truncated, corrupt or not an image; "
            "check the download, delete these files and re-run prepare): "
            f"{examples(unreadable)}"
        )
    for mode, paths in colour.items():
        report.problems.append(colour_label_message(name, paths, mode))
    if bad_mode:
        kind = "16-bit index maps (mode I;16)" if wide else "8-bit index maps (mode L or P)"
        report.problems.append(f"{len(bad_mode)} sampled label(s) are not {kind}: {examples(bad_mode)}")
    if bad_values:
        ignore = DATASETS[name].ignore_index
        allowed = "0..59" if name == "context" else f"0..{int(np.flatnonzero(valid[:ignore]).max())} or {ignore}"
        paths = sorted({p for ps in bad_values.values() for p in ps})
        report.problems.append(
            f"{len(paths)} sampled label(s) hold values outside {allowed} "
            f"(values {sorted(bad_values)[:10]}), e.g. {examples(paths)}"
        )
    if bad_size:
        report.problems.append(
            f"{len(bad_size)} sampled label(s) differ in size from their image: {examples(bad_size)}"
        )
    if tagged:
        report.warnings.append(orientation_warning(tagged))


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
        from zegclip.data.folder import verify_folder  # builds on this module

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


if __name__ == "__main__":
    import sys

    from zegclip.cli.verify import main  # noqa: TID251 (only when run as a command)

    sys.exit(main())
