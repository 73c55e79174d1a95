"""Relationship descriptor and the light attention-mask decoder (docs/method.md §4)."""

from __future__ import annotations

import torch
from torch import nn


class RelationshipDescriptor(nn.Module):
    """query_c = Linear_{2D -> D}(concat(t_c * g, t_c)) for every class c and image."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, class_embeds: torch.Tensor, global_embed: torch.Tensor) -> torch.Tensor:
        """Class embeddings C x D and image embeddings B x D -> queries B x C x D."""
        t = class_embeds.unsqueeze(0).expand(global_embed.shape[0], -1, -1)  # B x C x D
        return self.proj(torch.cat([t * global_embed.unsqueeze(1), t], dim=-1))


class AttentionScores(nn.Module):
    """Separate q and k maps; per-head scaled dot products before softmax."""

    def __init__(self, *, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        return x.reshape(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)  # B x h x T x d

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Queries B x C x D, memory B x M x D -> scores B x heads x C x M."""
        return (self.heads(self.q(queries)) * self.scale) @ self.heads(self.k(memory)).transpose(-2, -1)

    def mask_logits(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Head-averaged scores B x C x M without the per-head tensor.

        The mean over heads of per-head dot products is the full-width dot product
        divided by the number of heads.
        """
        q = self.q(queries) * (self.scale / self.num_heads)
        return q @ self.k(memory).transpose(-2, -1)


class MaskCrossAttention(nn.Module):
    """Cross-attention that also returns its head-averaged pre-softmax scores."""

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.scores = AttentionScores(dim=dim, num_heads=num_heads)
        self.v = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (attended B x C x D, mask logits B x C x M)."""
        B, C, D = queries.shape
        scores = self.scores(queries, memory)  # B x h x C x M, computed once
        attn = self.attn_drop(scores.softmax(dim=-1))
        out = (attn @ self.scores.heads(self.v(memory))).transpose(1, 2).reshape(B, C, D)
        return self.proj(out), scores.mean(dim=1)


class MaskDecoderLayer(nn.Module):
    """Post-norm layer without self-attention: cross-attention, then feed-forward."""

    def __init__(self, *, dim: int, num_heads: int, ffn_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.cross_attn = MaskCrossAttention(dim=dim, num_heads=num_heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, logits = self.cross_attn(queries, memory)
        queries = self.norm1(queries + self.dropout1(attended))
        queries = self.norm2(queries + self.dropout2(self.ffn(queries)))
        return queries, logits


class AttentionMaskDecoder(nn.Module):
    """Layers of class queries attending to patch tokens; mask logits are the scores.

    Only the last layer's attention scores reach the prediction, so the last layer
    is just its q/k maps: its value path, projection, feed-forward and norms could
    never change the output (docs/method.md §4).

    Arguments:
        dim: embedding width D.
        num_layers: decoder depth (3 in the paper).
        num_heads: attention heads (8).
        ffn_dim: feed-forward width (2048).
        dropout: dropout of attention, residual branches and feed-forward (0.1).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_layers: int = 3,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MaskDecoderLayer(dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout)
            for _ in range(num_layers - 1)
        )
        self.last = AttentionScores(dim=dim, num_heads=num_heads)

    def forward(self, queries: torch.Tensor, patch_embeds: torch.Tensor) -> list[torch.Tensor]:
        """Queries B x C x D, patches B x D x h x w -> per-layer mask logits B x C x h x w."""
        B, D, h, w = patch_embeds.shape
        memory = patch_embeds.flatten(2).transpose(1, 2)  # B x (h*w) x D
        layer_logits = []
        for layer in self.layers:
            queries, logits = layer(queries, memory)
            layer_logits.append(logits)
        layer_logits.append(self.last.mask_logits(queries, memory))
        return [logits.reshape(B, -1, h, w) for logits in layer_logits]  # B x C x h x w each
