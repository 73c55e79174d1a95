"""PASCAL VOC 2012 + SBD: the official images and masks, plus the SBD masks as ``aug``.

Raw: ``VOCtrainval_11-May-2012.tar`` (``VOCdevkit/VOC2012``) and ``benchmark.tgz``
(``benchmark_RELEASE/dataset``: ``cls/<id>.mat`` and ``train.txt``/``val.txt``), as archives
or extracted. Prepared: the ``voc`` layout of :mod:`zegclip.data.layouts`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from zegclip.data import layouts
from zegclip.data.prepare import files

logger = logging.getLogger("zegclip.data.prepare")

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz"

VOC_DEVKIT = files.Download(
    "PASCAL VOC 2012 trainval",
    VOC_ARCHIVE,
    inner="VOCdevkit/VOC2012",
    folders=("VOCdevkit/VOC2012", "VOC2012"),
    required=("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"),
)
SBD = files.Download(
    "SBD (benchmark_RELEASE)",
    SBD_ARCHIVE,
    inner="benchmark_RELEASE/dataset",
    folders=("benchmark_RELEASE/dataset", "SBD/dataset", "dataset"),
    required=("cls", "train.txt", "val.txt"),
)


def _convert_sbd(mat_path: str, out_path: str) -> None:
    """SBD ``cls/<id>.mat`` (GTcls.Segmentation) -> grayscale PNG."""
    files.write_label_png(files.load_mat_field(mat_path, "GTcls", "Segmentation"), out_path)


def voc_lists(voc_train: Iterable[str], voc_val: Iterable[str], sbd_full: Iterable[str]) -> dict[str, list[str]]:
    """The VOC split lists (sorted): train, val, aug and trainaug (docs/method.md §9)."""
    train, val, full = set(voc_train), set(voc_val), set(sbd_full)
    return {
        "train": sorted(train),
        "val": sorted(val),
        "aug": sorted(full - (train | val)),
        "trainaug": sorted((train | full) - val),
    }


def prepare_voc(raw: str | Path, out: str | Path, workers: int | None = None, strict: bool = False) -> dict[str, int]:
    """Prepare PASCAL VOC 2012 + SBD in ``out/VOCdevkit/VOC2012``.

    Args:
        raw: Folder with ``VOCtrainval_11-May-2012.tar`` and ``benchmark.tgz`` (or their
            extracted ``VOCdevkit/VOC2012`` and ``benchmark_RELEASE/dataset`` folders).
        out: Output root.
        workers: Conversion processes (default min(8, CPU count)).
        strict: Raise PrepareError when counts differ from the official ones.

    Returns:
        Images per split list: train, val, aug, trainaug.
    """
    raw, out = Path(raw), Path(out)
    voc, sbd = files.locate(raw, out, VOC_DEVKIT), files.locate(raw, out, SBD)
    files.link_files(voc / "JPEGImages", layouts.image_dir("voc", out), ".jpg", "images")
    files.link_files(voc / "SegmentationClass", layouts.label_dir("voc", out), ".png", "SegmentationClass")

    sbd_ids = sorted(set(files.read_split(sbd / "train.txt") + files.read_split(sbd / "val.txt")))
    present = [i for i in sbd_ids if (sbd / "cls" / f"{i}.mat").is_file()]
    if len(present) < len(sbd_ids):
        lost = sorted(set(sbd_ids) - set(present))
        raise files.missing_files_error(
            "voc",
            [(sbd / "train.txt + val.txt", len(sbd_ids), [f"{i} (no cls/{i}.mat)" for i in lost])],
            f"the SBD lists in {sbd}",
        )
    tasks = [(str(sbd / "cls" / f"{i}.mat"), str(layouts.label_path("voc", out, i, "aug"))) for i in present]
    files.convert_all(_convert_sbd, tasks, workers, "SBD -> SegmentationClassAug")

    seg = voc / "ImageSets" / "Segmentation"
    lists = voc_lists(files.read_split(seg / "train.txt"), files.read_split(seg / "val.txt"), present)
    files.write_checked_lists("voc", out, lists, f"{seg}/{{train,val}}.txt and {sbd}/{{train,val}}.txt")
    counts = {k: len(v) for k, v in lists.items()}
    logger.info("voc: %s", counts)
    files.compare_counts("voc", counts, strict)
    return counts
