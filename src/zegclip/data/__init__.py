"""Datasets, augmentation pipelines and the Lightning DataModule.

``SegDataModule`` is imported lazily so that ``zegclip.data.classes`` / ``datasets`` /
``transforms`` stay importable without Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zegclip.data.classes import DATASETS, DatasetInfo, get_dataset_info
from zegclip.data.datasets import (
    COCOStuffSeg,
    ContextSeg,
    DatasetError,
    VOCSeg,
    build_dataset,
    setting_label_lut,
    train_class_ids,
)
from zegclip.data.synthetic import write_synthetic_voc
from zegclip.data.transforms import eval_transform, train_transform

if TYPE_CHECKING:
    from zegclip.data.datamodule import SegDataModule

__all__ = [
    "DATASETS",
    "COCOStuffSeg",
    "ContextSeg",
    "DatasetError",
    "DatasetInfo",
    "SegDataModule",
    "VOCSeg",
    "build_dataset",
    "eval_transform",
    "get_dataset_info",
    "setting_label_lut",
    "train_class_ids",
    "train_transform",
    "write_synthetic_voc",
]


def __getattr__(name: str) -> Any:
    if name == "SegDataModule":
        from zegclip.data.datamodule import SegDataModule

        return SegDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
