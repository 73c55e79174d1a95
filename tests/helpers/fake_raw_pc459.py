"""Tiny PASCAL-Context-459 raw downloads: the Context writer of :mod:`tests.helpers.fake_raw`
with a hand-made full-id map, and the pc459 label expected from it, worked out by hand.

The real ``trainval/<id>.mat`` files hold ``LabelMap``, uint16, full PASCAL-Context ids
1..459 (``labels.txt``: 1 accordion, 2 aeroplane, ..., 459 wool) and 0 where no class was
drawn. The open-vocabulary repositories (SAN, ov-seg, CAT-Seg) take ``LabelMap - 1`` on
that uint16 map: k -> k - 1 and 0 -> 65535, the ignore value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.fake_raw import CONTEXT_IDS, make_context_raw

PC459_VAL_ID = CONTEXT_IDS["val_ids"][0]  # 2008_000007, the one val image of the fake lists

PC459_FULL = np.array(
    [
        [0, 1, 2, 9, 284, 0],  # unlabelled, accordion, aeroplane, bag, person, unlabelled
        [256, 257, 300, 440, 458, 459],  # ids above 255 (and 459, wool: the largest)
        [3, 100, 255, 0, 2, 2],  # ids outside the 59 Context classes are classes here
    ],
    dtype=np.uint16,
)
"""Full ids of the val image (a 6 x 3 image)."""

PC459_EXPECTED = np.array(
    [
        [65535, 0, 1, 8, 283, 65535],
        [255, 256, 299, 439, 457, 458],
        [2, 99, 254, 65535, 1, 1],
    ],
    dtype=np.uint16,
)
"""The pc459 label of :data:`PC459_FULL`, by hand: k -> k - 1, 0 -> 65535."""

PC459_EXPECTED_CONTEXT = np.array(
    [
        [0, 0, 1, 2, 37, 0],
        [0, 0, 0, 56, 59, 0],
        [0, 0, 0, 0, 1, 1],
    ],
    dtype=np.uint8,
)
"""The Context-60 label of the same map (background 0 for everything outside the 59)."""


def make_pc459_raw(
    raw: Path,
    *,
    form: str = "mat",
    lists: bool | str = True,
    archive: bool = True,
    full: np.ndarray | None = None,
    **layout: Any,
) -> dict[str, np.ndarray]:
    """Write the VOC 2010 tar, the full annotations and the Context lists, the val image's
    full-id map being ``full`` (default :data:`PC459_FULL`); see ``make_context_raw`` (``layout``,
    ``listed_val``).

    Returns:
        The full-id map of every annotated id.
    """
    full = PC459_FULL if full is None else full
    return make_context_raw(
        raw, **CONTEXT_IDS, form=form, lists=lists, archive=archive, full_maps={PC459_VAL_ID: full}, **layout
    )
