"""The ZegCLIP model: frozen CLIP towers, deep prompts, relationship descriptor, mask decoder.

The class alone; :mod:`zegclip.model.build` builds it, and reads checkpoints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zegclip.model.clip_encoder import PromptedVisionEncoder
from zegclip.model.decoder import AttentionMaskDecoder, RelationshipDescriptor
from zegclip.model.inference import Predictor
from zegclip.model.pretrained import push_to_hub, write_pretrained
from zegclip.model.text import SINGLE_TEMPLATE, TextEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
"""The released pipeline normalises RGB 0..255 images with these (not CLIP's own)."""

CHECKPOINT_FORMAT = "zegclip"


@dataclass
class ZegCLIPOutput:
    """What one forward pass returns.

    Attributes:
        logits: last decoder layer's mask logits, B x C x h x w (h = H / patch).
        layer_logits: every decoder layer's mask logits, each B x C x h x w.
        global_embedding: L2-normalised image embedding, B x D.
        patch_embeddings: L2-normalised patch embeddings, B x D x h x w.
    """

    logits: torch.Tensor
    layer_logits: list[torch.Tensor]
    global_embedding: torch.Tensor
    patch_embeddings: torch.Tensor


class ZegCLIP(nn.Module, Predictor):
    """Zero-shot segmentation with a frozen CLIP (Zhou et al., CVPR 2023).

    Built by :func:`zegclip.model.build.build_zegclip`; ``config`` holds the keyword
    arguments that rebuild it, so checkpoints describe themselves. ``predict`` and
    ``predict_labels`` come from `Predictor`, shared with the OpenVINO backend.
    """

    def __init__(
        self,
        *,
        image_encoder: PromptedVisionEncoder,
        text_encoder: TextEncoder,
        relationship: RelationshipDescriptor,
        decoder: AttentionMaskDecoder,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.relationship = relationship
        self.decoder = decoder
        self.config = dict(config or {})
        self.metadata: dict[str, Any] = {}  # provenance, e.g. the file it was loaded from
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images B x 3 x H x W with values 0..255 -> normalised float input.

        ``(x - mean) * (1 / std)`` in float32: the arithmetic of the evaluation pipeline
        (albumentations ``Normalize`` on uint8), so both give bitwise-equal inputs.
        """
        return (images.to(self.pixel_mean) - self.pixel_mean) * torch.reciprocal(self.pixel_std)

    def encode_text(self, class_names: Sequence[str], templates: str | Sequence[str] = SINGLE_TEMPLATE) -> torch.Tensor:
        """Class embeddings C x D (L2-normalised), cached per vocabulary and templates."""
        return self.text_encoder(class_names, templates)

    def forward(self, images: torch.Tensor, class_embeddings: torch.Tensor) -> ZegCLIPOutput:
        """Normalised images B x 3 x H x W and class embeddings C x D -> mask logits."""
        global_embed, patch_embeds = self.image_encoder(images)  # B x D, B x D x h x w (fp32)
        return self.decode(global_embed, patch_embeds, class_embeddings)

    def decode(
        self, global_embed: torch.Tensor, patch_embeds: torch.Tensor, class_embeddings: torch.Tensor
    ) -> ZegCLIPOutput:
        """Image embeddings (B x D, B x D x h x w) and class embeddings C x D -> mask logits.

        Each class query attends only to the image (no self-attention among classes), so
        the classes can be decoded in any grouping with the same result.
        """
        # the decoder is small: run it in fp32 under any autocast so scores stay exact
        with torch.autocast(patch_embeds.device.type, enabled=False):
            queries = self.relationship(class_embeddings.float(), global_embed)  # B x C x D
            layer_logits = self.decoder(queries, patch_embeds)  # each B x C x h x w
        return ZegCLIPOutput(layer_logits[-1], layer_logits, global_embed, patch_embeds)

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images B x 3 x H x W -> (global B x D, patches B x D x h x w), for `decode_logits`."""
        return self.image_encoder(images)

    def decode_logits(self, encoded: tuple[torch.Tensor, torch.Tensor], class_embeddings: torch.Tensor) -> torch.Tensor:
        """The last mask logits B x C x h x w of `decode` (``predict`` and ``predict_labels`` call it)."""
        return self.decode(*encoded, class_embeddings).logits

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train (prompts, prompt norm, descriptor, decoder)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    def save(self, path: str | os.PathLike, *, trainable_only: bool = False) -> None:
        """Write a checkpoint that ``zegclip.load_model`` reads with ``torch.load`` alone.

        A full checkpoint needs nothing else (no network, no CLIP cache: its ``pretrained``
        entry only records where CLIP came from); a trainable-only one rebuilds CLIP from
        its ``clip_model`` / ``pretrained`` source when loaded.
        """
        config = dict(self.config)
        state = self.trainable_state_dict() if trainable_only else self.state_dict()
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config,
            "metadata": self.metadata,
            "state_dict": state,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, path)

    def save_pretrained(self, folder: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
        """Write a shareable folder: ``model.safetensors``, ``config.json``, model card ``README.md``.

        ``info`` (``dataset``, ``setting``, ``class_names``, ``unseen``, ``step``, ``metrics``)
        goes into the card and ``config.json``, merged over ``self.metadata`` (what a training
        ``.ckpt`` recorded, when loaded from one); paths of this machine are made relative to
        the folder's parent or cut to their name. ``zegclip.load_model(folder)`` reads it back, offline.
        """
        return write_pretrained(self, folder, info)

    def push_to_hub(self, repo_id: str, info: dict[str, Any] | None = None, **kwargs: Any) -> str:
        """Upload the ``save_pretrained`` folder to the Hugging Face Hub as ``repo_id``; returns its URL.

        Load it anywhere with ``zegclip.load_model("hf-hub:" + repo_id)``; the card's usage lines
        name ``repo_id``. ``kwargs``: ``private``, ``token``, ``commit_message``, ``endpoint``.
        An unreachable hub or a refused upload raises one-line ``HubError``.
        """
        return push_to_hub(self, repo_id, info, **kwargs)

    def load_weights(
        self, state: dict[str, torch.Tensor], *, trainable_only: bool = False, source: str = "state"
    ) -> None:
        """Load a state dict; a missing, unexpected or differently shaped tensor is an error naming it."""
        own = self.trainable_state_dict() if trainable_only else self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"{source}: weights do not match this model; missing {missing[:10]}"
                f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}"
                f"{' ...' if len(unexpected) > 10 else ''}"
            )
        wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            key = wrong[0]
            raise ValueError(
                f"{source}: the config does not fit the weights: {key} is {tuple(state[key].shape)} in the "
                f"checkpoint but {tuple(own[key].shape)} in the model built from the config"
                f"{f' (and {len(wrong) - 1} more tensors)' if len(wrong) > 1 else ''}"
            )
        self.load_state_dict(state, strict=not trainable_only)

    def train(self, mode: bool = True) -> ZegCLIP:
        super().train(mode)
        self.text_encoder.eval()
        self.image_encoder.train(mode)  # keeps the CLIP ViT itself in eval
        return self
