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

Plain pathlib, no third-party imports. Missing files are not checked here: each caller
reports them in its own terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LAYOUTS",
    "Layout",
    "Row",
    "canonical_split",
    "dataset_dir",
    "image_dir",
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
]

Row = tuple[str, Path, Path]
"""``(id, image path, label path)`` of one sample."""


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

LAYOUTS: dict[str, Layout] = {
    "voc": VOC,
    "synthetic": VOC,  # written in the VOC 2012 layout by zegclip.data.synthetic
    "coco_stuff": COCO_STUFF,
    "context": CONTEXT,
    "context60": CONTEXT,  # the same PNGs, read with background as class 0
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


def reader_lists(name: str, split: str) -> tuple[str, ...]:
    """The split lists (or image folders) the dataset reader of ``split`` reads, in order."""
    lay, split = layout(name), canonical_split(name, split)
    return lay.reader_lists.get(split, (split,))


def read_ids(path: str | Path) -> list[str]:
    """Read an image-id list (one id per line; only the first column is kept)."""
    with open(path) as f:
        return [line.split()[0] for line in f if line.strip()]


def split_ids(name: str, root: str | Path, split: str) -> list[str]:
    """The ids of ``split``: its split list, or (COCO-Stuff) the sorted images of its folder.

    Raises:
        OSError: if the list or the image folder cannot be read.
    """
    if layout(name).split_dir is not None:
        return read_ids(split_file(name, root, split))
    suffix = layout(name).image_suffix
    return sorted(p.name[: -len(suffix)] for p in image_dir(name, root, split).iterdir() if p.name.endswith(suffix))


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
    return [(i, images / f"{i}{lay.image_suffix}", homes[i] / f"{i}{lay.label_suffix}") for i in ids]
