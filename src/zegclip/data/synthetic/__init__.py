"""A small generated dataset in the exact PASCAL VOC 2012 layout (or the folder layout), for demos and tests.

Six classes (`zegclip.data.classes.SYNTHETIC_CLASSES`; 4 seen, 2 unseen), each a solid
colour with its own texture, painted as rectangles of 48 px or more aligned to 16-px
cells on a noisy grey background, so a tiny ViT with patch 16 learns them in a few
hundred steps. Raw labels follow VOC: 0 background, k + 1 class k, 255 void borders.

    python -m zegclip.data.synthetic --out data/synthetic --size 160
    python -m zegclip.data.synthetic --layout folder --out data/my_folder   # your-own-data layout

(the command line is :mod:`zegclip.cli.synthetic`; the layout :mod:`zegclip.data.layouts`)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from zegclip.constants import IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.classes import SYNTHETIC_CLASSES
from zegclip.errors import ZegCLIPError
from zegclip.visualize import voc_colours

__all__ = [
    "CLASS_COLOURS",
    "SyntheticError",
    "make_sample",
    "voc_palette",
    "write_synthetic",
    "write_synthetic_folder",
    "write_synthetic_voc",
]

CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),  # red stripes
    (40, 180, 40),  # green checkerboard
    (40, 70, 230),  # blue dots
    (235, 215, 40),  # yellow grid
    (215, 40, 215),  # magenta stripes
    (40, 205, 215),  # cyan checkerboard
)
_TEXTURES = ("stripes", "checker", "dots", "grid", "stripes", "checker")
_CELL = 16
_NAME = "synthetic"  # its layout in zegclip.data.layouts: that of VOC 2012


class SyntheticError(ZegCLIPError, ValueError):
    """Settings the generator cannot honour (an image side below 48 px)."""


def voc_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette as PIL's flat RGB list."""
    return voc_colours(256).ravel().tolist()


