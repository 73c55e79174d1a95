"""Readers for the prepared on-disk layouts of the benchmarks (docs/method.md §9).

Each dataset returns ``{"image": uint8 H x W x 3 RGB, "label": uint8 H x W, "id": str}``
with the label already *reduced* (VOC / Context-59: 0 -> 255, k -> k - 1; COCO-Stuff
train ids as stored; 255 ignore); PASCAL-Context-459 (``pc459``) labels are uint16 H x W,
0..458 with 65535 ignore (``DatasetInfo.ignore_index``), stored reduced, and so are ADE20K-847's
(``ade847``: 0..846, 65535 ignore); ADE20K-150 is reduced like VOC. A ``transform``
(albumentations convention: called as ``transform(image=..., mask=...)``, returning a dict
with ``"image"`` and ``"mask"``) is applied to image and label when given.

Every file of a split is checked for existence when the dataset is built (one directory
listing per folder); decoding, sizes and label values are checked when a sample is read.
Problems raise one `DatasetError` that names the file and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.classes import DATASETS, FOLDER, DatasetChoiceError, DatasetInfo
from zegclip.data.folder import FolderSeg, folder_info
from zegclip.data.reading import (  # noqa: F401 (re-exported: the readers' shared names, as before)
    DatasetError,
    SegDataset,
    Transform,
    _layout_samples,
    check_same_size,
    read_image,
    read_label,
    read_label16,
)

__all__ = [
    "ADE150Seg",
    "ADE847Seg",
    "COCOStuffSeg",
    "Context459Seg",
    "ContextSeg",
    "SETTINGS",
    "DatasetError",
    "SegDataset",
    "VOCSeg",
    "build_dataset",
    "get_dataset_info",
    "read_image",
    "read_label",
    "read_label16",
    "setting_label_lut",
    "train_class_ids",
]


class VOCSeg(SegDataset):
    """PASCAL VOC 2012 (+ SBD aug), 20 classes without background.

    Args:
        root: folder holding ``VOCdevkit/``.
        split: ``"train"`` (train.txt with SegmentationClass + aug.txt with
            SegmentationClassAug: 10,582 images on the full data) or ``"val"``; any other
            name reads ``ImageSets/Segmentation/<split>.txt`` with SegmentationClass
            (``trainaug``: each id's label where train or aug puts it; see
            :mod:`zegclip.data.layouts`).
        transform: optional albumentations-style callable.
        info: class list; defaults to VOC (the synthetic dataset passes its own).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        info: DatasetInfo | None = None,
    ) -> None:
        samples = _layout_samples("voc", root, split)
        super().__init__(samples, info or DATASETS["voc"], transform)


class COCOStuffSeg(SegDataset):
    """COCO-Stuff 164K with ``<id>_labelTrainIds.png`` labels (171 classes, no shift).

    Args:
        root: folder holding ``coco_stuff164k/``.
        split: ``"train2017"`` / ``"val2017"`` (or ``"train"`` / ``"val"``).
        transform: optional albumentations-style callable.
    """

    SPLIT_ALIASES = layouts.layout("coco_stuff").split_aliases

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        samples = _layout_samples("coco_stuff", root, split)
        super().__init__(samples, DATASETS["coco_stuff"], transform)


class ContextSeg(SegDataset):
    """PASCAL Context, 59 classes without background (PNG 0..59 -> 255, 0..58); with
    ``info=DATASETS["context60"]`` the 60-class variant (background = class 0, no shift).

    Args:
        root: folder holding ``VOCdevkit/``.
        split: ``"train"`` or ``"val"`` (``ImageSets/SegmentationContext/<split>.txt``).
        transform: optional albumentations-style callable.
    """

    def __init__(
        self, root: str | Path, split: str, transform: Transform | None = None, info: DatasetInfo | None = None
    ) -> None:
        samples = _layout_samples("context", root, split)
        super().__init__(samples, info or DATASETS["context"], transform)


class Label16Seg(SegDataset):
    """An evaluation-only benchmark with more than 255 classes: 16-bit labels stored reduced
    (0..C-1, ``info.ignore_index`` = 65535 unlabelled), returned as they are (uint16 H x W).

    Args:
        name: the dataset (``pc459``, ``ade847``).
        root: the data root of its layout.
        split: one of the layout's splits (validation only).
        transform: optional albumentations-style callable.
    """

    def __init__(self, name: str, root: str | Path, split: str, transform: Transform | None = None) -> None:
        splits = layouts.layout(name).splits
        if layouts.canonical_split(name, split) not in splits:
            raise DatasetError(f"{name} is evaluation only: its splits are {', '.join(splits)}, not {split!r}")
        # not SegDataset.__init__: its 256-entry lookup tables are for 8-bit labels
        self.samples = _layout_samples(name, root, split)
        self.info = DATASETS[name]
        self.transform = transform
        self.num_raw = self.info.num_classes

    def load(self, index: int) -> dict[str, Any]:
        """Read one sample, checked (no reduction: the labels are stored reduced)."""
        sample_id, image_path, label_path = self.samples[index]
        image = read_image(image_path)  # H x W x 3 uint8
        label = read_label16(label_path)  # H x W uint16
        check_same_size(image, label, image_path, label_path)
        ignore = self.info.ignore_index
        bad = np.unique(label[(label >= self.num_raw) & (label != ignore)])
        if bad.size:
            raise DatasetError(
                f"{label_path}: label values {bad[:10].tolist()} are outside the {self.info.name} "
                f"classes; expected 0..{self.num_raw - 1} or {ignore}"
            )
        return {"image": image, "label": label, "id": sample_id}


