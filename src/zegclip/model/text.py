"""Class embeddings from the frozen CLIP text tower (docs/method.md §3)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zegclip.model.cached import reusable

SINGLE_TEMPLATE: tuple[str, ...] = ("a photo of a {}",)
"""VOC's prompt (no final period)."""

ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "a {} in the scene.",
    "a photo of a {} in the scene.",
    "There is a {} in the scene.",
    "There is the {} in the scene.",
    "This is a {} in the scene.",
    "This is the {} in the scene.",
    "This is one {} in the scene.",
)
"""The 15 templates averaged for COCO-Stuff, Context and cross-dataset evaluation."""

TEMPLATES: dict[str, tuple[str, ...]] = {"single": SINGLE_TEMPLATE, "ensemble": ENSEMBLE_TEMPLATES}


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template set by name (``"single"``, ``"ensemble"``) or a list of format strings."""
    if isinstance(templates, str):
        if templates in TEMPLATES:
            return TEMPLATES[templates]
        templates = (templates,)
    templates = tuple(templates)
    bad = [t for t in templates if t.count("{}") != 1]
    if not templates or bad:
        raise ValueError(
            f"templates must be 'single', 'ensemble' or format strings with one '{{}}'; got {bad or templates}"
        )
    return templates


class TextEncoder(nn.Module):
    """The frozen open_clip text tower; encodes a vocabulary once and caches it (in any grad mode:
    an embedding cached under ``torch.inference_mode`` is copied once for a training forward).

    Args:
        clip: an open_clip ``CLIP`` model (its image tower may be removed).
        tokenizer: the matching open_clip tokenizer.
        batch_size: prompts encoded per forward.
    """

    def __init__(self, *, clip: nn.Module, tokenizer, batch_size: int = 256) -> None:
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._cache: dict[tuple, torch.Tensor] = {}
        # new weights invalidate every cached vocabulary
        self.register_load_state_dict_pre_hook(lambda *args, **kwargs: self._cache.clear())

    def train(self, mode: bool = True) -> TextEncoder:
        return super().train(False)  # frozen: always eval

    @torch.no_grad()
    def forward(self, class_names: Sequence[str], templates: str | Sequence[str] = SINGLE_TEMPLATE) -> torch.Tensor:
        """Class embeddings C x D, L2-normalised, float32.

        With several templates each prompt's embedding is normalised, the mean taken
        per class and normalised again (docs/method.md §3).
        """
        templates = resolve_templates(templates)
        names = tuple(class_names)
        if not names:
            raise ValueError("the vocabulary is empty: give at least one class name")
        device = self.clip.token_embedding.weight.device
        key = (names, templates, str(device))
        if key not in self._cache:
            prompts = [t.format(name) for name in names for t in templates]
            tokens = self.tokenizer(prompts).to(device)
            with torch.autocast(device.type, enabled=False):
                feats = torch.cat(
                    [self.clip.encode_text(chunk, normalize=True) for chunk in tokens.split(self.batch_size)]
                ).float()  # (C*T) x D
            feats = feats.reshape(len(names), len(templates), -1)
            embeds = feats[:, 0] if len(templates) == 1 else F.normalize(feats.mean(1), dim=-1)
            self._cache[key] = embeds
        elif not reusable(self._cache[key]):  # made under inference_mode, now needed outside it
            self._cache[key] = self._cache[key].clone()  # a normal tensor, autograd can save it
        return self._cache[key]


def save_text_embeddings(path: str | Path, class_embeds: torch.Tensor) -> None:
    """Write C x D embeddings as float16 ``.npy``, the released code's format."""
    np.save(Path(path), class_embeds.detach().cpu().to(torch.float16).numpy())


def load_text_embeddings(path: str | Path) -> torch.Tensor:
    """Read a C x D ``.npy`` as float32, not re-normalised (as the released code feeds it)."""
    array = np.load(Path(path))
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a C x D array of class embeddings, got {array.shape}")
    return torch.from_numpy(array.astype(np.float32))
