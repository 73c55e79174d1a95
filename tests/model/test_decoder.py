"""Relationship descriptor and the attention-mask decoder, against hand-written formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zegclip.model.decoder import AttentionMaskDecoder, MaskDecoderLayer, RelationshipDescriptor


def test_relationship_descriptor_formula():
    torch.manual_seed(0)
    rd = RelationshipDescriptor(dim=8)
    t, g = torch.randn(3, 8), torch.randn(2, 8)
    out = rd(t, g)
    assert out.shape == (2, 3, 8)
    for b in range(2):
        for c in range(3):
            expected = rd.proj(torch.cat([t[c] * g[b], t[c]]))
            assert torch.allclose(out[b, c], expected, atol=1e-6)


def _per_head_scores(attn_scores, queries, memory, heads):
    """Scores head by head with explicit slicing: B x heads x C x M."""
    q, k = attn_scores.q(queries), attn_scores.k(memory)
    d = q.shape[-1] // heads
    return torch.stack(
        [q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2) / d**0.5 for h in range(heads)],
        dim=1,
    )


def test_layer_is_post_norm_cross_attention_and_returns_pre_softmax_scores():
    torch.manual_seed(0)
    layer = MaskDecoderLayer(dim=16, num_heads=4, ffn_dim=32).eval()
    queries, memory = torch.randn(2, 3, 16), torch.randn(2, 10, 16)
    out, logits = layer(queries, memory)
    ca = layer.cross_attn
    scores = _per_head_scores(ca.scores, queries, memory, 4)  # B x h x C x M
    assert torch.allclose(logits, scores.mean(1), atol=1e-5)
    v = ca.v(memory)
    heads_out = [scores[:, h].softmax(-1) @ v[..., h * 4 : (h + 1) * 4] for h in range(4)]
    attended = ca.proj(torch.cat(heads_out, dim=-1))
    q = F.layer_norm(queries + attended, (16,), layer.norm1.weight, layer.norm1.bias)
    ffn = layer.ffn[3](torch.relu(layer.ffn[0](q)))
    expected = F.layer_norm(q + ffn, (16,), layer.norm2.weight, layer.norm2.bias)
    assert torch.allclose(out, expected, atol=1e-5)


def test_decoder_layer_logits_and_last_layer_scores_only():
    torch.manual_seed(0)
    decoder = AttentionMaskDecoder(dim=16, num_layers=3, num_heads=8, ffn_dim=32).eval()
    assert len(decoder.layers) == 2 and not hasattr(decoder.last, "v")
    queries, patches = torch.randn(2, 5, 16), torch.randn(2, 16, 3, 4)  # non-square grid
    logits = decoder(queries, patches)
    assert len(logits) == 3 and all(x.shape == (2, 5, 3, 4) for x in logits)
    memory = patches.flatten(2).transpose(1, 2)
    q = queries
    for i, layer in enumerate(decoder.layers):
        q_next, _ = layer(q, memory)
        expected = _per_head_scores(layer.cross_attn.scores, q, memory, 8).mean(1)
        assert torch.allclose(logits[i], expected.reshape(2, 5, 3, 4), atol=1e-5)
        q = q_next
    expected_last = _per_head_scores(decoder.last, q, memory, 8).mean(1)
    assert torch.allclose(logits[-1], expected_last.reshape(2, 5, 3, 4), atol=1e-5)


def test_default_pytorch_init_kept():
    torch.manual_seed(0)
    decoder = AttentionMaskDecoder(dim=512, num_layers=3)
    # nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); LayerNorm ones/zeros
    w = decoder.layers[0].ffn[0].weight
    assert w.abs().max() <= 1 / 512**0.5
    assert torch.equal(decoder.layers[0].norm1.weight, torch.ones(512))
