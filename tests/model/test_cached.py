"""Caches filled under ``torch.inference_mode`` (Lightning's validate/test) and then used for training.

Each cache (`FrozenCasts`, `FoldedQuickGELU`, the text encoder's vocabulary cache) is filled under
inference mode and then used by a forward whose backward must save its tensors: that raised
"Inference tensors cannot be saved for backward" before the copies were made again.
"""

from __future__ import annotations

import pytest
import torch

from zegclip.model import clip_encoder


def test_frozen_casts_made_in_inference_mode_serve_a_backward(tiny_model):
    casts = clip_encoder.FrozenCasts()
    weight = tiny_model.image_encoder.visual.transformer.resblocks[0].attn.in_proj_weight  # 192 x 64
    x = torch.randn(2, 9, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.inference_mode():
            made_there = casts(weight, x)
        assert made_there.is_inference()
        grad_x = x.clone().requires_grad_()
        copy = casts(weight, grad_x)
        assert not copy.is_inference() and torch.equal(copy, made_there)
        torch.nn.functional.linear(grad_x, copy).float().sum().backward()  # saves the copy
        with torch.inference_mode():
            assert casts(weight, x) is copy  # a normal tensor serves inference mode too: no third copy
    assert grad_x.grad is not None


def test_folded_mlp_made_in_inference_mode_serves_a_backward(tiny_model):
    block = tiny_model.image_encoder.visual.transformer.resblocks[0]
    folded = clip_encoder.FoldedQuickGELU()
    x = torch.randn(2, 9, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.inference_mode():
            clip_encoder.run_block(block, x, folded)
        assert all(t.is_inference() for t in next(iter(folded._cache.values()))[1])
        grad_x = x.clone().requires_grad_()
        clip_encoder.run_block(block, grad_x, folded).float().sum().backward()
    assert grad_x.grad is not None and torch.isfinite(grad_x.grad).all()


def test_text_cache_made_in_inference_mode_serves_a_backward(tiny_model):
    with torch.inference_mode():
        made_there = tiny_model.encode_text(["cat", "dog"])
    weight = torch.randn(made_there.shape[1], requires_grad=True)
    embeds = tiny_model.encode_text(["cat", "dog"])
    assert not embeds.is_inference() and torch.equal(embeds, made_there)
    (embeds * weight).sum().backward()  # saves the embeddings for the weight's gradient
    assert torch.equal(weight.grad, embeds.sum(0))
    assert tiny_model.encode_text(["cat", "dog"]) is embeds  # copied once, then cached again


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_training_after_an_inference_mode_forward_gets_the_same_gradients(make_tiny_model, dtype):
    """The whole model: a forward under inference mode (every cache filled there), then a training
    step; its gradients are those of a model that never ran under inference mode."""
    images, names = torch.randn(2, 3, 64, 64), ["cat", "dog", "sky"]

    def train_step(model):
        model.train()
        torch.manual_seed(1)  # the same prompt dropout in both models
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(images, model.encode_text(names))
        out.logits.float().square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    fresh, validated = make_tiny_model(seed=0), make_tiny_model(seed=0)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        validated(images, validated.encode_text(names))
    expected, got = train_step(fresh), train_step(validated)
    assert expected.keys() == got.keys()
    for name, grad in expected.items():
        assert torch.equal(got[name], grad), name
