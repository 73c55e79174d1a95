"""PASCAL Context: the VOC 2010 images and the full (459-class) annotations.

Raw: ``VOCtrainval_03-May-2010.tar`` (``VOCdevkit/VOC2010``) and the full 459-class
annotations, either ``trainval.tar.gz`` (per-image ``trainval/<id>.mat``) or the PASCAL in
Detail ``trainval_merged.json`` (RLE or polygon masks), optionally with split lists: CAT-Seg's
``pascalcontext_val.txt`` (the 5,104 benchmark ids, also used by ov-seg and ODISE) or the
Context ``train.txt``/``val.txt``. The open-vocabulary repositories' extracted layout, with
``trainval/``, ``trainval_merged.json`` and ``pascalcontext_val.txt`` inside
``VOCdevkit/VOC2010/``, is read as well. Two prepared datasets come from them (layouts of
:mod:`zegclip.data.layouts`):

* ``context`` (:func:`prepare_context`): train and val, 8-bit labels mapped to 0..59 by
  :func:`context_lut` (0 = background: everything outside the 59 classes).
* ``pc459`` (:func:`prepare_pc459`): val only (open-vocabulary evaluation), all 459
  classes, 16-bit labels mapped by :func:`pc459_label` as the open-vocabulary
  repositories do (SAN, ov-seg, CAT-Seg: ``LabelMap - 1`` on the uint16 map): full id k
  -> k - 1 (0..458), unlabelled 0 -> 65535, the ignore value.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zegclip.data import layouts
from zegclip.data.classes import CONTEXT_FULL_IDS, DATASETS
from zegclip.data.prepare import files

logger = logging.getLogger("zegclip.data.prepare")

VOC2010_ARCHIVE = "VOCtrainval_03-May-2010.tar"
CONTEXT_MAT_ARCHIVE = "trainval.tar.gz"
CONTEXT_JSON = "trainval_merged.json"
CATSEG_VAL_LIST = "pascalcontext_val.txt"
"""CAT-Seg's list of the PASCAL Context validation ids (ov-seg and ODISE use the same ids)."""
CONTEXT_VAL_IMAGES = 5104
"""The validation images of the Context benchmarks (PC-59, PC-459). VOC 2010's
``ImageSets/Main/val.txt`` holds 5,105: a val list derived from it (or any other derived
list) must have this count, or it is refused."""
_RAW_FOLDERS = (".", "pascal_context", "VOCdevkit/VOC2010", "VOC2010")
"""Where the annotations JSON and the split lists may lie under ``--raw``: the downloads'
own folders, or the open-vocabulary repositories' extracted ``VOCdevkit/VOC2010``."""

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
    folders=(
        "trainval",
        "pascal_context/trainval",
        "PascalContext/trainval",
        "VOCdevkit/VOC2010/trainval",
        "VOC2010/trainval",
    ),
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


PC459_MAX_ID = 459
"""The largest full PASCAL-Context id (``labels.txt``: 1 accordion ... 459 wool)."""


def pc459_label(full: np.ndarray) -> np.ndarray:
    """Full PASCAL-Context ids -> pc459 label (uint16): k -> k - 1 (0..458), 0 -> 65535.

    What SAN (``datasets/prepare_pcontext_sem_seg_459cls.py``), ov-seg and CAT-Seg
    (``datasets/prepare_pascal_context_459.py``) do with ``LabelMap - 1`` on the uint16
    map: the unlabelled value 0 wraps round to 65535, the ignore value of their 16-bit
    labels (``DATASETS["pc459"].ignore_index``).

    Raises:
        ValueError: for values outside 0..459 (not a full PASCAL-Context map).
    """
    full = np.asarray(full)
    if full.size and (full.min() < 0 or full.max() > PC459_MAX_ID):
        bad = np.unique(full[(full < 0) | (full > PC459_MAX_ID)])
        raise ValueError(f"label values {bad[:10].tolist()} outside 0..{PC459_MAX_ID} (the full PASCAL-Context ids)")
    label = full.astype(np.int64) - 1
    label[label < 0] = DATASETS["pc459"].ignore_index
    return label.astype(np.uint16)


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


