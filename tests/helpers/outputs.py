"""Reading what a command left behind: its one ``error:`` line, the PNGs it wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def error_line(err: str) -> str:
    """The one ``error:`` line of a command's stderr, which must be its last line, with no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def read_image(path: Path) -> tuple[str, np.ndarray]:
    """(PIL mode, pixels) of an image file, e.g. ``("P", labels)`` of a palette PNG."""
    with Image.open(path) as im:
        return im.mode, np.asarray(im)
