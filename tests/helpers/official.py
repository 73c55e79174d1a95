"""The authors' released key layout, written by hand from a model (the inverse of our mapping)."""

from __future__ import annotations

import torch


def authors_layout(model) -> dict[str, torch.Tensor]:
    """Write a tiny model's weights under the released key names (hand-written inverse map)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("image_encoder.visual."):
            out["backbone." + key[len("image_encoder.visual.") :]] = value
        elif key.startswith("image_encoder.prompts."):
            out["backbone." + key[len("image_encoder.prompts.") :]] = value
        elif key.startswith("image_encoder.prompt_norm."):
            out["backbone." + key[len("image_encoder.") :]] = value
        elif key.startswith("text_encoder.clip.") and "logit_scale" not in key:
            out["text_encoder." + key[len("text_encoder.clip.") :]] = value
        elif key.startswith("relationship.proj."):
            out["decode_head.q_proj." + key.split(".")[-1]] = value
    names = {"cross_attn.scores.q": "multihead_attn.q", "cross_attn.scores.k": "multihead_attn.k"}
    names |= {"cross_attn.v": "multihead_attn.v", "cross_attn.proj": "multihead_attn.proj"}
    names |= {"ffn.0": "linear1", "ffn.3": "linear2", "norm1": "norm2", "norm2": "norm3"}
    dim = model.decoder.last.q.weight.shape[0]
    for i, layer in enumerate(model.decoder.layers):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                out[f"decode_head.decoder_1.layers.{i}.{theirs}.{kind}"] = layer.get_submodule(ours).get_parameter(kind)
    last = len(model.decoder.layers)
    for kind in ("weight", "bias"):
        out[f"decode_head.decoder_1.layers.{last}.multihead_attn.q.{kind}"] = model.decoder.last.q.get_parameter(kind)
        out[f"decode_head.decoder_1.layers.{last}.multihead_attn.k.{kind}"] = model.decoder.last.k.get_parameter(kind)
        for unused in ("multihead_attn.v", "multihead_attn.proj", "norm2", "norm3"):
            out[f"decode_head.decoder_1.layers.{last}.{unused}.{kind}"] = torch.randn(dim)
    for i in range(last + 1):
        out[f"decode_head.decoder_1.layers.{i}.self_attn.in_proj_weight"] = torch.randn(3 * dim, dim)
        out[f"decode_head.decoder_1.layers.{i}.norm1.weight"] = torch.randn(dim)
    out["decode_head.loss_decode.criterion.empty_weight"] = torch.ones(16)
    return {k: v.detach().clone() for k, v in out.items()}
