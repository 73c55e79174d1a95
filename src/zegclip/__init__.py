"""zegclip: ZegCLIP zero-shot semantic segmentation with CLIP.

Importing this package loads the model only (torch + open_clip); Lightning and Hydra
are imported by the training entry points alone.
"""

from zegclip.model import (
    ENSEMBLE_TEMPLATES,
    SINGLE_TEMPLATE,
    ZegCLIP,
    ZegCLIPOutput,
    build_zegclip,
    load_model,
    load_official_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "ENSEMBLE_TEMPLATES",
    "SINGLE_TEMPLATE",
    "ZegCLIP",
    "ZegCLIPOutput",
    "__version__",
    "build_zegclip",
    "load_model",
    "load_official_checkpoint",
]
