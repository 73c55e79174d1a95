"""Deep prompt parameters: init rule, per-layer sets, dropout per image."""

from __future__ import annotations

import math

import torch

from zegclip.model.prompts import DeepPrompts


def test_init_bounds_and_shapes():
    torch.manual_seed(0)
    prompts = DeepPrompts(width=768, num_layers=12, num_tokens=10, patch_size=16)
    bound = math.sqrt(6 / (3 * 16 * 16 + 768))
    assert prompts.prompt_embeddings.shape == (1, 10, 768)
    assert prompts.deep_prompt_embeddings.shape == (11, 10, 768)
    for p in (prompts.prompt_embeddings, prompts.deep_prompt_embeddings):
        assert p.abs().max() <= bound
        assert abs(p.std().item() - bound / math.sqrt(3)) < 0.02 * bound  # uniform's std
    # kaiming normal, fan_out: std = sqrt(2 / fan_out) = sqrt(2 / 768)
    assert abs(prompts.prompt_proj.weight.std().item() - math.sqrt(2 / 768)) < 2e-3


def test_layer_sets_and_dropout_per_image():
    torch.manual_seed(0)
    prompts = DeepPrompts(width=8, num_layers=3, num_tokens=5, patch_size=16, dropout=0.5)
    prompts.eval()
    assert torch.allclose(prompts(0, 2)[1], prompts.prompt_proj(prompts.prompt_embeddings[0]))
    assert torch.allclose(prompts(2, 2)[0], prompts.prompt_proj(prompts.deep_prompt_embeddings[1]))
    prompts.train()
    out = prompts(1, 2)
    assert out.shape == (2, 5, 8)
    assert not torch.equal(out[0], out[1])  # a separate dropout mask for every image
