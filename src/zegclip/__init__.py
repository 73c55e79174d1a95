"""zegclip: ZegCLIP zero-shot semantic segmentation with CLIP.

Names load on first use, so ``import zegclip.metrics`` (say) does not import open_clip;
nothing here imports Lightning or Hydra.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ENSEMBLE_TEMPLATES": "zegclip.model",
    "SINGLE_TEMPLATE": "zegclip.model",
    "ZegCLIP": "zegclip.model",
    "ZegCLIPOutput": "zegclip.model",
    "build_zegclip": "zegclip.model",
    "load_model": "zegclip.model",
    "load_official_checkpoint": "zegclip.model",
    "segment": "zegclip.segmentation",
}

_SUBMODULES = ("model", "data", "metrics", "segmentation", "visualize", "export", "efficiency", "errors", "openvino")

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:  # zegclip.model, zegclip.data, ... without an explicit import
        return importlib.import_module(f"zegclip.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