def _texture(kind: str, height: int, width: int) -> np.ndarray:
    """Brightness factor map H x W in {0.55, 1.0} (image coordinates)."""
    y, x = np.mgrid[0:height, 0:width]
    if kind == "stripes":  # diagonal bands, period 8
        dark = ((x + y) // 4) % 2 == 0
    elif kind == "checker":  # 8-px checks
        dark = ((x // 8) + (y // 8)) % 2 == 0
    elif kind == "dots":  # dots of radius 2 every 8 px
        dark = ((x % 8) - 4) ** 2 + ((y % 8) - 4) ** 2 <= 4
    else:  # grid lines every 8 px
        dark = (x % 8 < 2) | (y % 8 < 2)
    return np.where(dark, 0.55, 1.0).astype(np.float32)


def make_sample(rng: np.random.Generator, height: int, width: int, border: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 H x W x 3 RGB) and raw VOC-style label (uint8 H x W).

    2-3 rectangles with random classes, sides of 48 px to half the image (multiples of
    16, at 16-px offsets); void (255) bands of ``border`` px along object edges.
    """
    image = np.clip(128 + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.float32)
    label = np.zeros((height, width), dtype=np.uint8)
    max_side_h = max(3, (height // 2) // _CELL)
    max_side_w = max(3, (width // 2) // _CELL)
    for _ in range(int(rng.integers(2, 4))):
        k = int(rng.integers(len(SYNTHETIC_CLASSES)))
        bh = min(_CELL * int(rng.integers(3, max_side_h + 1)), height)
        bw = min(_CELL * int(rng.integers(3, max_side_w + 1)), width)
        y0 = _CELL * int(rng.integers(0, (height - bh) // _CELL + 1))
        x0 = _CELL * int(rng.integers(0, (width - bw) // _CELL + 1))
        tex = _texture(_TEXTURES[k], bh, bw)[..., None]  # bh x bw x 1
        colour = np.asarray(CLASS_COLOURS[k], dtype=np.float32)
        image[y0 : y0 + bh, x0 : x0 + bw] = colour * tex + rng.normal(0, 6, (bh, bw, 3))
        label[y0 : y0 + bh, x0 : x0 + bw] = k + 1
    if border > 0:
        kernel = np.ones((border + 1, border + 1), np.uint8)
        edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, kernel) > 0
        label[edges] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


def _checked(num_train: int, num_val: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of the samples; SyntheticError for counts or sizes that cannot be written."""
    if num_train < 0 or num_val < 0 or num_train + num_val < 1:
        raise SyntheticError(
            f"num_train and num_val (--num-train, --num-val) must be 0 or more, with at least one image in all; "
            f"got {num_train} and {num_val}"
        )
    height, width = (size, size) if isinstance(size, int) else size
    if min(height, width) < 48:
        raise SyntheticError(f"size must be at least 48 px, got {height}x{width}")
    return height, width


def write_synthetic_voc(
    root: str | Path,
    num_train: int = 48,
    num_val: int = 12,
    size: int | tuple[int, int] = 160,
    seed: int = 0,
    border: int = 2,
) -> Path:
    """Write the dataset under ``root/VOCdevkit/VOC2012`` and return ``root``.

    A third of the training images (at least one) go to ``train.txt`` with palette PNGs
    in ``SegmentationClass``; the rest to ``aug.txt`` with grayscale PNGs in
    ``SegmentationClassAug`` (as SBD); ``trainaug.txt`` lists both. Validation images get
    palette PNGs. Deterministic given the arguments.

    Args:
        root: output folder (read it back with ``build_dataset("synthetic", root, split)``).
        num_train: training images (train + aug).
        num_val: validation images.
        size: image side, or (height, width); at least 48.
        seed: generator seed.
        border: width of the void (255) bands along object edges; 0 for none.
    """
    height, width = _checked(num_train, num_val, size)
    root = Path(root)
    for split in ("train", "aug", "val"):
        layouts.image_dir(_NAME, root, split).mkdir(parents=True, exist_ok=True)
        layouts.label_dir(_NAME, root, split).mkdir(parents=True, exist_ok=True)
    layouts.split_dir(_NAME, root).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    num_voc_train = max(1, num_train // 3) if num_train else 0
    splits = {
        "train": [f"syn_train_{i:05d}" for i in range(num_voc_train)],
        "aug": [f"syn_aug_{i:05d}" for i in range(num_train - num_voc_train)],
        "val": [f"syn_val_{i:05d}" for i in range(num_val)],
    }
    for split, ids in splits.items():
        for sample_id in ids:
            image, label = make_sample(rng, height, width, border)
            Image.fromarray(image).save(layouts.image_path(_NAME, root, sample_id, split), quality=95)
            png = Image.fromarray(label)  # mode L
            if split != "aug":  # aug labels stay grayscale, as SBD's
                png.putpalette(palette)  # turns it into P, same indices
            png.save(layouts.label_path(_NAME, root, sample_id, split))
        layouts.split_file(_NAME, root, split).write_text("".join(f"{i}\n" for i in ids))
    trainaug = splits["train"] + splits["aug"]
    layouts.split_file(_NAME, root, "trainaug").write_text("".join(f"{i}\n" for i in trainaug))
    return root


_FOLDER_HEADER = """\
# one class per line: the first is label value 0, the next 1, ... (comments and blank lines not counted)
# synonyms may follow a class name, comma-separated (zegclip predict --classes reads this file too)
"""


def write_synthetic_folder(
    root: str | Path,
    num_train: int = 48,
    num_val: int = 12,
    size: int | tuple[int, int] = 160,
    seed: int = 0,
    border: int = 2,
) -> Path:
    """Write the same generated samples in the folder layout (:mod:`zegclip.data.folder`) under ``root``.

    ``images/<id>.jpg``, ``labels/<id>.png`` (8-bit grayscale: class k is value k, the
    background and the void borders 255, the default ignore value), ``classes.txt`` (the
    six class names under a comment header), ``train.txt`` and ``val.txt``. The images and
    classes equal those :func:`write_synthetic_voc` writes with the same arguments (train
    then aug there, train here). Deterministic given the arguments; returns ``root``.
    """
    height, width = _checked(num_train, num_val, size)
    root = Path(root)
    for folder in (layouts.image_dir("folder", root), layouts.label_dir("folder", root)):
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    to_folder = np.full(256, IGNORE_INDEX, dtype=np.uint8)  # VOC-style raw k + 1 -> k, 0 and 255 -> 255
    to_folder[1 : len(SYNTHETIC_CLASSES) + 1] = np.arange(len(SYNTHETIC_CLASSES))
    splits = {
        "train": [f"syn_train_{i:05d}" for i in range(num_train)],
        "val": [f"syn_val_{i:05d}" for i in range(num_val)],
    }
    for split, ids in splits.items():
        for sample_id in ids:
            image, label = make_sample(rng, height, width, border)
            Image.fromarray(image).save(layouts.image_path("folder", root, sample_id), quality=95)
            Image.fromarray(to_folder[label]).save(layouts.label_path("folder", root, sample_id))
        layouts.split_file("folder", root, split).write_text("".join(f"{i}\n" for i in ids))
    classes = layouts.classes_file("folder", root)
    classes.write_text(_FOLDER_HEADER + "".join(f"{name}\n" for name in SYNTHETIC_CLASSES))
    return root


LAYOUT_WRITERS = {"voc": write_synthetic_voc, "folder": write_synthetic_folder}
"""The writer of each layout the synthetic dataset can be written in."""


def write_synthetic(root: str | Path, layout: str = "voc", **kwargs) -> Path:
    """Write the dataset in ``layout`` (``voc`` or ``folder``); ``kwargs`` as :func:`write_synthetic_voc`."""
    if layout not in LAYOUT_WRITERS:
        raise SyntheticError(f"unknown layout {layout!r}; expected one of {sorted(LAYOUT_WRITERS)}")
    return LAYOUT_WRITERS[layout](root, **kwargs)
