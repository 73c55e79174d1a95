"""The ZegCLIP model in plain PyTorch (no Lightning, no Hydra)."""

from zegclip.model.build import MODEL_PRESETS, CheckpointError, build_zegclip, load_model, load_official_checkpoint
from zegclip.model.clip_encoder import TINY_CLIP, CLIPLoadError, load_clip
from zegclip.model.loss import ZegCLIPCriterion, pseudo_labels
from zegclip.model.text import ENSEMBLE_TEMPLATES, SINGLE_TEMPLATE, TEMPLATES
from zegclip.model.zegclip import PIXEL_MEAN, PIXEL_STD, ZegCLIP, ZegCLIPOutput

__all__ = [
    "CLIPLoadError",
    "CheckpointError",
    "ENSEMBLE_TEMPLATES",
    "MODEL_PRESETS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SINGLE_TEMPLATE",
    "TEMPLATES",
    "TINY_CLIP",
    "ZegCLIP",
    "ZegCLIPCriterion",
    "ZegCLIPOutput",
    "build_zegclip",
    "load_clip",
    "load_model",
    "load_official_checkpoint",
    "pseudo_labels",
]
