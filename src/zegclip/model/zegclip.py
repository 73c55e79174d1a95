"""The ZegCLIP model: frozen CLIP towers, deep prompts, relationship descriptor, mask decoder."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from zegclip.model.clip_encoder import TINY_CLIP, PromptedVisionEncoder, load_clip, uses_quick_gelu
from zegclip.model.decoder import AttentionMaskDecoder, RelationshipDescriptor
from zegclip.model.inference import calibrate, logits_to_scores, slide_inference
from zegclip.model.loss import upsample
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


class ZegCLIP(nn.Module):
    """Zero-shot segmentation with a frozen CLIP (Zhou et al., CVPR 2023).

    Built by :func:`build_zegclip`; ``config`` holds the keyword arguments that rebuild
    it, so checkpoints describe themselves.
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
        # the decoder is small: run it in fp32 under any autocast so scores stay exact
        with torch.autocast(images.device.type, enabled=False):
            queries = self.relationship(class_embeddings.float(), global_embed)  # B x C x D
            layer_logits = self.decoder(queries, patch_embeds)  # each B x C x h x w
        return ZegCLIPOutput(layer_logits[-1], layer_logits, global_embed, patch_embeds)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        class_embeddings: torch.Tensor,
        seen_mask: torch.Tensor | Sequence[bool] | None = None,
        mode: str = "slide",
        crop: int = 512,
        stride: int = 426,
        *,
        output_size: tuple[int, int] | None = None,
        window_batch: int = 8,
        shift: float = 0.1,
    ) -> torch.Tensor:
        """Calibrated per-class scores B x C x H x W; their argmax is the segmentation.

        Args:
            images: normalised B x 3 x H x W (for the paper's protocol, short side 512).
            class_embeddings: C x D.
            seen_mask: C booleans marking seen classes, whose scores drop by ``shift``
                (inductive models); None for no calibration.
            mode: ``"slide"`` (crop x crop windows, ``stride`` apart) or ``"whole"``.
            output_size: resize the scores to this (H, W), e.g. the original image's.
        """

        def score_fn(x: torch.Tensor) -> torch.Tensor:
            return logits_to_scores(self(x, class_embeddings).logits, x.shape[-2:])

        if mode == "whole":
            scores = score_fn(images)
        elif mode == "slide":
            scores = slide_inference(score_fn, images, crop=crop, stride=stride, window_batch=window_batch)
        else:
            raise ValueError(f"mode must be 'slide' or 'whole', got {mode!r}")
        if output_size is not None:
            scores = upsample(scores, output_size)
        if seen_mask is not None:
            seen_mask = torch.as_tensor(seen_mask, dtype=torch.bool)
        return calibrate(scores, seen_mask, shift)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the tensors that train (prompts, prompt norm, descriptor, decoder)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in trainable}

    def save(self, path: str | os.PathLike, *, trainable_only: bool = False) -> None:
        """Write a checkpoint that :meth:`from_checkpoint` reads with ``torch.load`` alone.

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

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu", **overrides: Any
    ) -> ZegCLIP:
        """Rebuild from :meth:`save` output, a training ``.ckpt`` or an authors' ``.pth``."""
        from zegclip.model.checkpoint import load_model

        return load_model(path, map_location=map_location, **overrides)

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


def _warn_quick_gelu(clip_model: str, pretrained: str | None, quick_gelu: bool | None) -> None:
    if (
        quick_gelu is None
        and pretrained
        and pretrained != "openai"
        and os.path.isfile(pretrained)
        and "quickgelu" not in clip_model.lower()
    ):
        warnings.warn(
            f"loading CLIP weights from {pretrained} with GELU; OpenAI CLIP weights need "
            "QuickGELU (pass quick_gelu=True), or accuracy drops silently. Pass quick_gelu=False "
            "to silence this for LAION-style weights.",
            UserWarning,
            stacklevel=3,
        )