class Context459Seg(Label16Seg):
    """PASCAL-Context with all 459 classes (``pc459``): ``VOCdevkit/VOC2010``, Context's val list."""

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        super().__init__("pc459", root, split, transform)


class ADE847Seg(Label16Seg):
    """ADE20K-847: ``ADE20K_2021_17_01``, split ``validation`` (or ``val``)."""

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        super().__init__("ade847", root, split, transform)


class ADE150Seg(SegDataset):
    """ADE20K-150 (SceneParsing), 150 classes: raw annotations 0..150 reduced on reading
    (0, "other" -> 255, k -> k - 1), as mmsegmentation's ``reduce_zero_label``.

    Args:
        root: folder holding ``ADEChallengeData2016/``.
        split: ``"training"`` / ``"validation"`` (or ``"train"`` / ``"val"``).
        transform: optional albumentations-style callable.
    """

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None) -> None:
        super().__init__(_layout_samples("ade150", root, split), DATASETS["ade150"], transform)


def get_dataset_info(
    name: str,
    root: str | PathLike | None = None,
    unseen: Sequence[str] | None = None,
    ignore_index: int | None = None,
) -> DatasetInfo:
    """Look up a benchmark by name, with an error that lists the known ones.

    ``folder`` is read from ``root`` (:func:`zegclip.data.folder.folder_info`), with the
    ``unseen`` classes by name and the label value ``ignore_index`` (default 255). The
    benchmarks' classes and splits are fixed: ``unseen`` and ``ignore_index`` are for
    ``folder`` only, and ``root`` is not read.
    """
    if name == FOLDER:
        return folder_info(root, unseen or (), 255 if ignore_index is None else ignore_index)
    try:
        info = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted([*DATASETS, FOLDER])}") from None
    if unseen:
        raise DatasetChoiceError(
            f"{name} has fixed unseen classes; unseen classes by name (data.unseen) are for the {FOLDER} dataset"
        )
    if ignore_index is not None and ignore_index != info.ignore_index:
        raise DatasetChoiceError(
            f"{name} labels ignore {info.ignore_index}; another ignore_index (data.ignore_index) is for the "
            f"{FOLDER} dataset"
        )
    return info


def build_dataset(
    name: str, root: str | Path, split: str, transform: Transform | None = None, info: DatasetInfo | None = None
) -> SegDataset:
    """Build the reader of benchmark ``name`` ("voc", "coco_stuff", "context", "context60", "pc459", "ade150",
    "ade847", "synthetic") or of a ``folder`` of your own images, whose classes ``info`` gives (default: read
    from ``root``)."""
    if name == "folder":
        return FolderSeg(root, split, transform, info)
    info = get_dataset_info(name)
    if name == "voc":
        return VOCSeg(root, split, transform)
    if name == "synthetic":  # written in the VOC 2012 layout by zegclip.data.synthetic
        return VOCSeg(root, split, transform, info=info)
    if name == "coco_stuff":
        return COCOStuffSeg(root, split, transform)
    if name in ("context", "context60"):  # context60 reads the same PNGs with background as class 0
        return ContextSeg(root, split, transform, info=info)
    if name == "pc459":  # 16-bit labels, returned as uint16
        return Context459Seg(root, split, transform)
    if name == "ade150":  # raw 0..150, reduced on reading
        return ADE150Seg(root, split, transform)
    if name == "ade847":  # 16-bit labels, returned as uint16
        return ADE847Seg(root, split, transform)
    raise KeyError(f"no reader for dataset {name!r}")


SETTINGS: tuple[str, ...] = ("inductive", "transductive", "fully")


def train_class_ids(info: DatasetInfo, setting: str) -> tuple[int, ...]:
    """Dataset class ids of the training vocabulary, in order (seen ids if inductive)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    return info.seen_ids if setting == "inductive" else tuple(range(info.num_classes))


def setting_label_lut(info: DatasetInfo, setting: str) -> np.ndarray:
    """Lookup table (uint8, 256) from reduced dataset ids to training targets.

    inductive: seen ids -> 0..S-1 in increasing id order, unseen -> 255;
    transductive: ids unchanged, unseen -> HIDDEN_INDEX (254); fully: ids unchanged.
    255 stays 255 in every setting.
    """
    if info.num_classes > HIDDEN_INDEX:
        raise ValueError(f"{info.name}: {info.num_classes} classes do not fit below {HIDDEN_INDEX}")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    ids = train_class_ids(info, setting)
    lut[list(ids)] = np.arange(len(ids), dtype=np.uint8)
    if setting == "transductive":
        lut[list(info.unseen_ids)] = HIDDEN_INDEX
    return lut
