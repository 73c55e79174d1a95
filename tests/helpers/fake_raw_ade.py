"""Tiny ADE20K downloads in the real formats, for the ADE-150 / ADE-847 preparation tests.

``ADEChallengeData2016.zip``: ``ADEChallengeData2016/images/{training,validation}/<id>.jpg``
and ``annotations/{training,validation}/<id>.png`` (8-bit, 0 = other, 1..150).
``ADE20K_2021_17_01.zip``: ``ADE20K_2021_17_01/images/ADE/{training,validation}/<category>/
<scene>/<id>.jpg`` with ``<id>_seg.png`` (RGB: the full-ADE class index is R / 10 * 256 + G,
B the instance), ``<id>.json`` and ``<id>_parts_1.png`` beside them, and the release's
index files at the top.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers.fake_raw import SIZE, Sink, block_label, png_bytes

ADE150_IDS = {
    "train_ids": ["ADE_train_00000001", "ADE_train_00000002"],
    "val_ids": ["ADE_val_00000001"],
}
ADE_FULL_VAL = {  # id: the scene folder under images/ADE/validation
    "ADE_val_00000001": "cultural/apse__indoor",
    "ADE_val_00000002": "urban/street",
    "ADE_val_00000003": "home_or_hotel/bathroom",
}
ADE_FULL_TRAIN = {  # under images/ADE/training: never used for ADE-847
    "ADE_train_00000001": "urban/street",
    "ADE_frame_00000001": "urban/street",
}
ADE_FULL_VALUES = (0, 2978, 312, 6, 603, 3148, 1, 5000)
"""Full-ADE indices of the default class maps: unlabelled, wall, building, ad (label 263),
control panel (768), adding machine (846), and two of no ADE-847 class."""


def image_bytes(seed: int, size: tuple[int, int] = SIZE) -> bytes:
    """A smooth RGB JPEG of ``size`` (width, height): small even when large."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 7 + seed) % 256, (y * 5 + seed * 3) % 256, (x + y + seed * 11) % 256], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def seg_png_bytes(full: np.ndarray, r_extra: np.ndarray | None = None) -> bytes:
    """A full-ADE ``_seg.png``: R = index // 256 * 10 (+ ``r_extra``, 0..9), G = index % 256."""
    full = np.asarray(full, dtype=np.int64)
    r = full // 256 * 10 + (0 if r_extra is None else np.asarray(r_extra, dtype=np.int64))
    g = full % 256
    b = (full * 7) % 256  # instance ids: not read
    arr = np.stack([r, g, b], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _seed(image_id: str) -> int:
    return int(image_id.rsplit("_", 1)[1])


def make_ade150_raw(
    raw: Path,
    *,
    train_ids: list[str],
    val_ids: list[str],
    labels: dict[str, np.ndarray] | None = None,
    archive: bool = True,
) -> dict[str, np.ndarray]:
    """Write ``ADEChallengeData2016.zip`` (or the extracted ``ADEChallengeData2016/``).

    Args:
        labels: Raw annotations (0..150) by id (default: blocks of 0..150).

    Returns:
        The raw annotation of every id.
    """
    raw = Path(raw)
    labels = dict(labels or {})
    target = raw / ("ADEChallengeData2016.zip" if archive else "")
    with Sink(target, "zip" if archive else "dir") as sink:
        base = "ADEChallengeData2016"
        sink.add(f"{base}/objectInfo150.txt", b"Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n")
        sink.add(f"{base}/sceneCategories.txt", b"ADE_train_00000001 airport_terminal\n")
        for split, ids in (("training", train_ids), ("validation", val_ids)):
            for k, i in enumerate(ids):
                if i not in labels:
                    labels[i] = block_label(_seed(i) + 10 * k, range(151))
                h, w = labels[i].shape
                sink.add(f"{base}/images/{split}/{i}.jpg", image_bytes(_seed(i), (w, h)))
                sink.add(f"{base}/annotations/{split}/{i}.png", png_bytes(labels[i]))
    return labels


def make_ade_full_raw(
    raw: Path,
    *,
    val: dict[str, str] | None = None,
    train: dict[str, str] | None = None,
    maps: dict[str, np.ndarray] | None = None,
    r_extra: dict[str, np.ndarray] | None = None,
    archive: bool | str = True,
) -> dict[str, np.ndarray]:
    """Write ``ADE20K_2021_17_01.zip`` (or the extracted ``ADE20K_2021_17_01/``).

    ``archive`` may be a file name instead: the ADE20K site names downloads
    ``<username>_<hash>.zip``.

    Args:
        val: Validation ids and their scene folders (default :data:`ADE_FULL_VAL`).
        train: Training ids and their scene folders (default :data:`ADE_FULL_TRAIN`).
        maps: Full-ADE class maps by id (default: blocks of :data:`ADE_FULL_VALUES`); an
            image has its map's size.
        r_extra: Added to R (0..9) by id: R / 10 is an integer division.

    Returns:
        The full-ADE class map of every id.
    """
    raw = Path(raw)
    val = ADE_FULL_VAL if val is None else val
    train = ADE_FULL_TRAIN if train is None else train
    maps = dict(maps or {})
    r_extra = r_extra or {}
    target = raw / (archive if isinstance(archive, str) else "ADE20K_2021_17_01.zip" if archive else "")
    with Sink(target, "zip" if archive else "dir") as sink:
        base = "ADE20K_2021_17_01"
        sink.add(f"{base}/index_ade20k.pkl", b"not read: a pickle")
        sink.add(f"{base}/objects.txt", b"wall\nbuilding, edifice\n")
        for split, ids in (("training", train), ("validation", val)):
            for i, scene in ids.items():
                if i not in maps:
                    maps[i] = block_label(_seed(i), ADE_FULL_VALUES)
                h, w = maps[i].shape
                folder = f"{base}/images/ADE/{split}/{scene}"
                sink.add(f"{folder}/{i}.jpg", image_bytes(_seed(i), (w, h)))
                sink.add(f"{folder}/{i}_seg.png", seg_png_bytes(maps[i], r_extra.get(i)))
                sink.add(f"{folder}/{i}_parts_1.png", seg_png_bytes(np.zeros_like(maps[i])))
                sink.add(f"{folder}/{i}.json", json.dumps({"annotation": {"filename": f"{i}.jpg"}}).encode())
    return maps


def cut_zip(path: Path, keep: float = 0.5) -> None:
    """Cut the zip at ``path`` to ``keep`` of its bytes, like a download that stopped there."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
