"""Build the on-disk dataset layouts of docs/method.md §9 from the raw downloads.

Usage::

    python -m zegclip.data.prepare {voc,coco_stuff,context,pc459,ade150,ade847} --raw DIR --out DIR \
        [--workers N] [--strict]

``--raw`` holds the downloads, either as the original archives or already
extracted. Archives are extracted into ``<out>/.raw_extract``; nothing is written
outside ``--out``. Each extraction records which archive it came from (path, size,
mtime) and is redone when the archive changed. Images are hard-linked (copied where
linking fails), never moved. Labels are written to a temporary name and renamed, so
a label under its final name is always complete and a re-run skips it unless its
source changed after it was written.

Before the split lists are written, every id they name is checked to have an image
and a label in ``--out`` (the COCO-Stuff image folders stand in for lists): an archive
cut short, or lists naming files the downloads lack, is an error, not a quietly
smaller dataset. Nothing already prepared is deleted on an error.

One module per dataset (:mod:`.voc`, :mod:`.coco_stuff`, :mod:`.context` for both
``context`` and ``pc459``, :mod:`.ade20k` for ``ade150`` and ``ade847``), the shared file
work in :mod:`.files`, where the files go in :mod:`zegclip.data.layouts`, and the command
line in :mod:`zegclip.cli.prepare`.
"""

from __future__ import annotations

from collections.abc import Callable

from zegclip.data.prepare.ade20k import (
    ADE150_ARCHIVE,
    ADE_FULL_ARCHIVE,
    ade847_lut,
    prepare_ade150,
    prepare_ade847,
)
from zegclip.data.prepare.coco_stuff import (
    COCO_IMAGE_ARCHIVES,
    COCO_STUFF_ARCHIVE,
    coco_stuff_lut,
    prepare_coco_stuff,
)
from zegclip.data.prepare.context import (
    CONTEXT_JSON,
    CONTEXT_MAT_ARCHIVE,
    VOC2010_ARCHIVE,
    context_lut,
    pc459_label,
    prepare_context,
    prepare_pc459,
    rle_decode,
)
from zegclip.data.prepare.files import (
    EXTRACT_DIR,
    EXTRACT_STAMP,
    OFFICIAL_COUNTS,
    PrepareError,
    dataset_items,
    default_workers,
    is_current,
    link_or_copy,
    read_split,
    valid_label_values,
    write_label_png,
    write_split,
)
from zegclip.data.prepare.voc import SBD_ARCHIVE, VOC_ARCHIVE, prepare_voc, voc_lists

__all__ = [
    "ADE150_ARCHIVE",
    "ADE_FULL_ARCHIVE",
    "COCO_IMAGE_ARCHIVES",
    "COCO_STUFF_ARCHIVE",
    "CONTEXT_JSON",
    "CONTEXT_MAT_ARCHIVE",
    "EXTRACT_DIR",
    "EXTRACT_STAMP",
    "OFFICIAL_COUNTS",
    "PREPARERS",
    "SBD_ARCHIVE",
    "VOC2010_ARCHIVE",
    "VOC_ARCHIVE",
    "PrepareError",
    "ade847_lut",
    "coco_stuff_lut",
    "context_lut",
    "pc459_label",
    "dataset_items",
    "default_workers",
    "is_current",
    "link_or_copy",
    "prepare_ade150",
    "prepare_ade847",
    "prepare_coco_stuff",
    "prepare_context",
    "prepare_pc459",
    "prepare_voc",
    "read_split",
    "rle_decode",
    "valid_label_values",
    "voc_lists",
    "write_label_png",
    "write_split",
]

PREPARERS: dict[str, Callable[..., dict[str, int]]] = {
    "voc": prepare_voc,
    "coco_stuff": prepare_coco_stuff,
    "context": prepare_context,
    "pc459": prepare_pc459,
    "ade150": prepare_ade150,
    "ade847": prepare_ade847,
}
"""The preparer of each dataset: ``prepare(raw, out, workers=None, strict=False) -> counts``."""
