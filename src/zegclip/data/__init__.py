"""Datasets, class lists, on-disk layouts, augmentation pipelines and preparation (no Lightning;
the DataModule is `zegclip.training.datamodule.SegDataModule`).

Submodules load lazily: ``zegclip.data.classes`` (names and splits) needs neither
albumentations nor Lightning, so inference code can use it cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "classes",
    "DatasetInfo": "classes",
    "get_dataset_info": "datasets",
    "COCOStuffSeg": "datasets",
    "Context459Seg": "datasets",
    "ContextSeg": "datasets",
    "DatasetError": "datasets",
    "VOCSeg": "datasets",
    "FolderSeg": "folder",
    "folder_info": "folder",
    "build_dataset": "datasets",
    "setting_label_lut": "datasets",
    "train_class_ids": "datasets",
    "write_synthetic_folder": "synthetic",
    "write_synthetic_voc": "synthetic",
    "eval_transform": "transforms",
    "train_transform": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"zegclip.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
