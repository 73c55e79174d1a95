"""Tiny PREPARED datasets in the real on-disk layouts (docs/method.md §9), for tests.

Each label is a 2 x 2 grid of quadrants with known raw values (`fake_label`), so tests
can predict every reduced value. Images are coloured per raw value and differ in size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# raw quadrant values (top-left, top-right, bottom-left, bottom-right) per dataset; the
# i-th image adds i (mod the class range) to the second value
QUADRANTS = {
    "voc": (0, 1, 17, 255),  # background, aeroplane, sheep (unseen), void
    "context": (0, 1, 7, 59),  # background, aeroplane (unseen), bird (unseen), wood
    "coco_stuff": (0, 5, 19, 255),  # person, bus, cow (unseen), unlabelled
}
SIZES = ((64, 80), (72, 56), (56, 64), (80, 72), (64, 64), (48, 96))
"""(height, width) of image i (cycled)."""


def fake_label(dataset: str, index: int) -> np.ndarray:
    """Raw label (uint8 H x W) of image ``index`` of a fake ``dataset``."""
    height, width = SIZES[index % len(SIZES)]
    tl, tr, bl, br = QUADRANTS[dataset]
    tr = tr + index % 3
    label = np.empty((height, width), dtype=np.uint8)
    h2, w2 = height // 2, width // 2
    label[:h2, :w2], label[:h2, w2:], label[h2:, :w2], label[h2:, w2:] = tl, tr, bl, br
    return label


def fake_image(label: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB uint8 image whose colour encodes the raw label value (plus mild noise)."""
    rng = np.random.default_rng(seed)
    lut = rng.integers(30, 226, size=(256, 3)).astype(np.uint8)
    noise = rng.integers(-5, 6, size=(*label.shape, 3))
    return np.clip(lut[label].astype(int) + noise, 0, 255).astype(np.uint8)


def _save_palette(label: np.ndarray, path: Path) -> None:
    png = Image.fromarray(label)  # mode L; putpalette makes it P with the same indices
    png.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
    png.save(path)


def write_fake_voc(root: str | Path, num_train: int = 2, num_aug: int = 2, num_val: int = 2) -> Path:
    """VOCdevkit/VOC2012 with palette train/val labels and grayscale aug labels."""
    base = Path(root) / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    index = 0
    for split, count in (("train", num_train), ("aug", num_aug), ("val", num_val)):
        ids = []
        for _ in range(count):
            sample_id = f"2007_{index:06d}"
            label = fake_label("voc", index)
            Image.fromarray(fake_image(label)).save(base / "JPEGImages" / f"{sample_id}.jpg")
            if split == "aug":
                Image.fromarray(label).save(base / "SegmentationClassAug" / f"{sample_id}.png")
            else:
                _save_palette(label, base / "SegmentationClass" / f"{sample_id}.png")
            ids.append(sample_id)
            index += 1
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return Path(root)


def write_fake_coco_stuff(root: str | Path, num_train: int = 2, num_val: int = 2) -> Path:
    """coco_stuff164k/{images,annotations}/{train2017,val2017} with labelTrainIds PNGs."""
    base = Path(root) / "coco_stuff164k"
    index = 0
    for split, count in (("train2017", num_train), ("val2017", num_val)):
        (base / "images" / split).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            sample_id = f"{index + 9:012d}"
            label = fake_label("coco_stuff", index)
            Image.fromarray(fake_image(label)).save(base / "images" / split / f"{sample_id}.jpg")
            Image.fromarray(label).save(base / "annotations" / split / f"{sample_id}_labelTrainIds.png")
            index += 1
    return Path(root)


def write_fake_context(root: str | Path, num_train: int = 2, num_val: int = 2) -> Path:
    """VOCdevkit/VOC2010 with SegmentationClassContext PNGs (0..59) and split lists."""
    base = Path(root) / "VOCdevkit" / "VOC2010"
    for sub in ("JPEGImages", "SegmentationClassContext"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    lists = base / "ImageSets" / "SegmentationContext"
    lists.mkdir(parents=True, exist_ok=True)
    index = 0
    for split, count in (("train", num_train), ("val", num_val)):
        ids = []
        for _ in range(count):
            sample_id = f"2008_{index:06d}"
            label = fake_label("context", index)
            Image.fromarray(fake_image(label)).save(base / "JPEGImages" / f"{sample_id}.jpg")
            Image.fromarray(label).save(base / "SegmentationClassContext" / f"{sample_id}.png")
            ids.append(sample_id)
            index += 1
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return Path(root)
