"""Where each prepared dataset keeps its files under the data root (docs/method.md §9).

The one description of the on-disk layouts (those of mmsegmentation 0.x), used by the
readers (:mod:`zegclip.data.datasets`), the preparers (:mod:`zegclip.data.prepare`), the
checks (:mod:`zegclip.data.verify`) and the synthetic writer (:mod:`zegclip.data.synthetic`)::

    voc, synthetic        VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                          VOCdevkit/VOC2012/SegmentationClass/<id>.png      (train, val)
                          VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   (aug, from SBD)
                          VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,aug,trainaug}.txt
    coco_stuff            coco_stuff164k/images/{train2017,val2017}/<id>.jpg
                          coco_stuff164k/annotations/{train2017,val2017}/<id>_labelTrainIds.png
                          (no split lists: a split is the images in its folder)
    context, context60    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
                          VOCdevkit/VOC2010/SegmentationClassContext/<id>.png
                          VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt
    pc459                 VOCdevkit/VOC2010/JPEGImages/<id>.jpg
                          VOCdevkit/VOC2010/SegmentationClassContext459/<id>.png  (16-bit)
                          VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt (Context's list)
    folder                images/<id>.<jpg|jpeg|png|bmp|tif|tiff|webp>   (your own data, directly
                          labels/<id>.png   (8- or 16-bit class indices)  under the data root;
                          classes.txt       (class k: k-th class line)    zegclip.data.folder)
                          {train,val}.txt   (`zegclip prepare folder --root DIR` writes them)
    ade150                ADEChallengeData2016/images/{training,validation}/<id>.jpg
                          ADEChallengeData2016/annotations/{training,validation}/<id>.png
                          (raw 0..150, 0 = other: reduced on reading; no split lists)
    ade847                ADE20K_2021_17_01/images_detectron2/validation/<id>.jpg
                          ADE20K_2021_17_01/annotations_detectron2/validation/<id>.png  (16-bit)
                          (the open-vocabulary repositories' folders, PNG for their TIFF)

Plain pathlib, no third-party imports. Missing files are not checked here: each caller
reports them in its own terms. A split list may not name a file outside its dataset folder
(:class:`IdListError`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from zegclip.errors import ZegCLIPError

__all__ = [
    "LAYOUTS",
    "IdListError",
    "Layout",
    "Row",
    "canonical_split",
    "classes_file",
    "dataset_dir",
    "image_dir",
    "image_files",
    "image_path",
    "label_dir",
    "label_path",
    "layout",
    "read_ids",
    "reader_lists",
    "split_dir",
    "split_file",
    "split_ids",
    "split_items",
    "split_source",
]

Row = tuple[str, Path, Path]
"""``(id, image path, label path)`` of one sample."""

logger = logging.getLogger("zegclip.data.layouts")  # under zegclip.data: the CLI logging shows it


class IdListError(ZegCLIPError, ValueError):
    """A split list whose id would read a file outside the dataset (absolute, or with ``..``)."""


@dataclass(frozen=True)
class Layout:
    """The files of one dataset kind, relative to the data root.

    Folder names may hold ``{split}``, replaced by the (canonical) split name.
    """

    folder: str
    """The dataset folder under the data root."""
    image_dir: str
    """Images, under ``folder``."""
    label_dir: str
    """Labels, under ``folder`` (of every split list not in ``list_label_dirs``)."""
    splits: tuple[str, ...]
    """The split lists (or, without ``split_dir``, the image folders) of a prepared dataset."""
    split_dir: str | None = None
    """Split lists ``<split>.txt``, under ``folder``; None: a split is its image folder's files."""
    image_suffix: str = ".jpg"
    label_suffix: str = ".png"
    split_aliases: Mapping[str, str] = field(default_factory=dict)
    """Other names of splits (COCO-Stuff: ``train`` for ``train2017``)."""
    list_label_dirs: Mapping[str, str] = field(default_factory=dict)
    """Split lists whose labels lie elsewhere than ``label_dir`` (VOC: ``aug`` from SBD)."""
    merged_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Lists that are the union of others (VOC ``trainaug``): an id's label lies where the
    first of those lists naming it puts its labels (the last one's folder if none does)."""
    reader_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Splits the dataset readers read from several lists, in order (VOC ``train``: the
    official train list, then the SBD aug list)."""
    image_suffixes: tuple[str, ...] = ()
    """Suffixes an image may have instead of ``image_suffix`` (any case; folder: any common
    format): an id's image is the file found (:func:`image_files`), else ``<id><image_suffix>``."""
    classes_file: str | None = None
    """The class list under ``folder`` of a dataset that names its own classes (folder)."""
    whole_line_ids: bool = False
    """Each line of a split list is one id, spaces included (folder: ids are file names);
    otherwise the first column (the benchmarks' lists, some of which have a second)."""


VOC = Layout(
    folder="VOCdevkit/VOC2012",
    image_dir="JPEGImages",
    label_dir="SegmentationClass",
    split_dir="ImageSets/Segmentation",
    splits=("train", "val", "aug", "trainaug"),
    list_label_dirs={"aug": "SegmentationClassAug"},
    merged_lists={"trainaug": ("train", "aug")},
    reader_lists={"train": ("train", "aug")},
)

COCO_STUFF = Layout(
    folder="coco_stuff164k",
    image_dir="images/{split}",
    label_dir="annotations/{split}",
    label_suffix="_labelTrainIds.png",
    splits=("train2017", "val2017"),
    split_aliases={"train": "train2017", "val": "val2017"},
)

CONTEXT = Layout(
    folder="VOCdevkit/VOC2010",
    image_dir="JPEGImages",
    label_dir="SegmentationClassContext",
    split_dir="ImageSets/SegmentationContext",
    splits=("train", "val"),
)

CONTEXT459 = Layout(
    folder="VOCdevkit/VOC2010",
    image_dir="JPEGImages",
    label_dir="SegmentationClassContext459",
    split_dir="ImageSets/SegmentationContext",
    splits=("val",),  # evaluation only; the val list is Context's
)

FOLDER = Layout(
    folder=".",  # the data root is the dataset folder
    image_dir="images",
    label_dir="labels",
    split_dir=".",
    splits=("train", "val"),
    image_suffixes=(".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"),
    classes_file="classes.txt",
    whole_line_ids=True,
)

ADE150 = Layout(
    folder="ADEChallengeData2016",
    image_dir="images/{split}",
    label_dir="annotations/{split}",
    splits=("training", "validation"),
    split_aliases={"train": "training", "val": "validation"},
)

ADE847 = Layout(
    folder="ADE20K_2021_17_01",
    image_dir="images_detectron2/{split}",
    label_dir="annotations_detectron2/{split}",
    splits=("validation",),  # evaluation only
    split_aliases={"val": "validation"},
)

LAYOUTS: dict[str, Layout] = {
    "voc": VOC,
    "synthetic": VOC,  # written in the VOC 2012 layout by zegclip.data.synthetic
    "coco_stuff": COCO_STUFF,
    "context": CONTEXT,
    "context60": CONTEXT,  # the same PNGs, read with background as class 0
    "pc459": CONTEXT459,
    "folder": FOLDER,  # your own images and masks (zegclip.data.folder)
    "ade150": ADE150,
    "ade847": ADE847,
}


def layout(name: str) -> Layout:
    """The layout of dataset ``name``; KeyError naming the known ones otherwise."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"no on-disk layout for dataset {name!r}; known: {sorted(LAYOUTS)}") from None


def canonical_split(name: str, split: str) -> str:
    """``split`` with its alias resolved (COCO-Stuff ``train`` -> ``train2017``)."""
    return layout(name).split_aliases.get(split, split)


def _folder(name: str, root: str | Path, template: str, split: str | None) -> Path:
    if split is None and "{split}" in template:
        raise ValueError(f"{name}: {template} differs per split; name the split")
    return dataset_dir(name, root) / template.format(split=split)


def dataset_dir(name: str, root: str | Path) -> Path:
    """The dataset folder under ``root`` (``VOCdevkit/VOC2012``, ``coco_stuff164k``, ...)."""
    return Path(root) / layout(name).folder


def image_dir(name: str, root: str | Path, split: str | None = None) -> Path:
    """The folder holding the images of ``split`` (which only COCO-Stuff needs)."""
    split = None if split is None else canonical_split(name, split)
    return _folder(name, root, layout(name).image_dir, split)


def label_dir(name: str, root: str | Path, split: str | None = None) -> Path:
    """The folder holding the labels of the ids of split list ``split``.

    Without ``split``: the folder of the lists not in ``list_label_dirs`` (VOC: the
    official masks); COCO-Stuff needs the split.

    Raises:
        ValueError: for a merged list (VOC ``trainaug``), whose labels lie in several
            folders; use :func:`split_items`.
    """
    lay = layout(name)
    split = None if split is None else canonical_split(name, split)
    if split in lay.merged_lists:
        raise ValueError(f"{split} merges {', '.join(lay.merged_lists[split])}: its labels lie in several folders")
    return _folder(name, root, lay.list_label_dirs.get(split, lay.label_dir), split)


def image_path(name: str, root: str | Path, sample_id: str, split: str | None = None) -> Path:
    """The image of ``sample_id`` (see :func:`image_dir`)."""
    return image_dir(name, root, split) / f"{sample_id}{layout(name).image_suffix}"


def label_path(name: str, root: str | Path, sample_id: str, split: str | None = None) -> Path:
    """The label of ``sample_id``, an id of split list ``split`` (see :func:`label_dir`)."""
    return label_dir(name, root, split) / f"{sample_id}{layout(name).label_suffix}"


def split_dir(name: str, root: str | Path) -> Path:
    """The folder of the split lists; ValueError for a dataset without lists (COCO-Stuff)."""
    lay = layout(name)
    if lay.split_dir is None:
        raise ValueError(f"{name} has no split lists: a split is the images in its folder")
    return dataset_dir(name, root) / lay.split_dir


def split_file(name: str, root: str | Path, split: str) -> Path:
    """The split list ``<split>.txt`` (see :func:`split_dir`)."""
    return split_dir(name, root) / f"{split}.txt"


def split_source(name: str, root: str | Path, split: str) -> Path:
    """What defines ``split``, for messages: its split list, or (COCO-Stuff, ADE20K) its image folder."""
    if layout(name).split_dir is None:
        return image_dir(name, root, split)
    return split_file(name, root, split)


def reader_lists(name: str, split: str) -> tuple[str, ...]:
    """The split lists (or image folders) the dataset reader of ``split`` reads, in order."""
    lay, split = layout(name), canonical_split(name, split)
    return lay.reader_lists.get(split, (split,))


def _leaves_folder(sample_id: str) -> bool:
    """Whether ``sample_id`` joined to a folder could name a file outside it (either OS's rules)."""
    windows = PureWindowsPath(sample_id)  # splits at / and \\ alike
    return bool(PurePosixPath(sample_id).anchor or windows.anchor or ".." in windows.parts)


def read_ids(path: str | Path, whole_line: bool = False) -> list[str]:
    """Read an image-id list: one id per line, blank lines skipped.

    A UTF-8 byte-order mark (Windows editors), line ends and surrounding spaces are dropped.
    ``whole_line`` keeps each line whole, spaces inside included (the folder kind's ids are
    file names); otherwise only the first column is kept (benchmark lists).

    Raises:
        OSError, UnicodeDecodeError: the list cannot be read.
        IdListError: an id is an absolute path or holds ``..`` (it would read outside the dataset).
    """
    ids = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            sample_id = text if whole_line else text.split()[0]
            if _leaves_folder(sample_id):
                raise IdListError(
                    f"{path}, line {number}: id {sample_id!r} points outside the dataset folder; ids are paths "
                    "relative to the image folder, without a leading / and without .."
                )
            ids.append(sample_id)
    return ids


def split_ids(name: str, root: str | Path, split: str) -> list[str]:
    """The ids of ``split``: its split list, or (COCO-Stuff) the sorted images of its folder.

    Raises:
        OSError: if the list or the image folder cannot be read.
        IdListError: an id of the list would read outside the dataset (see :func:`read_ids`).
    """
    if layout(name).split_dir is not None:
        return read_ids(split_file(name, root, split), whole_line=layout(name).whole_line_ids)
    suffix = layout(name).image_suffix
    return sorted(p.name[: -len(suffix)] for p in image_dir(name, root, split).iterdir() if p.name.endswith(suffix))


def classes_file(name: str, root: str | Path) -> Path:
    """The class list of a dataset that names its own classes (folder: ``classes.txt``)."""
    lay = layout(name)
    if lay.classes_file is None:
        raise ValueError(f"{name} has fixed classes (zegclip.data.classes), no class list file")
    return dataset_dir(name, root) / lay.classes_file


def _visible_folders(top: Path) -> list[Path]:
    """``top`` and its subfolders, hidden ones (``.name``) left out."""
    folders = []
    for folder, dirs, _files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folders.append(Path(folder))
    return folders


def image_files(
    name: str, root: str | Path, split: str | None = None, ids: Sequence[str] | None = None
) -> dict[str, list[Path]]:
    """The images of a layout with ``image_suffixes``, by id (sorted; several if an id has several).

    Lists the folders the ``ids`` lie in (ids may hold ``/``), once each; without ``ids``,
    every file of the image folder and its subfolders. Hidden files (``.name``) are skipped;
    a missing folder gives nothing.
    """
    lay = layout(name)
    top = image_dir(name, root, split)
    suffixes = {s.lower() for s in (*lay.image_suffixes, lay.image_suffix)}
    folders = _visible_folders(top) if ids is None else sorted({(top / i).parent for i in ids})
    found: dict[str, list[Path]] = {}
    broken: list[Path] = []
    for folder in folders:
        try:
            entries = _files_in(folder, broken)
        except OSError:  # missing or unreadable: its ids keep their default name, reported missing
            continue
        for file in entries:
            path = folder / file
            if path.suffix.lower() in suffixes:
                found.setdefault(path.relative_to(top).with_suffix("").as_posix(), []).append(path)
    if broken:
        logger.warning(
            "%d link(s) in %s are broken or loop and are skipped: %s%s",
            len(broken),
            top,
            ", ".join(map(str, broken[:3])),
            ", ..." if len(broken) > 3 else "",
        )
    return found


def _files_in(folder: Path, broken: list[Path]) -> list[str]:
    """The visible files of ``folder`` (links followed), sorted; links that lead nowhere go to ``broken``.

    A link looping back on itself or to a missing file is skipped alone, not the folder.
    """
    names = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_file():
                    names.append(entry.name)
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    broken.append(folder / entry.name)
            except OSError:  # a loop of links (ELOOP), or a target that cannot be looked at
                broken.append(folder / entry.name)
    return sorted(names)


def split_items(
    name: str,
    root: str | Path,
    split: str,
    ids: Sequence[str] | None = None,
    lists: Mapping[str, Sequence[str]] | None = None,
) -> list[Row]:
    """``(id, image path, label path)`` of every id of ``split``, in order.

    Args:
        name: The dataset.
        root: The data root.
        split: A split list (or, COCO-Stuff, an image folder).
        ids: Its ids (default: :func:`split_ids`).
        lists: The ids of the lists a merged list (VOC ``trainaug``) is made of, which
            decide where each label lies (default: read with :func:`split_ids`).
    """
    lay, split = layout(name), canonical_split(name, split)
    ids = split_ids(name, root, split) if ids is None else ids
    parts = lay.merged_lists.get(split)
    if parts is None:
        labels = label_dir(name, root, split)
        homes = dict.fromkeys(ids, labels)
    else:
        lists = {} if lists is None else lists
        homes = {}
        for part in reversed(parts):  # the first list naming an id wins
            members = lists[part] if part in lists else split_ids(name, root, part)
            homes.update(dict.fromkeys(members, label_dir(name, root, part)))
        fallback = label_dir(name, root, parts[-1])
        homes = {i: homes.get(i, fallback) for i in ids}
    images = image_dir(name, root, split)
    found = image_files(name, root, split, ids) if lay.image_suffixes else {}
    return [
        (i, found[i][0] if i in found else images / f"{i}{lay.image_suffix}", homes[i] / f"{i}{lay.label_suffix}")
        for i in ids
    ]