def build_zegclip(
    clip_model: str = "ViT-B-16",
    pretrained: str | None = "openai",
    num_prompts: int = 10,
    *,
    image_size: int = 512,
    decoder_layers: int = 3,
    decoder_heads: int = 8,
    decoder_ffn_dim: int = 2048,
    dropout: float = 0.1,
    prompt_dropout: float = 0.1,
    quick_gelu: bool | None = None,
    clip_config: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> ZegCLIP:
    """Build ZegCLIP around an open_clip ViT.

    Args:
        clip_model: open_clip architecture name, e.g. ``"ViT-B-16"``, or ``"zegclip-tiny"``.
        pretrained: open_clip tag (``"openai"``, a LAION tag), a local weights file, or None
            for random weights.
        num_prompts: deep prompt tokens per layer (10 for VOC/Context, 100 for COCO-Stuff).
        image_size: training crop; the positional embedding is resized to its grid once.
        decoder_layers, decoder_heads, decoder_ffn_dim, dropout: the mask decoder (3, 8, 2048, 0.1).
        prompt_dropout: dropout on inserted prompts (0.1).
        quick_gelu: force QuickGELU (True) or GELU (False); None takes the tag's own
            activation (QuickGELU for ``openai``). Needed as True for OpenAI weights given as
            a file. ``config["quick_gelu"]`` records the activation actually built.
        clip_config: explicit open_clip config instead of ``clip_model`` (random weights).
        cache_dir: download cache for tagged weights.
    """
    _warn_quick_gelu(clip_model, pretrained, quick_gelu)
    config = {
        "clip_model": clip_model,
        "pretrained": pretrained,
        "num_prompts": num_prompts,
        "image_size": image_size,
        "decoder_layers": decoder_layers,
        "decoder_heads": decoder_heads,
        "decoder_ffn_dim": decoder_ffn_dim,
        "dropout": dropout,
        "prompt_dropout": prompt_dropout,
        "quick_gelu": quick_gelu,
        "clip_config": clip_config,
    }
    clip = load_clip(clip_model, pretrained, quick_gelu=quick_gelu, clip_config=clip_config, cache_dir=cache_dir)
    config["quick_gelu"] = uses_quick_gelu(clip)  # rebuilt the same from a checkpoint, whatever the tag
    if clip_config is not None:
        context = clip_config["text_cfg"].get("context_length", 77)
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
    else:
        tokenizer = open_clip.get_tokenizer(clip_model)
    visual, clip.visual = clip.visual, None  # the text tower keeps the rest of CLIP
    dim = visual.output_dim
    return ZegCLIP(
        image_encoder=PromptedVisionEncoder(
            visual=visual,
            num_prompts=num_prompts,
            image_size=image_size,
            prompt_dropout=prompt_dropout,
        ),
        text_encoder=TextEncoder(clip=clip, tokenizer=tokenizer),
        relationship=RelationshipDescriptor(dim=dim),
        decoder=AttentionMaskDecoder(
            dim=dim,
            num_layers=decoder_layers,
            num_heads=decoder_heads,
            ffn_dim=decoder_ffn_dim,
            dropout=dropout,
        ),
        config=config,
    )


def zegclip_vitb16_voc(**kwargs: Any) -> ZegCLIP:
    """The paper's VOC / Context model: ViT-B/16 (OpenAI), 10 prompt tokens."""
    return build_zegclip(**{"clip_model": "ViT-B-16", "num_prompts": 10, **kwargs})


def zegclip_vitb16_coco(**kwargs: Any) -> ZegCLIP:
    """The paper's COCO-Stuff model: ViT-B/16 (OpenAI), 100 prompt tokens."""
    return build_zegclip(**{"clip_model": "ViT-B-16", "num_prompts": 100, **kwargs})


def zegclip_tiny(**kwargs: Any) -> ZegCLIP:
    """A tiny random-weight model for tests and demos (CPU, seconds)."""
    defaults = {
        "clip_model": TINY_CLIP,
        "pretrained": None,
        "num_prompts": 4,
        "image_size": 128,
        "decoder_ffn_dim": 256,
    }
    return build_zegclip(**{**defaults, **kwargs})


MODEL_PRESETS = {
    "vitb16_voc": zegclip_vitb16_voc,
    "vitb16_coco": zegclip_vitb16_coco,
    "tiny": zegclip_tiny,
}
