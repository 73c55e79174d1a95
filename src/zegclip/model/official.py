"""The authors' released checkpoints (mmseg ``.pth``): their key names mapped onto ours.

Pure functions over state dicts; reading files is :func:`zegclip.model.build.load_official_checkpoint`.
"""

from __future__ import annotations

import re
from typing import Any

import torch


def is_official(payload: dict[str, Any]) -> bool:
    state = payload.get("state_dict", {})
    return isinstance(state, dict) and any(k.startswith("backbone.") for k in state)


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in state if (m := regex.match(k))})


def official_config(state: dict[str, torch.Tensor], *, decoder_heads: int = 8) -> dict[str, Any]:
    """``build_zegclip`` kwargs inferred from the shapes of an authors' state dict."""
    conv = state["backbone.conv1.weight"]  # W x 3 x p x p
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state["backbone.positional_embedding"].shape[0] - 1) ** 0.5))
    vision_layers = _count(state, r"backbone\.transformer\.resblocks\.(\d+)\.")
    text_width = state["text_encoder.token_embedding.weight"].shape[1]
    prompts = state["backbone.prompt_embeddings"]  # 1 x N x W
    clip_config = {
        "embed_dim": state["backbone.proj"].shape[1],
        "quick_gelu": True,  # the released towers always use QuickGELU
        "vision_cfg": {
            "image_size": grid * patch,
            "layers": vision_layers,
            "width": width,
            "patch_size": patch,
            "head_width": 64,
            "mlp_ratio": state["backbone.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        },
        "text_cfg": {
            "context_length": state["text_encoder.positional_embedding"].shape[0],
            "vocab_size": state["text_encoder.token_embedding.weight"].shape[0],
            "width": text_width,
            "heads": max(1, text_width // 64),  # CLIP text heads are 64 wide
            "layers": _count(state, r"text_encoder\.transformer\.resblocks\.(\d+)\."),
        },
    }
    return {
        "clip_model": "ViT-B-16-quickgelu" if (width, patch, vision_layers) == (768, 16, 12) else "custom",
        "pretrained": None,
        "num_prompts": prompts.shape[1],
        "image_size": grid * patch,
        "decoder_layers": _count(state, r"decode_head\.decoder_1\.layers\.(\d+)\."),
        "decoder_heads": decoder_heads,
        "decoder_ffn_dim": state["decode_head.decoder_1.layers.0.linear1.weight"].shape[0],
        "quick_gelu": True,
        "clip_config": clip_config,
    }


def unused_official_keys(num_layers: int) -> dict[str, str]:
    """Patterns of released keys this model does not hold, each with the reason."""
    last = num_layers - 1
    return {
        r"decode_head\.decoder_1\.layers\.\d+\.self_attn\.": (
            "the decoder layers never run self-attention among the class queries"
        ),
        r"decode_head\.decoder_1\.layers\.\d+\.norm1\.": "norm of the never-run self-attention",
        rf"decode_head\.decoder_1\.layers\.{last}\.(multihead_attn\.(v|proj)|linear1|linear2|norm2|norm3)\.": (
            "only the last layer's attention scores reach the prediction"
        ),
        r"decode_head\.loss_decode\.": "a buffer of the training loss, not of the model",
    }


def _official_rename(key: str, num_layers: int) -> str:
    """Authors' key -> our key (raises KeyError for a key we do not know)."""
    rules = [
        (r"backbone\.prompt_(embeddings|proj\.)", r"image_encoder.prompts.prompt_\1"),
        (r"backbone\.deep_prompt_embeddings", "image_encoder.prompts.deep_prompt_embeddings"),
        (r"backbone\.prompt_norm\.", "image_encoder.prompt_norm."),
        (
            r"backbone\.(class_embedding|positional_embedding|proj$|conv1\.|ln_pre\.|ln_post\.|transformer\.)",
            r"image_encoder.visual.\1",
        ),
        (r"text_encoder\.", "text_encoder.clip."),
        (r"decode_head\.q_proj\.", "relationship.proj."),
        (
            rf"decode_head\.decoder_1\.layers\.{num_layers - 1}\.multihead_attn\.(q|k)\.",
            r"decoder.last.\1.",
        ),
        (
            r"decode_head\.decoder_1\.layers\.(\d+)\.multihead_attn\.(q|k)\.",
            r"decoder.layers.\1.cross_attn.scores.\2.",
        ),
        (
            r"decode_head\.decoder_1\.layers\.(\d+)\.multihead_attn\.(v|proj)\.",
            r"decoder.layers.\1.cross_attn.\2.",
        ),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.linear1\.", r"decoder.layers.\1.ffn.0."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.linear2\.", r"decoder.layers.\1.ffn.3."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.norm2\.", r"decoder.layers.\1.norm1."),
        (r"decode_head\.decoder_1\.layers\.(\d+)\.norm3\.", r"decoder.layers.\1.norm2."),
    ]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key, count=1)
    raise KeyError(key)


NOT_IN_OFFICIAL: dict[str, str] = {
    "text_encoder.clip.logit_scale": "CLIP's contrastive temperature; segmentation never uses it",
}
"""Our keys that a released checkpoint does not carry, with the reason."""


def convert_official_state_dict(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename released keys to ours, dropping the known-unused ones (unknown keys: error)."""
    unused = [re.compile(p) for p in unused_official_keys(num_layers)]
    converted, unknown = {}, []
    for key, value in state.items():
        if any(p.match(key) for p in unused):
            continue
        try:
            converted[_official_rename(key, num_layers)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise KeyError(f"unexpected keys in the released checkpoint: {unknown}")
    return converted
