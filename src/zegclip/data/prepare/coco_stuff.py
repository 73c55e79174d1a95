"""COCO-Stuff 164K: the COCO 2017 images and the stuff+thing maps as train ids.

Raw: ``train2017.zip``, ``val2017.zip`` and ``stuffthingmaps_trainval2017.zip`` (or the
extracted ``train2017/``, ``val2017/`` and ``stuffthingmaps_trainval2017/{train2017,val2017}``).
Prepared: the ``coco_stuff`` layout of :mod:`zegclip.data.layouts`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from zegclip.constants import IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.classes import COCO_STUFF_MISSING_RAW
from zegclip.data.prepare import files

logger = logging.getLogger("zegclip.data.prepare")

COCO_IMAGE_ARCHIVES = {"train2017": "train2017.zip", "val2017": "val2017.zip"}
COCO_STUFF_ARCHIVE = "stuffthingmaps_trainval2017.zip"

# the maps and images may also be in folders laid out as prepared (as for mmsegmentation)
STUFF_MAPS = files.Download(
    "COCO-Stuff stuff+thing maps",
    COCO_STUFF_ARCHIVE,
    inner=".",
    folders=(
        "stuffthingmaps_trainval2017",
        "stuffthingmaps",
        "annotations",
        str(layouts.label_dir("coco_stuff", "", "train2017").parent),
    ),
    required=("train2017", "val2017"),
)
COCO_IMAGES = {
    split: files.Download(
        f"COCO {split} images",
        archive,
        inner=split,
        folders=(split, f"images/{split}", str(layouts.image_dir("coco_stuff", "", split))),
        suffix=".jpg",
    )
    for split, archive in COCO_IMAGE_ARCHIVES.items()
}


def coco_stuff_lut() -> np.ndarray:
    """Raw stuff-map value -> train id, as a 256-entry uint8 table.

    The train id is the rank of the raw value among the 171 used values (0..181 minus
    ``COCO_STUFF_MISSING_RAW``); 255 and every value that should not occur map to 255.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    used = [v for v in range(182) if v not in set(COCO_STUFF_MISSING_RAW)]
    lut[used] = np.arange(len(used), dtype=np.uint8)
    return lut


def _coco_stuff_unexpected() -> np.ndarray:
    """Boolean table of the raw values that should never occur (neither used nor 255)."""
    lut = coco_stuff_lut()
    unexpected = lut == IGNORE_INDEX
    unexpected[IGNORE_INDEX] = False
    return unexpected


def _convert_coco_stuff(src: str, out_path: str) -> int:
    """Raw stuff map -> ``_labelTrainIds`` PNG; return the count of unexpected raw pixels."""
    with Image.open(src) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"stuff map has mode {im.mode}, expected a grayscale index map")
        raw = np.asarray(im)
    files.write_label_png(coco_stuff_lut()[raw], out_path)
    return int(_coco_stuff_unexpected()[raw].sum())


def prepare_coco_stuff(
    raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False
) -> dict[str, int]:
    """Prepare COCO-Stuff 164K in ``out/coco_stuff164k``.

    Args:
        raw: Folder with ``train2017.zip``, ``val2017.zip`` and
            ``stuffthingmaps_trainval2017.zip`` (or the extracted ``train2017/``,
            ``val2017/`` image folders and ``stuffthingmaps_trainval2017/{train2017,val2017}``).
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images with a label per split: train2017, val2017.
    """
    raw, out = Path(raw), Path(out)
    maps = files.locate(raw, out, STUFF_MAPS)
    counts, unexpected = {}, []
    for split, download in COCO_IMAGES.items():
        images = files.locate(raw, out, download)
        image_dir = layouts.image_dir("coco_stuff", out, split)
        n_images = files.link_files(images, image_dir, ".jpg", f"{split} images")
        ids = sorted(
            p.name[: -len(".png")]
            for p in (maps / split).iterdir()
            if p.name.endswith(".png") and not p.name.endswith(layouts.layout("coco_stuff").label_suffix)
        )
        tasks = [(str(maps / split / f"{i}.png"), str(layouts.label_path("coco_stuff", out, i, split))) for i in ids]
        unexpected += files.convert_all(_convert_coco_stuff, tasks, workers, f"{split} labels")
        with_image = sum(layouts.image_path("coco_stuff", out, i, split).exists() for i in ids)
        if with_image != n_images or with_image != len(ids):
            logger.warning(
                "coco_stuff %s: %d images, %d stuff maps, %d with both",
                split,
                n_images,
                len(ids),
                with_image,
            )
        counts[split] = with_image
    files.check_folder_items("coco_stuff", out, f"the image folders; every image needs a stuff map in {maps}")
    bad = [n for n in unexpected if n]
    if bad:
        logger.warning(
            "coco_stuff: %d pixels in %d labels had raw values that should not occur "
            "(one of %s, or 182..254); they were set to 255",
            sum(bad),
            len(bad),
            COCO_STUFF_MISSING_RAW,
        )
    logger.info("coco_stuff: %s", counts)
    files.compare_counts("coco_stuff", counts, strict)
    return counts
