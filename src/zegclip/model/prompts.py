"""Deep visual prompts (VPT-deep), as ZegCLIP inserts them into the frozen CLIP ViT."""

from __future__ import annotations

import math

import torch
from torch import nn


class DeepPrompts(nn.Module):
    """Trainable prompt tokens for every layer of a ViT, with a shared projection.

    ``prompt_embeddings`` (1 x N x W) feed layer 0, ``deep_prompt_embeddings``
    ((L - 1) x N x W) feed layers 1..L-1. Every set goes through the one shared
    ``prompt_proj`` (Linear W -> W) and dropout before insertion (docs/method.md §2).
    """

    def __init__(self, *, width: int, num_layers: int, num_tokens: int, patch_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.prompt_embeddings = nn.Parameter(torch.empty(1, num_tokens, width))
        self.deep_prompt_embeddings = nn.Parameter(torch.empty(num_layers - 1, num_tokens, width))
        self.prompt_proj = nn.Linear(width, width)
        self.prompt_dropout = nn.Dropout(dropout)
        self.reset_parameters(patch_size)

    def reset_parameters(self, patch_size: int) -> None:
        """VPT init: uniform in [-v, v], v = sqrt(6 / (3 * p * p + W)); kaiming fan-out proj."""
        width = self.prompt_embeddings.shape[-1]
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
        nn.init.uniform_(self.prompt_embeddings, -bound, bound)
        nn.init.uniform_(self.deep_prompt_embeddings, -bound, bound)
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")

    @property
    def num_layers(self) -> int:
        return self.deep_prompt_embeddings.shape[0] + 1

    def forward(self, layer: int, batch_size: int) -> torch.Tensor:
        """Prompt tokens for ``layer``: B x N x W (projected, then dropout per image)."""
        raw = self.prompt_embeddings[0] if layer == 0 else self.deep_prompt_embeddings[layer - 1]
        # N x W -> B x N x W; dropout after the expand draws a separate mask per image
        return self.prompt_dropout(self.prompt_proj(raw).expand(batch_size, -1, -1))
