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

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.classes import DATASETS, DatasetInfo, get_dataset_info
from zegclip.errors import ZegCLIPError

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
    "read_image",
    "read_label",
    "read_label16",
    "setting_label_lut",
    "train_class_ids",
]

Transform = Callable[..., dict[str, Any]]


class DatasetError(ZegCLIPError, ValueError):
    """A prepared dataset is missing files or holds files of the wrong kind."""


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to uint8 RGB, H x W x 3 (OpenCV, as mmcv does), as stored.

    The EXIF orientation tag is ignored: the labels of VOC, COCO, ADE20K (and of a folder
    dataset, by the same rule) are drawn on the stored pixels, which ``zegclip verify``
    compares them with. ``zegclip predict`` applies the tag instead (what a viewer shows).
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # H x W x 3 BGR
    if image is None:
        raise DatasetError(f"{path}: cannot decode image (expected a JPEG/PNG file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """Read a label PNG as class indices, uint8 H x W.

    Palette ('P') PNGs give their indices, grayscale ('L') PNGs their values; colour
    PNGs are refused because their pixels are colours, not class indices.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("RGB", "RGBA"):
                raise DatasetError(
                    f"{path}: this is a colour ({mode}) label; expected a palette ('P') or "
                    "grayscale ('L') PNG whose pixel values are class indices. Convert colour "
                    "masks to indices first (see zegclip.data.prepare)."
                )
            if mode not in ("P", "L"):
                raise DatasetError(f"{path}: label PNG has mode {mode!r}; expected 'P' (palette) or 'L' (8-bit)")
            return np.array(img, dtype=np.uint8)  # P -> palette indices, L -> values
    except DatasetError:
        raise
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read label PNG ({err})") from err


def read_label16(path: Path) -> np.ndarray:
    """Read a 16-bit grayscale label PNG (mode 'I;16') as class indices, uint16 H x W.

    For vocabularies above 255 classes (pc459), whose labels and ignore value (65535) do
    not fit in 8 bits: 8-bit, palette and colour PNGs are refused.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("I;16", "I;16L", "I;16B"):
                return np.array(img).astype(np.uint16)  # native byte order
            if mode == "I":  # 32-bit integers: how some writers store 16-bit grayscale
                arr = np.array(img)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):
                    raise DatasetError(f"{path}: label values outside 0..65535; expected a 16-bit label")
                return arr.astype(np.uint16)
            raise DatasetError(
                f"{path}: label PNG has mode {mode!r}; expected a 16-bit grayscale PNG (mode 'I;16') "
                "whose values are class indices, as `zegclip prepare` writes for vocabularies above 255 classes"
            )
    except DatasetError:
        raise
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: cannot read label PNG ({err})") from err


def _read_id_list(name: str, root: str | Path, split: str) -> list[str]:
    path = layouts.split_file(name, root, split)
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found (expected one image id per line)")
    try:
        return layouts.split_ids(name, root, split)
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: split file is not UTF-8 text ({err})") from err


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{path}: folder not found (expected {what})")


def _check_present(paths: list[Path], what: str) -> None:
    """Raise naming the first of ``paths`` that does not exist (one listing per folder)."""
    by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, []).append(path)
    for folder, group in by_folder.items():
        present = {e.name for e in os.scandir(folder)} if folder.is_dir() else set()
        missing = [p for p in group if p.name not in present]
        if missing:
            raise DatasetError(f"{missing[0]}: {what} not found ({len(missing)} of {len(group)} missing in {folder})")


def _layout_samples(name: str, root: str | Path, split: str) -> list[layouts.Row]:
    """``(id, image path, label path)`` of ``split`` of dataset ``name``, every file checked to exist.

    The ids come from the split lists of :func:`zegclip.data.layouts.reader_lists`, or,
    without lists (COCO-Stuff), from the image folder.
    """
    lay = layouts.layout(name)
    _require_dir(layouts.dataset_dir(name, root), f"{lay.folder} under the dataset root")
    if lay.split_dir is None:
        split = layouts.canonical_split(name, split)
        image_dir, label_dir = layouts.image_dir(name, root, split), layouts.label_dir(name, root, split)
        _require_dir(image_dir, f"the {split} images, <id>{lay.image_suffix}")
        _require_dir(label_dir, f"the {split} labels, <id>{lay.label_suffix}")
        rows = layouts.split_items(name, root, split)
        if not rows:
            raise DatasetError(f"{image_dir}: no {lay.image_suffix} images found")
        _check_present([label for _i, _image, label in rows], "label")
        return rows
    samples: list[layouts.Row] = []
    for part in layouts.reader_lists(name, split):
        ids = _read_id_list(name, root, part)
        lists = {p: _read_id_list(name, root, p) for p in lay.merged_lists.get(part, ())}
        rows = layouts.split_items(name, root, part, ids, lists)
        _check_present([image for _i, image, _label in rows], "image")
        _check_present([label for _i, _image, label in rows], "label")
        samples += rows
    return samples


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: Path, label_path: Path) -> None:
    """A label must cover its image pixel for pixel; DatasetError naming both otherwise."""
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"{label_path}: label is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{image_path.name} is {image.shape[1]}x{image.shape[0]}; expected equal sizes"
        )


class SegDataset(Dataset):
    """Base class: a list of (id, image path, label path) plus the label reduction.

    Subclasses fill ``self.samples`` in ``__init__`` and call ``super().__init__``.
    """

    def __init__(
        self,
        samples: list[tuple[str, Path, Path]],
        info: DatasetInfo,
        transform: Transform | None = None,
    ) -> None:
        self.samples = samples
        self.info = info
        self.transform = transform
        # raw value -> reduced id; `valid` marks raw values the dataset may hold
        offset = 1 if info.reduce_zero_label else 0
        self.num_raw = info.num_classes + offset
        self.valid = np.zeros(256, dtype=bool)
        self.valid[: self.num_raw] = True
        self.valid[IGNORE_INDEX] = True
        self.reduce_lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.reduce_lut[offset : self.num_raw] = np.arange(info.num_classes, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        """Image ids in dataset order."""
        return [s[0] for s in self.samples]

    def load(self, index: int) -> dict[str, Any]:
        """Read one sample, checked and reduced, without the transform."""
        sample_id, image_path, label_path = self.samples[index]
        image = read_image(image_path)  # H x W x 3 uint8
        raw = read_label(label_path)  # H x W uint8
        check_same_size(image, raw, image_path, label_path)
        counts = np.bincount(raw.ravel(), minlength=256)
        bad = np.flatnonzero((counts > 0) & ~self.valid)
        if bad.size:
            raise DatasetError(
                f"{label_path}: label values {bad.tolist()} are outside the {self.info.name} "
                f"classes; expected 0..{self.num_raw - 1} or {IGNORE_INDEX}"
            )
        return {"image": image, "label": self.reduce_lut[raw], "id": sample_id}

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is not None:
            out = self.transform(image=sample["image"], mask=sample["label"])
            sample["image"], sample["label"] = out["image"], out["mask"]
        return sample


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


def build_dataset(
    name: str, root: str | Path, split: str, transform: Transform | None = None, info: DatasetInfo | None = None
) -> SegDataset:
    """Build the reader of benchmark ``name`` ("voc", "coco_stuff", "context", "context60", "pc459", "ade150",
    "ade847", "synthetic") or of a ``folder`` of your own images, whose classes ``info`` gives (default: read
    from ``root``)."""
    if name == "folder":
        from zegclip.data.folder import FolderSeg  # builds on this module

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
