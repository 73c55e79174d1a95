"""The test-time size rule, one owner: short side to ``short_side``, aspect kept (docs/method.md §6).

`zegclip.segment` (through :mod:`zegclip.segmentation`) and evaluation's
``zegclip.data.transforms.ShortSideResize`` both size and resize through this module, which
needs only numpy and OpenCV (no model, so DataLoader workers never load open_clip).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SIDE = 32
"""No side of the test-scale image is below this (two ViT patches); smaller sides are stretched."""
MAX_SHORT_SIDE = 4096
"""The largest ``short_side`` accepted."""
MAX_ASPECT_RATIO = 4.0
"""`segment`'s default cap: the test-scale long side is at most this x ``short_side``.

A 4000 x 20 image would otherwise become 102,400 x 512 (3 GB of scores, half a minute);
capped, it is segmented at 2048 x 32 (the short side stretched to `MIN_SIDE`).
"""


def short_side_size(height: int, width: int, short_side: int = 512) -> tuple[int, int]:
    """Test-time size (H', W'): short side exactly ``short_side``, aspect kept, long side not
    capped; each side int(side * short_side / short + 0.5) (docs/method.md §6)."""
    scale = short_side / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def check_short_side(short_side: int | None) -> None:
    """Raise ValueError unless ``short_side`` is None (keep the size) or in MIN_SIDE..MAX_SHORT_SIDE."""
    if short_side is not None and not MIN_SIDE <= short_side <= MAX_SHORT_SIDE:
        raise ValueError(
            f"short side must be between {MIN_SIDE} and {MAX_SHORT_SIDE} pixels (or None to keep the "
            f"image size), got {short_side}"
        )


def _capped_size(height: int, width: int, short_side: int | None, max_aspect_ratio: float | None) -> tuple[int, int]:
    if short_side is None:
        return height, width
    size = short_side_size(height, width, short_side)
    limit = None if max_aspect_ratio is None else int(max_aspect_ratio * short_side)
    if limit is not None and max(size) > limit:
        scale = limit / max(height, width)
        size = (min(int(height * scale + 0.5), limit), min(int(width * scale + 0.5), limit))
    return size


def inference_size(
    height: int, width: int, short_side: int | None = 512, max_aspect_ratio: float | None = None
) -> tuple[int, int]:
    """The size (H', W') an image is segmented at.

    The paper's test scale (`short_side_size`: short side exactly ``short_side``, aspect
    kept; None keeps the size); with ``max_aspect_ratio`` the long side is capped at
    ``max_aspect_ratio * short_side`` (scaled down, aspect kept). Finally no side is
    below `MIN_SIDE` (that side alone is stretched).
    """
    size = _capped_size(height, width, short_side, max_aspect_ratio)
    return max(size[0], MIN_SIDE), max(size[1], MIN_SIDE)


def resize_short_side(
    image: np.ndarray, short_side: int | None = 512, max_aspect_ratio: float | None = None
) -> np.ndarray:
    """Resize an H x W x 3 uint8 image to `inference_size` with OpenCV bilinear (mmseg's resize).

    The one test-time resize: ``zegclip.data.transforms.ShortSideResize`` (evaluation)
    and `zegclip.segment` both call it.
    """
    size = inference_size(*image.shape[:2], short_side, max_aspect_ratio)
    if size == tuple(image.shape[:2]):
        return image
    return cv2.resize(np.ascontiguousarray(image), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def scale_note(
    height: int, width: int, short_side: int | None = 512, max_aspect_ratio: float | None = None
) -> str | None:
    """Why `inference_size` differs from the plain test scale, or None when it does not."""
    plain = _capped_size(height, width, short_side, None)
    capped = _capped_size(height, width, short_side, max_aspect_ratio)
    size = inference_size(height, width, short_side, max_aspect_ratio)
    if size == plain:
        return None
    reasons = []
    if capped != plain:
        reasons.append(f"long side capped at {max_aspect_ratio:g} x the short side {short_side}")
    if size != capped:
        reasons.append(f"sides below {MIN_SIDE} px stretched to {MIN_SIDE}")
    return (
        f"image {width} x {height} segmented at {size[1]} x {size[0]} instead of {plain[1]} x {plain[0]} "
        f"({'; '.join(reasons)})"
    )
