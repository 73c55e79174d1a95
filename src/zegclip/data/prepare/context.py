"""PASCAL Context (59 classes + background): the VOC 2010 images and the full annotations.

Raw: ``VOCtrainval_03-May-2010.tar`` (``VOCdevkit/VOC2010``) and the full 459-class
annotations, either ``trainval.tar.gz`` (per-image ``trainval/<id>.mat``) or the PASCAL in
Detail ``trainval_merged.json`` (RLE or polygon masks), optionally with the Context
``train.txt``/``val.txt`` lists. Prepared: the ``context`` layout of
:mod:`zegclip.data.layouts`, labels mapped to 0..59 by :func:`context_lut`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zegclip.data import layouts
from zegclip.data.classes import CONTEXT_FULL_IDS
from zegclip.data.prepare import files

logger = logging.getLogger("zegclip.data.prepare")

VOC2010_ARCHIVE = "VOCtrainval_03-May-2010.tar"
CONTEXT_MAT_ARCHIVE = "trainval.tar.gz"
CONTEXT_JSON = "trainval_merged.json"

VOC2010_DEVKIT = files.Download(
    "PASCAL VOC 2010 trainval",
    VOC2010_ARCHIVE,
    inner="VOCdevkit/VOC2010",
    folders=("VOCdevkit/VOC2010", "VOC2010"),
    required=("JPEGImages",),
)
CONTEXT_MATS = files.Download(
    "PASCAL-Context .mat annotations",
    CONTEXT_MAT_ARCHIVE,
    inner="trainval",
    folders=("trainval", "pascal_context/trainval", "PascalContext/trainval"),
    suffix=".mat",
)

_VOC_ID = re.compile(r"^\d{4}_\d{6}$")


def context_lut() -> np.ndarray:
    """Full PASCAL-Context id (0..459) -> Context-60 value (uint8 0..59).

    Value = 1 + position of the full id in ``CONTEXT_FULL_IDS``; every other id is 0.
    """
    lut = np.zeros(max(CONTEXT_FULL_IDS) + 2, dtype=np.uint8)
    lut[list(CONTEXT_FULL_IDS)] = np.arange(1, len(CONTEXT_FULL_IDS) + 1, dtype=np.uint8)
    return lut


def _apply_context_lut(full: np.ndarray) -> np.ndarray:
    """Map a full-id map through :func:`context_lut`; ids outside the table become 0."""
    lut = context_lut()
    full = np.asarray(full).astype(np.int64)
    inside = (full >= 0) & (full < len(lut))
    return lut[np.where(inside, full, 0)]


def _rle_counts(counts: str | list[int]) -> list[int]:
    """Decode COCO compressed RLE counts (the LEB128-like string) into run lengths."""
    if not isinstance(counts, str):
        return [int(c) for c in counts]
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            c = ord(counts[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE dict (``size`` = [h, w], ``counts`` string or list) into a bool mask."""
    h, w = (int(v) for v in rle["size"])
    runs = _rle_counts(rle["counts"])
    if sum(runs) != h * w or min(runs, default=0) < 0:
        raise ValueError(f"RLE runs sum to {sum(runs)}, expected {h}x{w}")
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return flat.reshape(w, h).T  # RLE runs go down the columns (Fortran order)


def _segmentation_mask(seg: Any, h: int, w: int) -> np.ndarray:
    """Decode a Detail/COCO segmentation (RLE dict or polygons) into an h x w bool mask."""
    if isinstance(seg, dict):
        return rle_decode(seg)
    if isinstance(seg, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        from PIL import ImageDraw

        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in seg:
            if len(poly) >= 6:
                draw.polygon([float(v) for v in poly], fill=1)
        return np.asarray(canvas, dtype=bool)
    raise ValueError(f"unsupported segmentation of type {type(seg).__name__}")


def _convert_context_mat(mat_path: str, out_path: str) -> None:
    """PASCAL-Context ``trainval/<id>.mat`` (LabelMap, 459-class ids) -> Context-60 PNG."""
    files.write_label_png(_apply_context_lut(files.load_mat_field(mat_path, None, "LabelMap")), out_path)


def _convert_context_json(h: int, w: int, anns: list[tuple[int, Any]], out_path: str) -> None:
    """Detail-API annotations of one image -> Context-60 PNG (later annotations paint over)."""
    full = np.zeros((h, w), dtype=np.int64)
    for category_id, seg in anns:
        mask = _segmentation_mask(seg, h, w)
        if mask.shape != (h, w):
            raise ValueError(f"mask of shape {mask.shape} for a {h}x{w} image")
        full[mask] = category_id
    files.write_label_png(_apply_context_lut(full), out_path)


def _read_context_json(path: Path) -> tuple[dict[str, tuple[int, int, str]], dict[str, list]]:
    """Read ``trainval_merged.json`` with plain json.

    Returns:
        ``{id: (height, width, phase)}`` and ``{id: [(category_id, segmentation), ...]}``
        (annotations in file order), with ids like ``2008_000002``.
    """
    logger.info("reading %s (large; this takes a while)", path)
    try:
        with open(path) as f:
            data = json.load(f)
        key_of = {}
        images = {}
        for img in data["images"]:
            vid = Path(img["file_name"]).stem
            key_of[img["image_id"]] = vid
            images[vid] = (int(img["height"]), int(img["width"]), str(img.get("phase", "")))
        anns: dict[str, list] = {vid: [] for vid in images}
        for a in data["annos_segmentation"]:
            anns[key_of[a["image_id"]]].append((int(a["category_id"]), a["segmentation"]))
    except (ValueError, KeyError, TypeError) as e:
        raise files.PrepareError(
            f"{path} is not a PASCAL in Detail annotation file (expected keys 'images' and "
            f"'annos_segmentation'; {type(e).__name__}: {e}); download trainval_merged.json "
            f"from the PASCAL in Detail site, or use the per-image {CONTEXT_MAT_ARCHIVE}"
        ) from e
    return images, anns


def _find_context_lists(raw: Path) -> tuple[Path, Path] | None:
    """Find the PASCAL-Context ``train.txt``/``val.txt`` pair in ``raw`` (not the VOC lists)."""
    skip = {"VOCdevkit", "JPEGImages", "trainval", "Annotations", files.EXTRACT_DIR}
    candidates = [layouts.split_dir("context", raw)]  # a raw folder laid out as prepared
    for root, dirs, _files in os.walk(raw):
        depth = len(Path(root).relative_to(raw).parts)
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith(".") and depth < 2)
        candidates.append(Path(root))
    for folder in candidates:
        train, val = folder / "train.txt", folder / "val.txt"
        if train.is_file() and val.is_file():
            ids = files.read_split(train)[:5]
            if ids and all(_VOC_ID.match(i) for i in ids):
                return train, val
    return None


