"""What every dataset reader shares: decoding images and labels, the file checks, `SegDataset`.

The benchmark readers (:mod:`zegclip.data.datasets`) and the ``folder`` kind
(:mod:`zegclip.data.folder`) both build on this module.
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

from zegclip.constants import IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.classes import DatasetInfo
from zegclip.errors import ZegCLIPError

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
