"""Your own images and masks as a dataset: the ``folder`` kind, used with no code.

The layout (:mod:`zegclip.data.layouts`), directly under the data root::

    images/<id>.<jpg|jpeg|png|bmp|tif|tiff|webp>
    labels/<id>.png     single-channel class indices: 8-bit (L or palette) or 16-bit
    classes.txt         one class per line, synonyms comma-separated, blank lines and
                        # comments ignored (as ``zegclip predict --classes``): class k is
                        the k-th class line, its first name the one shown in the tables
    train.txt, val.txt  ids, one per line (``zegclip prepare folder --root DIR`` makes them)

Label values: class k is value k; the ignore value (``data.ignore_index``, default 255)
marks pixels never trained on nor scored. It may not be a class value, except 0, which
moves the classes to 1..C (0 unlabelled, as VOC's background). The reader maps the
labels to those of the training pipeline: classes 0..C-1 and 255 ignored, uint8. More
than 254 classes do not fit there (254 and 255 are reserved): such a folder is read as
uint16 labels with 65535 ignored and can be evaluated, not trained.

Unseen classes are chosen by name (``data.unseen=[cat, dog]``, any synonym). During
training and evaluation a class with synonyms is the normalised mean of their text
embeddings, as in ``zegclip predict`` (:func:`class_synonyms`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zegclip.atomic import atomic_write
from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX
from zegclip.data import layouts
from zegclip.data.checks import (
    DEFAULT_SAMPLE,
    VerifyReport,
    check_presence,
    examples,
    image_size,
    orientation_warning,
    size_mismatch,
)
from zegclip.data.classes import FOLDER, DatasetInfo
from zegclip.data.reading import DatasetError, SegDataset, Transform, _layout_samples, check_same_size, read_image
from zegclip.vocabulary import VocabularyError, parse_vocabulary

__all__ = [
    "MAX_TRAIN_CLASSES",
    "FolderError",
    "FolderInfo",
    "FolderSeg",
    "class_synonyms",
    "folder_info",
    "label_table",
    "make_split",
    "read_classes",
    "read_index_label",
    "verify_folder",
]

logger = logging.getLogger("zegclip.data.folder")  # under zegclip.data: the CLI logging shows it

MAX_TRAIN_CLASSES = HIDDEN_INDEX
"""Most classes a folder can be trained with: the 8-bit training labels keep 254 (hidden,
transductive) and 255 (ignored) for themselves."""
_WIDE_IGNORE = 65535


class FolderError(DatasetError):
    """A folder dataset that cannot be used as given (missing classes.txt, unknown unseen names, ...)."""


@dataclass(frozen=True)
class FolderInfo(DatasetInfo):
    """:class:`DatasetInfo` of a folder, with what its reader needs to know of the files."""

    label_ignore: int = IGNORE_INDEX
    """The ignore value in the label files (``data.ignore_index``); ``ignore_index`` is the
    value the reader maps it to (255, or 65535 above 254 classes)."""
    synonyms: tuple[tuple[str, ...], ...] = ()
    """Every name of each class, the first one its ``class_names`` entry."""


def read_classes(root: str | Path) -> list[list[str]]:
    """The names of each class in ``root/classes.txt``, read as ``zegclip predict --classes`` reads it.

    Raises:
        FolderError: the file is missing, unreadable, empty or repeats a name.
    """
    path = layouts.classes_file(FOLDER, root)
    if not path.is_file():
        raise FolderError(f"{path}: class list not found (expected one class per line, synonyms comma-separated)")
    try:
        return parse_vocabulary(path)
    except VocabularyError as err:
        raise FolderError(str(err)) from err


def _check_ignore(ignore_index: int, num_classes: int) -> None:
    if not 0 <= ignore_index <= _WIDE_IGNORE:
        raise FolderError(f"data.ignore_index={ignore_index}: expected a label value 0..65535")
    if 0 < ignore_index < num_classes:
        raise FolderError(
            f"data.ignore_index={ignore_index} is a class value (class k is value k, 0..{num_classes - 1}); "
            "use a value above them (255, 65535) or 0 (the classes are then 1..C)"
        )
    if ignore_index == 0 and num_classes >= _WIDE_IGNORE:
        raise FolderError(f"{num_classes} classes do not fit in 16-bit labels next to the ignore value")


def folder_info(
    root: str | Path | None, unseen: Sequence[str] | str = (), ignore_index: int = IGNORE_INDEX
) -> FolderInfo:
    """The classes of the folder dataset at ``root``, with ``unseen`` (names, any synonym, any case).

    ``unseen`` is a list of names, or one string: a single name, or names separated by ``;`` or ``,``.

    Raises:
        FolderError: ``root`` is None or not a folder, classes.txt cannot be used, a name
            of ``unseen`` is not a class (the message lists them), every class is unseen,
            or ``ignore_index`` is a class value.
    """
    if root is None:
        raise FolderError("the folder dataset needs its folder: set data.root")
    if not Path(root).is_dir():
        raise FolderError(
            f"{root} (data.root) is not a folder; a folder dataset holds images/, labels/ and classes.txt "
            "(`zegclip synthetic --layout folder --out DIR` writes an example)"
        )
    synonyms = tuple(tuple(names) for names in read_classes(root))
    names = tuple(s[0] for s in synonyms)
    index = {name.lower(): k for k, group in enumerate(synonyms) for name in group}
    if isinstance(unseen, str):  # data.unseen=cat (no brackets): one name, or names split by ; or ,
        unseen = unseen.replace(";", ",").split(",")
    wanted = [" ".join(str(name).split()) for name in unseen if str(name).strip()]
    unknown = [name for name in wanted if name.lower() not in index]
    if unknown:
        raise FolderError(
            f"data.unseen: {', '.join(unknown)} not in {layouts.classes_file(FOLDER, root)}; known: {', '.join(names)}"
        )
    unseen_ids = tuple(sorted({index[name.lower()] for name in wanted}))
    if len(unseen_ids) == len(names):
        raise FolderError(f"data.unseen names every class of {root}: keep at least one seen class")
    ignore_index = int(ignore_index)
    _check_ignore(ignore_index, len(names))
    wide = len(names) > MAX_TRAIN_CLASSES
    return FolderInfo(
        FOLDER,
        names,
        unseen_ids,
        reduce_zero_label=ignore_index == 0,
        ignore_index=_WIDE_IGNORE if wide else IGNORE_INDEX,
        eval_only=wide,
        label_ignore=ignore_index,
        synonyms=synonyms,
    )


def class_synonyms(info: DatasetInfo) -> tuple[tuple[str, ...], ...]:
    """Every name of each class: a folder's synonyms, a benchmark's one name per class."""
    if isinstance(info, FolderInfo) and info.synonyms:
        return info.synonyms
    return tuple((name,) for name in info.class_names)


def label_table(info: FolderInfo) -> tuple[np.ndarray, np.ndarray]:
    """``(lut, valid)`` over the 65536 label values: what the reader makes of each, and which may occur.

    ``lut`` is uint8 (classes 0..C-1, 255 ignored) up to 254 classes, else uint16 (65535 ignored).
    """
    offset = 1 if info.label_ignore == 0 else 0
    lut = np.full(_WIDE_IGNORE + 1, info.ignore_index, dtype=np.uint16 if info.eval_only else np.uint8)
    lut[offset : offset + info.num_classes] = np.arange(info.num_classes)
    valid = np.zeros(_WIDE_IGNORE + 1, dtype=bool)
    valid[offset : offset + info.num_classes] = True
    valid[info.label_ignore] = True
    return lut, valid


def allowed_values(info: FolderInfo) -> str:
    """The label values of ``info`` in words, for messages: ``0..5 or 255``."""
    offset = 1 if info.label_ignore == 0 else 0
    return f"{offset}..{offset + info.num_classes - 1} or {info.label_ignore} (ignored)"


def _colour_message(count: int, examples: str, mode: str) -> str:
    return (
        f"{count} label(s) are COLOUR images (mode {mode}), e.g. {examples}: labels must be "
        "single-channel PNGs whose values are class indices (value k = class k of classes.txt); "
        "convert colour masks to one value per class and save them as 8-bit grayscale or 16-bit PNGs"
    )


def read_index_label(path: str | Path) -> np.ndarray:
    """A label PNG as class indices, H x W: uint8 (modes 1, L, P: palette indices) or uint16 (16-bit).

    Raises:
        FolderError: a colour or otherwise multi-channel label, or 32-bit values outside 0..65535.
        OSError, ValueError: the file cannot be decoded.
    """
    with Image.open(path) as img:
        mode = img.mode
        if mode in ("1", "L", "P"):
            return np.array(img, dtype=np.uint8)
        if mode.startswith("I;16"):
            return np.array(img).astype(np.uint16)
        if mode == "I":  # 16-bit PNGs as some Pillow versions open them
            values = np.array(img)
            if values.size and (values.min() < 0 or values.max() > _WIDE_IGNORE):
                raise FolderError(f"{path}: label values outside 0..65535")
            return values.astype(np.uint16)
    if mode in ("RGB", "RGBA"):
        raise FolderError(_colour_message(1, str(path), mode))
    raise FolderError(f"{path}: label has mode {mode!r}; expected single-channel class indices (L, P or 16-bit)")


class FolderSeg(SegDataset):
    """A split of a folder dataset (see the module notes).

    Args:
        root: the folder (holding ``images/``, ``labels/``, ``classes.txt``, ``<split>.txt``).
        split: the list to read, ``train`` or ``val`` (any ``<split>.txt``).
        transform: optional albumentations-style callable.
        info: the classes (:func:`folder_info`, with its unseen classes and ignore value);
            default: read from ``root`` with none unseen and 255 ignored.
    """

    def __init__(
        self, root: str | Path, split: str, transform: Transform | None = None, info: FolderInfo | None = None
    ) -> None:
        info = folder_info(root) if info is None else info
        if not isinstance(info, FolderInfo):
            raise TypeError(f"info must be a FolderInfo (folder_info(root)), got {type(info).__name__}")
        lists = layouts.split_file(FOLDER, root, split)
        if not lists.is_file():
            raise FolderError(
                f"{lists}: split list not found; write the ids one per line, or split the folder with "
                f"`zegclip prepare folder --root {root}`"
            )
        self.samples = _layout_samples(FOLDER, root, split)
        self.root = Path(root)
        self.info = info
        self.transform = transform
        self.lut, self.valid = label_table(info)

    def load(self, index: int) -> dict[str, Any]:
        """Read one sample, checked and mapped (classes 0..C-1, ignore 255), without the transform."""
        sample_id, image_path, label_path = self.samples[index]
        image = read_image(image_path)
        try:
            raw = read_index_label(label_path)
        except (OSError, ValueError) as err:
            if isinstance(err, FolderError):
                raise
            raise DatasetError(f"{label_path}: cannot read label PNG ({err})") from err
        check_same_size(image, raw, image_path, label_path)
        ok = self.valid[raw]
        if not ok.all():
            bad = np.unique(raw[~ok])
            raise DatasetError(
                f"{label_path}: label values {bad[:10].tolist()} are not classes of "
                f"{layouts.classes_file(FOLDER, self.root)}; expected {allowed_values(self.info)}"
            )
        return {"image": image, "label": self.lut[raw], "id": sample_id}


# --------------------------------------------------------------------------- split lists


def _write_list(path: Path, ids: Sequence[str]) -> None:
    with atomic_write(path, durable=False) as f:
        f.write("".join(f"{i}\n" for i in ids).encode("utf-8"))


def make_split(root: str | Path, val_fraction: float = 0.2, seed: int = 0, force: bool = False) -> dict[str, list[str]]:
    """Split the labelled images of a folder into ``train.txt`` and ``val.txt`` and write them.

    The ids (images with a label, searched in subfolders too) are sorted, shuffled with
    ``seed`` and cut: ``val_fraction`` of them (at least one) are validation, the rest
    (at least one) training; each list is written sorted. The same files and arguments
    always give the same lists.

    Raises:
        FolderError: a list exists already (unless ``force``), ``val_fraction`` is not
            between 0 and 1, an id has several images, or fewer than 2 images have labels.
    """
    root = Path(root)
    if not 0 < val_fraction < 1:
        raise FolderError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    paths = {split: layouts.split_file(FOLDER, root, split) for split in ("train", "val")}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FolderError(f"{' and '.join(existing)} exist(s): the split is kept (pass --force to make a new one)")
    images_dir = layouts.image_dir(FOLDER, root)
    if not images_dir.is_dir():
        raise FolderError(f"{images_dir}: image folder not found (expected images/<id>.jpg or .png, ...)")
    images = layouts.image_files(FOLDER, root)
    several = sorted(i for i, files in images.items() if len(files) > 1)
    if several:
        raise FolderError(f"{len(several)} id(s) have several images, e.g. {examples([images[i] for i in several])}")
    ids = sorted(i for i in images if layouts.label_path(FOLDER, root, i).is_file())
    unlabelled = sorted(set(images) - set(ids))
    if unlabelled:
        logger.warning(
            "%d image(s) have no label in %s and are left out, e.g. %s",
            len(unlabelled),
            layouts.label_dir(FOLDER, root),
            examples(unlabelled),
        )
    if len(ids) < 2:
        raise FolderError(f"{root}: {len(ids)} image(s) with a label; a split needs at least 2")
    order = list(ids)
    random.Random(seed).shuffle(order)
    num_val = min(max(1, round(len(ids) * val_fraction)), len(ids) - 1)
    split = {"train": sorted(order[num_val:]), "val": sorted(order[:num_val])}
    for name, path in paths.items():
        _write_list(path, split[name])
    return split


# --------------------------------------------------------------------------- checks


def _read_lists(root: Path, report: VerifyReport) -> dict[str, list[layouts.Row]]:
    items = {}
    for split in layouts.layout(FOLDER).splits:
        path = layouts.split_file(FOLDER, root, split)
        if not path.is_file():
            report.problems.append(
                f"no split list {path}; write the ids one per line, or split the folder with "
                f"`zegclip prepare folder --root {root}`"
            )
            continue
        try:
            ids = layouts.split_ids(FOLDER, root, split)
        except layouts.IdListError as err:
            report.problems.append(str(err))
            continue
        except (OSError, UnicodeDecodeError) as err:
            report.problems.append(f"cannot read split list {path}: {err}")
            continue
        items[split] = layouts.split_items(FOLDER, root, split, ids)
    return items


def _check_lists(root: Path, items: dict[str, list[layouts.Row]], report: VerifyReport) -> None:
    ids = sorted({row[0] for rows in items.values() for row in rows})
    images = layouts.image_files(FOLDER, root, ids=ids)
    several = [images[i] for i in ids if len(images.get(i, ())) > 1]
    if several:
        report.problems.append(f"{len(several)} id(s) have several images, e.g. {examples(several)}")
    check_presence(items, report)
    if "train" in items and "val" in items:
        both = sorted({r[0] for r in items["train"]} & {r[0] for r in items["val"]})
        if both:
            report.warnings.append(f"{len(both)} id(s) are in both train and val, e.g. {examples(both)}")


def _unreadable(path: Path, err: BaseException) -> str:
    return f"{path} ({' '.join(str(err).split()) or type(err).__name__})"


def verify_folder(root: str | Path, sample: int = DEFAULT_SAMPLE, ignore_index: int = IGNORE_INDEX) -> VerifyReport:
    """Check a folder dataset as ``zegclip verify`` checks the benchmarks.

    classes.txt readable, non-empty, without repeated names; both split lists present;
    every listed id with one image and a label; every label single-channel, of the image's
    size, with values 0..C-1 or ``ignore_index`` (1..C or 0 for ``ignore_index=0``);
    ``sample`` images (fixed seed) fully decoded. Warnings: ids in both lists, classes
    no label of a split holds (a class never in train is learnt from no pixel), and images
    with an EXIF orientation tag (labels apply to the stored pixels).
    """
    root = Path(root)
    report = VerifyReport(histogram=np.zeros(_WIDE_IGNORE + 1, dtype=np.int64))
    if not root.is_dir():
        report.problems.append(f"{root} is not a folder (expected images/, labels/, classes.txt, train.txt, val.txt)")
        return report
    info: FolderInfo | None = None
    try:
        info = folder_info(root, (), ignore_index)
    except FolderError as err:
        report.problems.append(str(err))
    items = _read_lists(root, report)
    _check_lists(root, items, report)
    valid = label_table(info)[1] if info is not None else None
    per_split = {split: np.zeros(_WIDE_IGNORE + 1, dtype=np.int64) for split in items}
    colour: dict[str, list[Path]] = {}
    bad_mode, bad_size, unreadable, tagged = [], [], [], []
    bad_values: dict[int, list[Path]] = {}
    done: dict[Path, np.ndarray | None] = {}  # label -> its histogram (None: unusable)
    for split, rows in items.items():
        for _i, image_path, label_path in rows:
            if not (image_path.is_file() and label_path.is_file()):
                continue
            if label_path not in done:
                done[label_path] = _check_label(
                    image_path, label_path, valid, colour, bad_mode, bad_size, bad_values, unreadable, tagged
                )
            counts = done[label_path]
            if counts is not None:
                per_split[split] += counts
    _decode_sample(items, sample, unreadable)
    report.sampled = sum(counts is not None for counts in done.values())
    for counts in per_split.values():
        report.histogram += counts
    _report_labels(info, colour, bad_mode, bad_size, bad_values, unreadable, report)
    if tagged:
        report.warnings.append(orientation_warning(tagged))
    if info is not None:
        _warn_absent_classes(info, per_split, report)
    return report


def _decode_sample(items: dict[str, list[layouts.Row]], sample: int, unreadable: list[str]) -> None:
    """Fully decode ``sample`` of the listed images (fixed seed); the unreadable ones are named."""
    pairs = sorted({(row[1], row[2]) for rows in items.values() for row in rows if row[1].is_file()})
    for image_path, _label in random.Random(0).sample(pairs, min(sample, len(pairs))):
        try:
            with Image.open(image_path) as im:
                im.load()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
            unreadable.append(_unreadable(image_path, err))


def _warn_absent_classes(info: FolderInfo, per_split: dict[str, np.ndarray], report: VerifyReport) -> None:
    """A warning per split whose labels never hold some classes."""
    offset = 1 if info.label_ignore == 0 else 0
    for split, counts in per_split.items():
        absent = [name for k, name in enumerate(info.class_names) if not counts[offset + k]]
        if absent and counts.any():
            why = "nothing to learn them from" if split == "train" else "nothing to score them on"
            report.warnings.append(f"{split}: no label holds class(es) {', '.join(absent)} ({why})")


def _check_label(
    image_path: Path,
    label_path: Path,
    valid: np.ndarray | None,
    colour: dict[str, list[Path]],
    bad_mode: list[str],
    bad_size: list[str],
    bad_values: dict[int, list[Path]],
    unreadable: list[str],
    tagged: list[str],
) -> np.ndarray | None:
    """Read one label and its image's size; the label's value counts, or None if unusable."""
    try:
        with Image.open(label_path) as im:
            mode = im.mode
        if mode in ("RGB", "RGBA"):
            colour.setdefault(mode, []).append(label_path)
            return None
        label = read_index_label(label_path)
    except FolderError:
        bad_mode.append(f"{label_path} ({mode})")
        return None
    except Exception as err:  # truncated, corrupt, not an image
        unreadable.append(_unreadable(label_path, err))
        return None
    try:
        width, height, orientation = image_size(image_path, tagged)
    except Exception as err:
        unreadable.append(_unreadable(image_path, err))
        return None
    if label.shape != (height, width):
        bad_size.append(size_mismatch(label_path, label.shape, width, height, orientation))
    counts = np.bincount(label.ravel(), minlength=_WIDE_IGNORE + 1)
    if valid is not None:
        for value in np.flatnonzero((counts > 0) & ~valid):
            bad_values.setdefault(int(value), []).append(label_path)
    return counts


def _report_labels(
    info: FolderInfo | None,
    colour: dict[str, list[Path]],
    bad_mode: list[str],
    bad_size: list[str],
    bad_values: dict[int, list[Path]],
    unreadable: list[str],
    report: VerifyReport,
) -> None:
    if unreadable:
        report.problems.append(
            f"{len(unreadable)} file(s) cannot be decoded (truncated, corrupt or not an image): {examples(unreadable)}"
        )
    for mode, paths in colour.items():
        report.problems.append(_colour_message(len(paths), examples(paths), mode))
    if bad_mode:
        report.problems.append(
            f"{len(bad_mode)} label(s) are not single-channel index maps (L, P or 16-bit): {examples(bad_mode)}"
        )
    if bad_values and info is not None:
        paths = sorted({p for ps in bad_values.values() for p in ps})
        report.problems.append(
            f"{len(paths)} label(s) hold values outside {allowed_values(info)} of the {info.num_classes} "
            f"classes (values {sorted(bad_values)[:10]}), e.g. {examples(paths)}"
        )
    if bad_size:
        report.problems.append(f"{len(bad_size)} label(s) differ in size from their image: {examples(bad_size)}")
