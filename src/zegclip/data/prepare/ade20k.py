"""ADE20K for the open-vocabulary benchmarks: ADE20K-150 (SceneParsing) and ADE20K-847.

ADE20K-150 (``ade150``). Raw: ``ADEChallengeData2016.zip`` (or its extracted
``ADEChallengeData2016/``): ``images/{training,validation}/<id>.jpg`` and
``annotations/{training,validation}/<id>.png`` (8-bit, 0 = other, 1..150 the classes).
Prepared: the ``ade150`` layout of :mod:`zegclip.data.layouts` (mmsegmentation 0.x's); images
and annotations are linked as they are, the reader reduces the labels (0 -> 255, k -> k - 1).

ADE20K-847 (``ade847``). Raw: the full release ``ADE20K_2021_17_01.zip`` (the ADE20K site
names the download ``<username>_<hash>.zip``: any zip holding ``ADE20K_2021_17_01/`` is
recognised by its content), or its extracted ``ADE20K_2021_17_01/``; only
``images/ADE/validation/<scene>/.../ADE_val_<n>.jpg`` with ``ADE_val_<n>_seg.png`` is used
(and only that part of the zip is extracted). The class of a pixel of ``_seg.png`` is
``R / 10 * 256 + G`` (integer division; 0 = unlabelled), an index of the full ADE
vocabulary. Prepared: the ``ade847`` layout, as the open-vocabulary repositories prepare it
(KU-CVLAB/CAT-Seg ``datasets/prepare_ade20k_full.py``, the same as Mask2Former's
``prepare_ade20k_full_sem_seg.py``, used by SAN), with one change of format:

* the validation images only: the files named ``ADE_val_*`` (2,000);
* an image whose shorter side is above 512 is resized so that it is 512 (the longer side
  ``round(long / short * 512)``): the image bilinearly (OpenCV), the class map by nearest
  neighbour; every image is written again as JPEG with Pillow's default settings
  (quality 75), as the source does, so the evaluation sees the same pixels;
* the full-ADE index is mapped to the 847 classes (``ADE847_FULL_IDS``: position k is
  label k), every other index (and 0) to 65535, the ignore value;
* labels are 16-bit grayscale PNG (mode ``I;16``) instead of the source's 16-bit TIFF.

The source walks ``index_ade20k.pkl`` to find the images; this walks the validation folder
instead (the same files, and no unpickling of a downloaded file).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from zegclip.atomic import atomic_write
from zegclip.data import layouts
from zegclip.data.classes import DATASETS
from zegclip.data.prepare import files
from zegclip.data.vocabularies.ade20k import ADE847_FULL_IDS

logger = logging.getLogger("zegclip.data.prepare")

ADE150_ARCHIVE = "ADEChallengeData2016.zip"
ADE_FULL_ARCHIVE = "ADE20K_2021_17_01.zip"

ADE150_SPLITS = layouts.layout("ade150").splits  # training, validation
ADE_MAX_SHORT_SIDE = 512
"""The shorter side of the prepared ADE-847 images, at most (the source's ``max_size``)."""
ADE_FULL_LUT_SIZE = 26 * 256
"""Every value ``R // 10 * 256 + G`` of an 8-bit RGB ``_seg.png`` lies below this."""

ADE150_SCENE_PARSING = files.Download(
    "ADE20K SceneParsing (ADEChallengeData2016)",
    ADE150_ARCHIVE,
    inner="ADEChallengeData2016",
    folders=("ADEChallengeData2016", "ade/ADEChallengeData2016"),
    required=tuple(f"{kind}/{split}" for kind in ("images", "annotations") for split in ADE150_SPLITS),
)
ADE_FULL_VALIDATION = files.Download(
    "ADE20K full release (ADE20K_2021_17_01) validation images",
    ADE_FULL_ARCHIVE,
    inner="ADE20K_2021_17_01/images/ADE/validation",
    folders=("ADE20K_2021_17_01/images/ADE/validation", "images/ADE/validation"),
    members="ADE20K_2021_17_01/images/ADE/validation/",  # 2,000 of the release's 27,574 images
    any_zip_name=True,  # the ADE20K site's download is <username>_<hash>.zip
)

_ADE_VAL_IMAGE = re.compile(r"^(ADE_val_\d+)\.jpg$")


# --------------------------------------------------------------------------------------
# ADE20K-150
# --------------------------------------------------------------------------------------


def prepare_ade150(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare ADE20K-150 in ``out/ADEChallengeData2016``.

    Args:
        raw: Folder with ``ADEChallengeData2016.zip`` (or the extracted ``ADEChallengeData2016/``).
        out: Output root.
        workers: Unused (nothing is converted: images and annotations are linked).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images with an annotation per split: training, validation.
    """
    del workers  # the annotations are used as they are
    raw, out = Path(raw), Path(out)
    source = files.locate(raw, out, ADE150_SCENE_PARSING)
    counts = {}
    for split in ADE150_SPLITS:
        n_images = files.link_files(
            source / "images" / split, layouts.image_dir("ade150", out, split), ".jpg", f"{split} images"
        )
        labels = files.link_files(
            source / "annotations" / split, layouts.label_dir("ade150", out, split), ".png", f"{split} annotations"
        )
        counts[split] = n_images
        if labels != n_images:
            logger.warning("ade150 %s: %d images, %d annotations", split, n_images, labels)
    files.check_folder_items(
        "ade150", out, f"the image folders; every image needs its annotation in {source}/annotations"
    )
    logger.info("ade150: %s", counts)
    files.compare_counts("ade150", counts, strict)
    return counts


# --------------------------------------------------------------------------------------
# ADE20K-847
# --------------------------------------------------------------------------------------


def ade847_lut() -> np.ndarray:
    """Full-ADE class index (``R // 10 * 256 + G``) -> ADE-847 label, as a uint16 table.

    Index ``ADE847_FULL_IDS[k]`` -> k; 0 (unlabelled) and every index of no class among
    the 847 -> 65535 (the ignore value).
    """
    lut = np.full(ADE_FULL_LUT_SIZE, DATASETS["ade847"].ignore_index, dtype=np.uint16)
    lut[list(ADE847_FULL_IDS)] = np.arange(len(ADE847_FULL_IDS), dtype=np.uint16)
    return lut


def ade_full_class_map(seg: np.ndarray) -> np.ndarray:
    """The full-ADE class index of each pixel of an RGB ``_seg.png`` array: ``R // 10 * 256 + G`` (int32)."""
    return (seg[..., 0] // 10).astype(np.int32) * 256 + seg[..., 1].astype(np.int32)


def ade_resized(width: int, height: int, max_short: int = ADE_MAX_SHORT_SIDE) -> tuple[int, int] | None:
    """The (width, height) of a prepared ADE-847 image, or None when it keeps its size.

    A shorter side above ``max_short`` becomes ``max_short`` and the longer side
    ``round(long / short * max_short)`` (Python rounding, as the source).
    """
    if width >= height > max_short:
        return round(width / height * max_short), max_short
    if height >= width > max_short:
        return max_short, round(height / width * max_short)
    return None


def _save_jpeg(image: np.ndarray, path: str) -> None:
    """Write an image as JPEG with Pillow's defaults (quality 75, as the source), atomically."""
    with atomic_write(path, durable=False) as f:
        Image.fromarray(image).save(f, format="JPEG")


def _convert_ade847_image(src: str, out_path: str) -> None:
    """Full-ADE ``ADE_val_<n>.jpg`` -> the prepared JPEG (short side at most 512)."""
    with Image.open(src) as im:
        if im.mode not in ("RGB", "L"):  # CMYK and the like: JPEG writes RGB and L only
            im = im.convert("RGB")
        image = np.asarray(im)
    size = ade_resized(image.shape[1], image.shape[0])
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    _save_jpeg(image, out_path)


def _convert_ade847_label(seg_path: str, image_path: str, out_path: str) -> None:
    """Full-ADE ``ADE_val_<n>_seg.png`` -> 16-bit ADE-847 label PNG, at the prepared image's size."""
    with Image.open(image_path) as im:
        width, height = im.size
    with Image.open(seg_path) as im:
        if im.mode != "RGB":
            raise ValueError(f"_seg.png has mode {im.mode}, expected RGB (class index R / 10 * 256 + G)")
        seg = np.asarray(im)
    if seg.shape[:2] != (height, width):
        raise ValueError(f"_seg.png is {seg.shape[1]}x{seg.shape[0]} but its image is {width}x{height}")
    classes = ade_full_class_map(seg)
    size = ade_resized(width, height)
    if size is not None:  # the full-ADE index map, as the source (nearest: no new values)
        classes = cv2.resize(classes, size, interpolation=cv2.INTER_NEAREST)
    files.write_label_png(ade847_lut()[classes], out_path, bits=16)


def _ade_validation_pairs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{id: (image, _seg.png)}`` of every ``ADE_val_<n>.jpg`` under ``folder`` (recursively).

    Raises:
        PrepareError: if an id occurs twice, if no image is found, or if images lack their
            ``_seg.png``.
    """
    pairs: dict[str, tuple[Path, Path]] = {}
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            match = _ADE_VAL_IMAGE.match(name)
            if match is None:
                continue
            sample_id = match.group(1)
            if sample_id in pairs:
                raise files.PrepareError(
                    f"{name} occurs twice under {folder}: {pairs[sample_id][0]} and {Path(root) / name}"
                )
            pairs[sample_id] = (Path(root) / name, Path(root) / f"{sample_id}_seg.png")
    if not pairs:
        raise files.PrepareError(
            f"no ADE_val_*.jpg images under {folder}: expected <scene>/.../ADE_val_<n>.jpg with "
            f"ADE_val_<n>_seg.png, as in {ADE_FULL_ARCHIVE}"
        )
    lacking = [f"{i} (no {seg.name})" for i, (_image, seg) in pairs.items() if not seg.is_file()]
    if lacking:
        raise files.missing_files_error(
            "ade847", [(folder, len(pairs), lacking)], f"the ADE_val_*.jpg images under {folder}", lists=False
        )
    return pairs


def prepare_ade847(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare ADE20K-847 (validation) in ``out/ADE20K_2021_17_01``.

    Args:
        raw: Folder with ``ADE20K_2021_17_01.zip`` (under any name: the site's
            ``<username>_<hash>.zip`` is recognised by its content), or the extracted
            ``ADE20K_2021_17_01/``, of which ``images/ADE/validation`` is read.
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images with a label: validation.
    """
    raw, out = Path(raw), Path(out)
    source = files.locate(raw, out, ADE_FULL_VALIDATION)
    pairs = _ade_validation_pairs(source)
    ids = sorted(pairs)
    split = "validation"
    image_tasks = [(str(pairs[i][0]), str(layouts.image_path("ade847", out, i, split))) for i in ids]
    files.convert_all(_convert_ade847_image, image_tasks, workers, "ADE-847 images")
    label_tasks = [(str(pairs[i][1]), str(pairs[i][0]), str(layouts.label_path("ade847", out, i, split))) for i in ids]
    files.convert_all(_convert_ade847_label, label_tasks, workers, "ADE-847 labels")
    rows = files.dataset_items("ade847", out)[split]
    lacking = files.describe_missing(rows)
    if lacking:
        raise files.missing_files_error(
            "ade847",
            [(layouts.image_dir("ade847", out, split), len(rows), lacking)],
            f"the image folder; every image needs a label made from its _seg.png in {source}",
            lists=False,
        )
    counts = {split: len(rows)}
    logger.info("ade847: %s", counts)
    files.compare_counts("ade847", counts, strict)
    return counts