def _convert_pc459_mat(mat_path: str, out_path: str) -> None:
    """PASCAL-Context ``trainval/<id>.mat`` (LabelMap, 459-class ids) -> 16-bit pc459 PNG."""
    files.write_label_png(pc459_label(files.load_mat_field(mat_path, None, "LabelMap")), out_path, bits=16)


def _paint_full(h: int, w: int, anns: list[tuple[int, Any]]) -> np.ndarray:
    """Detail-API annotations of one image -> full-id map (later ones paint over; 0 where none)."""
    full = np.zeros((h, w), dtype=np.int64)
    for category_id, seg in anns:
        mask = _segmentation_mask(seg, h, w)
        if mask.shape != (h, w):
            raise ValueError(f"mask of shape {mask.shape} for a {h}x{w} image")
        full[mask] = category_id
    return full


def _convert_context_json(h: int, w: int, anns: list[tuple[int, Any]], out_path: str) -> None:
    """Detail-API annotations of one image -> Context-60 PNG (later annotations paint over)."""
    files.write_label_png(_apply_context_lut(_paint_full(h, w, anns)), out_path)


def _convert_pc459_json(h: int, w: int, anns: list[tuple[int, Any]], out_path: str) -> None:
    """Detail-API annotations of one image -> 16-bit pc459 PNG (later annotations paint over)."""
    files.write_label_png(pc459_label(_paint_full(h, w, anns)), out_path, bits=16)


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


def _list_folders(raw: Path) -> list[Path]:
    """Folders of ``raw`` that may hold a Context split list (never the VOC ``ImageSets`` lists)."""
    skip = {"VOCdevkit", "JPEGImages", "trainval", "Annotations", "ImageSets", files.EXTRACT_DIR}
    candidates = [layouts.split_dir("context", raw)]  # a raw folder laid out as prepared
    candidates += [raw / folder for folder in _RAW_FOLDERS]
    for root, dirs, _files in os.walk(raw):
        depth = len(Path(root).relative_to(raw).parts)
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith(".") and depth < 2)
        candidates.append(Path(root))
    return list(dict.fromkeys(candidates))


def _find_list(raw: Path, name: str) -> Path | None:
    """The first ``name`` (``val.txt``, ``pascalcontext_val.txt``, ...) in ``raw`` that lists VOC ids."""
    for folder in _list_folders(raw):
        path = folder / name
        if path.is_file():
            ids = files.read_split(path)[:5]
            if ids and all(_VOC_ID.match(i) for i in ids):
                return path
    return None


def _find_json(raw: Path) -> Path | None:
    return next((raw / f / CONTEXT_JSON for f in _RAW_FOLDERS if (raw / f / CONTEXT_JSON).is_file()), None)


@dataclass(frozen=True)
class _Sources:
    """The located raw inputs of PASCAL Context and the split lists taken from them."""

    voc: Path
    """The VOC 2010 devkit folder (``JPEGImages``, ``ImageSets/Main``)."""
    mats: Path | None
    """The folder of per-image ``<id>.mat`` files; None: the annotations are ``json_path``."""
    json_path: Path | None
    images_json: dict[str, tuple[int, int, str]]
    """``{id: (height, width, phase)}`` of the Detail JSON (empty unless it was read)."""
    anns: dict[str, list]
    """``{id: [(category_id, segmentation), ...]}`` of the Detail JSON (empty with ``mats``)."""
    annotated: set[str]
    source: str
    """Where the annotations come from, for messages."""
    lists: dict[str, list[str]]
    """The ``train`` and ``val`` ids (sorted, unique)."""
    list_source: str
    """Where the lists come from, for messages."""


