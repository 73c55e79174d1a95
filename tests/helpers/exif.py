"""JPEG photos with an EXIF orientation tag, as cameras and phones write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATIONS = (3, 6, 8)
"""Rotated 180 degrees, 90 clockwise, 90 counter-clockwise: the tags phones write."""


def stored_pattern(height: int, width: int) -> np.ndarray:
    """H x W x 3 uint8 with no symmetry (smooth, so JPEG keeps it): any turn changes it a lot."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255 * x / max(width - 1, 1)
    green = 255 * y / max(height - 1, 1)
    blue = np.where((y < height / 3) & (x < width / 2), 230.0, 20.0)
    return np.stack([red, green, blue], -1).round().astype(np.uint8)


def write_oriented_jpeg(path: Path, stored: np.ndarray, orientation: int) -> Path:
    """Save ``stored`` pixels as a JPEG whose EXIF orientation tag (0x0112) is ``orientation``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    return path


def as_displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for ``stored`` pixels tagged 3, 6 or 8 (EXIF 2.3, section 4.6.4)."""
    turns = {3: 2, 6: -1, 8: 1}  # numpy's rot90 turns counter-clockwise
    return np.ascontiguousarray(np.rot90(stored, turns[orientation]))


def decoded_as_stored(path: Path) -> np.ndarray:
    """The JPEG's pixels as stored (PIL applies no EXIF tag on its own), H x W x 3 uint8."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
