"""The checks every prepared dataset gets, benchmark or ``folder``: presence, sizes, EXIF tags.

:mod:`zegclip.data.verify` (the benchmarks) and :mod:`zegclip.data.folder` (your own data)
both report through `VerifyReport` with these helpers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SAMPLE = 200
_EXAMPLES = 3


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