class _Json:
    """The Detail JSON, read once and only when something needs it (it is large)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._read: tuple[dict[str, tuple[int, int, str]], dict[str, list]] | None = None

    def read(self) -> tuple[dict[str, tuple[int, int, str]], dict[str, list]]:
        if self._read is None:
            self._read = _read_context_json(self.path) if self.path is not None else ({}, {})
        return self._read

    def phase(self, phase: str) -> list[str]:
        return [i for i, (_h, _w, p) in self.read()[0].items() if p == phase]


def _val_ids(name: str, raw: Path, main_sets: Path, annotated: set[str], detail: _Json) -> tuple[list[str], str]:
    """The validation ids and where they come from, in this order: CAT-Seg's ``pascalcontext_val.txt``,
    the Detail JSON's ``phase``, a Context ``val.txt``, VOC 2010 ``ImageSets/Main/val.txt`` (annotated ids).

    A list file found in ``raw`` is taken as it is (the user put it there); a list derived from
    the JSON or from VOC 2010 is taken only with the benchmark's :data:`CONTEXT_VAL_IMAGES` ids.

    Raises:
        PrepareError: no source gives a usable list (the message says what was found).
    """
    catseg = _find_list(raw, CATSEG_VAL_LIST)
    if catseg is not None:
        return files.read_split(catseg), str(catseg)
    skipped = []
    if detail.path is not None:
        ids = detail.phase("val")
        if len(set(ids)) == CONTEXT_VAL_IMAGES:
            return ids, f"the 'phase' of each image in {detail.path}"
        skipped.append(f"the 'phase' of {detail.path} gives {len(set(ids)):,}")
    listed = _find_list(raw, "val.txt")
    if listed is not None:
        return files.read_split(listed), str(listed)
    if (main_sets / "val.txt").is_file():
        ids = [i for i in files.read_split(main_sets / "val.txt") if i in annotated]
        if len(set(ids)) == CONTEXT_VAL_IMAGES:
            return ids, f"{main_sets}/val.txt (the annotated ids among them)"
        skipped.append(f"{main_sets}/val.txt gives {len(set(ids)):,} annotated ids")
    raise files.PrepareError(
        f"{name}: no validation list of the {CONTEXT_VAL_IMAGES:,} benchmark images in {raw} "
        f"({'; '.join(skipped) or 'nothing to derive one from'}); put CAT-Seg's {CATSEG_VAL_LIST} (or the "
        "Context val.txt) in --raw: its ids are taken as they are, a subset too"
    )


def _train_ids(raw: Path, main_sets: Path, annotated: set[str], detail: _Json) -> tuple[list[str], str]:
    """The training ids: a Context ``train.txt`` in ``raw``, else the JSON's ``phase``, else VOC 2010's (annotated)."""
    listed = _find_list(raw, "train.txt")
    if listed is not None:
        return files.read_split(listed), str(listed)
    if detail.path is not None:
        return detail.phase("train"), f"the 'phase' of each image in {detail.path}"
    if not (main_sets / "train.txt").is_file():
        raise files.PrepareError(f"no PASCAL-Context train.txt found in {raw}, and no {main_sets}/train.txt")
    ids = [i for i in files.read_split(main_sets / "train.txt") if i in annotated]
    return ids, f"{main_sets}/train.txt (the annotated ids among them)"


def _sources(name: str, raw: Path, out: Path, splits: tuple[str, ...] = ("train", "val")) -> _Sources:
    """Locate the VOC 2010 images and the full annotations in ``raw``; find or derive the lists of ``splits``.

    The val list: :func:`_val_ids`; the train list: :func:`_train_ids`. ``name`` (``context``,
    ``pc459``) names the log lines and messages.
    """
    voc, mats = files.locate(raw, out, VOC2010_DEVKIT), files.locate(raw, out, CONTEXT_MATS, optional=True)
    detail = _Json(_find_json(raw))
    if mats is None and detail.path is None:
        raise files.PrepareError(
            f"PASCAL-Context annotations not found: expected {CONTEXT_MAT_ARCHIVE} (or its "
            f"trainval/ folder of .mat files) or {CONTEXT_JSON} in {raw} (or in {raw}/VOCdevkit/VOC2010)"
        )
    if mats is not None:
        annotated = {p.stem for p in mats.iterdir() if p.suffix == ".mat"}
        source = str(mats)
    else:
        annotated = set(detail.read()[0])
        source = str(detail.path)
    main_sets = voc / "ImageSets" / "Main"
    lists, list_sources = {}, []
    for split in splits:
        ids, where = (
            _val_ids(name, raw, main_sets, annotated, detail)
            if split == "val"
            else _train_ids(raw, main_sets, annotated, detail)
        )
        lists[split] = sorted(set(ids))
        list_sources.append(f"{split}: {where}")
        logger.info("%s: %s ids from %s", name, split, where)
    images_json, anns = detail.read() if mats is None else ({}, {})  # the JSON's masks: only without .mat files
    return _Sources(
        voc=voc,
        mats=mats,
        json_path=detail.path,
        images_json=images_json,
        anns=anns,
        annotated=annotated,
        source=source,
        lists=lists,
        list_source="; ".join(list_sources),
    )


def _prepare(name: str, raw: str | Path, out: str | Path, splits: tuple[str, ...], workers: int | None) -> _Sources:
    """Link the images and write the labels of the ids of ``splits`` (split lists not yet written).

    Raises:
        PrepareError: before any label is written, naming each list with ids that lack
            an image or an annotation.
    """
    raw, out = Path(raw), Path(out)
    src = _sources(name, raw, out, splits)
    n_images = files.link_files(src.voc / "JPEGImages", layouts.image_dir(name, out), ".jpg", "images")
    bad = []
    for split in splits:
        lacking = []
        for i in src.lists[split]:
            what = [] if layouts.image_path(name, out, i, split).is_file() else ["image"]
            what += [] if i in src.annotated else [f"annotation in {src.source}"]
            if what:
                lacking.append(f"{i} (no {' and no '.join(what)})")
        if lacking:
            bad.append((layouts.split_file(name, out, split), len(src.lists[split]), lacking))
    if bad:
        raise files.missing_files_error(name, bad, src.list_source)
    ids = sorted(set().union(*(src.lists[s] for s in splits)))
    logger.info("%s: %d images linked, %d labels from %s", name, n_images, len(ids), src.source)

    desc = {"context": "Context labels", "pc459": "Context-459 labels"}[name]
    if src.mats is not None:
        convert = {"context": _convert_context_mat, "pc459": _convert_pc459_mat}[name]
        tasks = [(str(src.mats / f"{i}.mat"), str(layouts.label_path(name, out, i))) for i in ids]
        files.convert_all(convert, tasks, workers, desc)
    else:
        convert = {"context": _convert_context_json, "pc459": _convert_pc459_json}[name]
        tasks = [
            (src.images_json[i][0], src.images_json[i][1], src.anns[i], str(layouts.label_path(name, out, i)))
            for i in ids
        ]
        files.convert_all(convert, tasks, workers, desc, sources=[src.json_path] * len(tasks))
    return src


def prepare_context(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare PASCAL Context (59 classes + background) in ``out/VOCdevkit/VOC2010``.

    Args:
        raw: Folder with ``VOCtrainval_03-May-2010.tar`` (or ``VOCdevkit/VOC2010``) and the
            full PASCAL-Context annotations: ``trainval.tar.gz`` (or its ``trainval/`` folder
            of per-image .mat files) or ``trainval_merged.json``; optionally split lists
            (``pascalcontext_val.txt``, the Context ``train.txt``/``val.txt``). Val ids: see
            :func:`_val_ids`.
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images per split list: train, val.
    """
    src = _prepare("context", raw, out, ("train", "val"), workers)
    files.write_checked_lists("context", Path(out), src.lists, src.list_source)
    counts = {k: len(v) for k, v in src.lists.items()}
    logger.info("context: %s", counts)
    files.compare_counts("context", counts, strict)
    return counts


def prepare_pc459(raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False) -> dict[str, int]:
    """Prepare PASCAL-Context with all 459 classes (``pc459``, val only) in ``out/VOCdevkit/VOC2010``.

    The same downloads as :func:`prepare_context` and the same val list; the labels go
    to ``SegmentationClassContext459/<id>.png``, 16-bit, mapped by :func:`pc459_label`
    (0..458, 65535 unlabelled). Preparing both datasets into one ``out`` shares the
    images and ``ImageSets/SegmentationContext/val.txt``.

    Args:
        raw: As for :func:`prepare_context`.
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when the count differs from the official 5,104.

    Returns:
        Images per split list: val.
    """
    src = _prepare("pc459", raw, out, ("val",), workers)
    lists = {"val": src.lists["val"]}
    files.write_checked_lists("pc459", Path(out), lists, src.list_source)
    counts = {k: len(v) for k, v in lists.items()}
    logger.info("pc459: %s", counts)
    files.compare_counts("pc459", counts, strict)
    return counts