def prepare_context(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare PASCAL Context (59 classes + background) in ``out/VOCdevkit/VOC2010``.

    Args:
        raw: Folder with ``VOCtrainval_03-May-2010.tar`` (or ``VOCdevkit/VOC2010``) and the
            full PASCAL-Context annotations: ``trainval.tar.gz`` (or its ``trainval/`` folder
            of per-image .mat files) or ``trainval_merged.json``; optionally the Context
            ``train.txt``/``val.txt`` lists.
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images per split list: train, val.
    """
    raw, out = Path(raw), Path(out)
    voc, mats = files.locate(raw, out, VOC2010_DEVKIT), files.locate(raw, out, CONTEXT_MATS, optional=True)
    json_path = next(
        (p for p in (raw / CONTEXT_JSON, raw / "pascal_context" / CONTEXT_JSON) if p.is_file()),
        None,
    )
    if mats is None and json_path is None:
        raise files.PrepareError(
            f"PASCAL-Context annotations not found: expected {CONTEXT_MAT_ARCHIVE} (or its "
            f"trainval/ folder of .mat files) or {CONTEXT_JSON} in {raw}"
        )
    if mats is not None:
        annotated = {p.stem for p in mats.iterdir() if p.suffix == ".mat"}
        images_json, anns = {}, {}
        source = str(mats)
    else:
        images_json, anns = _read_context_json(json_path)
        annotated = set(images_json)
        source = str(json_path)

    lists = _find_context_lists(raw)
    if lists is not None:
        train, val = files.read_split(lists[0]), files.read_split(lists[1])
        list_source = f"{lists[0]} and {lists[1]}"
        logger.info("context: split lists from %s and %s", *lists)
    elif images_json:
        train = [i for i, (_h, _w, phase) in images_json.items() if phase == "train"]
        val = [i for i, (_h, _w, phase) in images_json.items() if phase == "val"]
        list_source = f"the 'phase' of each image in {json_path}"
        logger.info("context: split lists from the 'phase' of each image in %s", json_path)
    else:
        main_sets = voc / "ImageSets" / "Main"
        if not (main_sets / "train.txt").is_file() or not (main_sets / "val.txt").is_file():
            raise files.PrepareError(
                f"no PASCAL-Context train.txt/val.txt found in {raw}, and no "
                f"{main_sets}/train.txt, val.txt to derive them from"
            )
        train = [i for i in files.read_split(main_sets / "train.txt") if i in annotated]
        val = [i for i in files.read_split(main_sets / "val.txt") if i in annotated]
        list_source = f"{main_sets}/{{train,val}}.txt (the annotated ids among them)"
        logger.info(
            "context: no Context split lists in %s; derived them from VOC2010 "
            "ImageSets/Main/{train,val}.txt intersected with the annotated ids",
            raw,
        )

    n_images = files.link_files(voc / "JPEGImages", layouts.image_dir("context", out), ".jpg", "images")
    splits = {"train": sorted(set(train)), "val": sorted(set(val))}
    bad = []
    for split, split_ids in splits.items():
        lacking = []
        for i in split_ids:
            what = [] if layouts.image_path("context", out, i, split).is_file() else ["image"]
            what += [] if i in annotated else [f"annotation in {source}"]
            if what:
                lacking.append(f"{i} (no {' and no '.join(what)})")
        if lacking:
            bad.append((layouts.split_file("context", out, split), len(split_ids), lacking))
    if bad:
        raise files.missing_files_error("context", bad, list_source)
    ids = sorted(set(splits["train"]) | set(splits["val"]))
    logger.info("context: %d images linked, %d labels from %s", n_images, len(ids), source)

    if mats is not None:
        tasks = [(str(mats / f"{i}.mat"), str(layouts.label_path("context", out, i))) for i in ids]
        files.convert_all(_convert_context_mat, tasks, workers, "Context labels")
    else:
        tasks = [
            (images_json[i][0], images_json[i][1], anns[i], str(layouts.label_path("context", out, i))) for i in ids
        ]
        files.convert_all(_convert_context_json, tasks, workers, "Context labels", sources=[json_path] * len(tasks))

    files.write_checked_lists("context", out, splits, list_source)
    counts = {k: len(v) for k, v in splits.items()}
    logger.info("context: %s", counts)
    files.compare_counts("context", counts, strict)
    return counts
