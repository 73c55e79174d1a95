"""The frozen CLIP ViT with deep prompts: loading, embedding quirks, token order, freezing."""

from __future__ import annotations

import socket

import huggingface_hub
import huggingface_hub.errors
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from zegclip.model import TINY_CLIP, build_zegclip, clip_encoder
from zegclip.model.clip_encoder import CLIPLoadError, load_clip, resize_pos_embed


def test_open_clip_block_contract():
    """The names and layout we rely on exist in the installed open_clip (open_clip block names; see clip_encoder.py)."""
    visual = load_clip(TINY_CLIP, None).visual
    for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "proj"):
        assert hasattr(visual, name), name
    block = visual.transformer.resblocks[0]
    for name in ("ln_1", "ls_1", "ln_2", "mlp", "ls_2"):
        assert hasattr(block, name), name
    assert visual.transformer.batch_first
    x = torch.randn(2, 7, visual.conv1.out_channels)
    assert block(x).shape == (2, 7, visual.conv1.out_channels)  # N x L x D in, same out


@pytest.mark.parametrize("fmt", ["pt", "safetensors", "module_prefixed"])
def test_local_weights_file_loads_bit_identical(tmp_path, fmt):
    torch.manual_seed(1)
    load_clip(TINY_CLIP, None)
    source = open_clip.create_model(TINY_CLIP, pretrained=None, force_quick_gelu=True).state_dict()
    path = tmp_path / f"clip.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in source.items()}, str(path))
    elif fmt == "pt":
        torch.save(source, path)
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in source.items()}}, path)
    loaded = load_clip(TINY_CLIP, str(path), quick_gelu=True).state_dict()
    assert loaded.keys() == source.keys()
    for key in source:
        assert torch.equal(loaded[key], source[key]), key


def test_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "nope" / "ViT-B-16.pt"
    with pytest.raises(CLIPLoadError, match="nope/ViT-B-16.pt"):
        load_clip("ViT-B-16", str(missing))


def test_uncached_tag_offline_fails_fast_with_guidance(monkeypatch, tmp_path):
    """Offline (huggingface_hub's HF_HUB_OFFLINE) and not cached: the error comes before any
    connection is tried, so it is as fast on a machine with no route as on one with a firewall."""

    def no_network(*args, **kwargs):
        raise AssertionError(f"a connection was tried: {args}")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(CLIPLoadError) as info:
        build_zegclip("ViT-B-16", "openai", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "'openai'" in message and "offline (HF_HUB_OFFLINE)" in message
    assert "pretrained='/path/to/weights.pt'" in message


def test_a_hub_miss_behind_the_tag_reads_as_no_network(monkeypatch, tmp_path):
    """Online but unreachable: huggingface_hub's own LocalEntryNotFoundError becomes the guidance."""

    def unreachable(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("connection error and no cached file")

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(open_clip, "create_model", unreachable)
    with pytest.raises(CLIPLoadError, match="'openai': no network and no cached copy"):
        build_zegclip("ViT-B-16", "openai", cache_dir=str(tmp_path))


def test_unknown_tag_lists_known_tags():
    with pytest.raises(CLIPLoadError, match="known tags: .*openai"):
        load_clip("ViT-B-16", "no-such-tag")


def test_quick_gelu_warning_for_weights_file(tiny_clip_file):
    with pytest.warns(UserWarning, match="QuickGELU"):
        build_zegclip(TINY_CLIP, str(tiny_clip_file), num_prompts=2, image_size=64)


def test_resize_pos_embed_grid_and_class_row():
    pos = torch.randn(1 + 4 * 4, 8)
    out = resize_pos_embed(pos, (3, 5))
    assert out.shape == (1 + 15, 8)
    assert torch.equal(out[0], pos[0])
    assert torch.equal(resize_pos_embed(pos, (4, 4)), pos)
    # a constant field stays constant under bilinear resizing
    const = torch.ones(1 + 16, 8)
    assert torch.allclose(resize_pos_embed(const, (7, 2)), torch.ones(1 + 14, 8))
    # matches a direct bilinear interpolation of the 4x4 grid
    grid = pos[1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(3, 5), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1:], ref.permute(0, 2, 3, 1).reshape(15, 8))


def test_pos_embed_resized_once_to_training_grid(tiny_model):
    visual = tiny_model.image_encoder.visual
    assert visual.positional_embedding.shape == (1 + 4 * 4, 64)  # 64 px / patch 16
    assert not visual.positional_embedding.requires_grad


def _capture_block_inputs(encoder, images, monkeypatch):
    """Record every block's input and output tokens during one encoder forward."""
    inputs, outputs = [], []
    original = clip_encoder.run_block

    def spy(block, x, *args):
        inputs.append(x.detach().clone())
        out = original(block, x, *args)
        outputs.append(out.detach().clone())
        return out

    monkeypatch.setattr(clip_encoder, "run_block", spy)
    encoder(images)
    monkeypatch.undo()
    assert len(inputs) == len(encoder.visual.transformer.resblocks)
    return inputs, outputs


def test_run_block_equals_open_clip_block(tiny_model):
    block = tiny_model.image_encoder.visual.transformer.resblocks[0]
    folded = clip_encoder.FoldedQuickGELU()
    assert folded.applies(block.mlp)  # the tiny CLIP uses QuickGELU, like OpenAI's
    x = torch.randn(2, 9, 64)
    hidden = torch.randn(2, 9, 64)
    assert torch.allclose(folded(block.mlp, hidden), block.mlp(hidden), atol=1e-5)  # the folding's maths
    assert torch.allclose(clip_encoder.run_block(block, x, folded), block(x), atol=1e-5)
    assert torch.allclose(clip_encoder.run_block(block, x), block(x), atol=1e-5)
    # new weights (as load_state_dict writes them) refresh the folded copies
    with torch.no_grad():
        block.mlp.c_fc.weight.mul_(2.0)
    assert torch.allclose(folded(block.mlp, hidden), block.mlp(hidden), atol=1e-5)
    assert torch.allclose(clip_encoder.run_block(block, x, folded), block(x), atol=1e-5)
    # without autograd the residual adds run in place, on the block's own buffers only
    before = x.clone()
    with torch.no_grad():
        assert torch.allclose(clip_encoder.run_block(block, x, folded), block(x), atol=1e-5)
    assert torch.equal(x, before)


def test_folded_mlp_only_in_reduced_precision_and_only_in_its_dtype(tiny_model):
    """fp32 runs the MLP as it is (no second fp32 copy of its weights); bf16 keeps bf16 copies only."""
    block = tiny_model.image_encoder.visual.transformer.resblocks[0]
    folded = clip_encoder.FoldedQuickGELU()
    x = torch.randn(2, 9, 64)
    clip_encoder.run_block(block, x, folded)
    assert folded._cache == {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clip_encoder.run_block(block, x, folded)
        ref = block(x)
    (copies,) = [cached[1] for cached in folded._cache.values()]
    assert [t.dtype for t in copies] == [torch.bfloat16] * 3
    assert torch.allclose(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_frozen_casts_round_as_autocast_once(tiny_model):
    """Under autocast the frozen weights are cast once, with autocast's own rounding."""
    block = tiny_model.image_encoder.visual.transformer.resblocks[0]
    folded, casts = clip_encoder.FoldedQuickGELU(), clip_encoder.FrozenCasts()
    x = torch.randn(2, 9, 64)
    weight = block.attn.in_proj_weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = clip_encoder.run_block(block, x, folded)  # autocast casts at every call
        out = clip_encoder.run_block(block, x, folded, "flash", casts)
        bf16 = casts(weight, x)
        assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, weight.to(torch.bfloat16))
        assert casts(weight, x) is bf16  # cached, not cast again
        assert torch.equal(out, ref)
        with torch.no_grad():  # new weights (load_state_dict writes in place) are cast again
            weight.mul_(2.0)
        assert casts(weight, x) is not bf16
        assert torch.equal(
            clip_encoder.run_block(block, x, folded, "flash", casts), clip_encoder.run_block(block, x, folded)
        )
    # outside autocast, and for weights that train, nothing is cast
    assert casts(weight, x) is weight
    trainable = torch.nn.Parameter(torch.randn(3, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert casts(trainable, x) is trainable


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("rows", [9, 1035, 2048])
def test_linear_narrow_bf16_outputs_transposed(rows, amx, monkeypatch):
    monkeypatch.setattr(clip_encoder, "_narrow_gemms_on_one_thread", lambda: amx)
    x, weight, bias = torch.randn(1, rows, 96), torch.randn(64, 96), torch.randn(64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = clip_encoder.linear(x, weight, bias), F.linear(x, weight, bias)
    assert out.shape == ref.shape and out.dtype == ref.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref.float(), rtol=1e-2, atol=1e-2)
    # on AMX CPUs short inputs are computed as (W x^T)^T: a transposed view; else as F.linear
    assert out.stride()[-1] == (rows if amx and rows < 2048 else 1)
    assert clip_encoder.linear(x, weight, bias).stride()[-1] == 1  # fp32: F.linear


def test_token_order_embedding_quirk_and_prompt_replacement(tiny_model, monkeypatch):
    encoder = tiny_model.image_encoder
    visual, prompts = encoder.visual, encoder.prompts
    N = prompts.num_tokens
    images = torch.randn(2, 3, 48, 80)  # 3 x 5 patches, not the 4 x 4 training grid
    inputs, outputs = _capture_block_inputs(encoder, images, monkeypatch)
    h, w = 3, 5
    # block 0: [cls, prompts, patches]; cls carries the class embedding twice
    patches = visual.conv1(images).flatten(2).transpose(1, 2)
    pos = resize_pos_embed(visual.positional_embedding, (h, w))
    cls = 2 * visual.class_embedding + pos[0]
    expected_pre = visual.ln_pre(torch.cat([cls.expand(2, 1, -1), patches + pos[1:]], dim=1))
    first = inputs[0]
    assert first.shape == (2, 1 + N + h * w, 64)
    assert torch.allclose(first[:, :1], expected_pre[:, :1], atol=1e-5)
    assert torch.allclose(first[:, 1 + N :], expected_pre[:, 1:], atol=1e-5)
    # prompts are inserted after ln_pre (never normalised by it), through prompt_proj
    assert torch.allclose(first[:, 1 : 1 + N], prompts.prompt_proj(prompts.prompt_embeddings).expand(2, -1, -1))
    # block i >= 1: previous prompt outputs replaced by fresh set i; cls and patches carried over
    for i in range(1, len(inputs)):
        fresh = prompts.prompt_proj(prompts.deep_prompt_embeddings[i - 1])
        assert torch.allclose(inputs[i][:, 1 : 1 + N], fresh.expand(2, -1, -1))
        assert torch.equal(inputs[i][:, :1], outputs[i - 1][:, :1])
        assert torch.equal(inputs[i][:, 1 + N :], outputs[i - 1][:, 1 + N :])


def test_outputs_prompt_norm_then_ln_post_and_projection(tiny_model, monkeypatch):
    encoder = tiny_model.image_encoder
    images = torch.randn(2, 3, 64, 48)
    _, outputs = _capture_block_inputs(encoder, images, monkeypatch)
    global_embed, patch_embeds = encoder(images)
    last = outputs[-1]
    N = encoder.prompts.num_tokens
    x = encoder.visual.ln_post(encoder.prompt_norm(last)) @ encoder.visual.proj
    assert torch.allclose(global_embed, F.normalize(x[:, 0], dim=-1), atol=1e-6)
    ref = F.normalize(x[:, 1 + N :], dim=-1).transpose(1, 2).reshape(2, -1, 4, 3)
    assert patch_embeds.shape == (2, 64, 4, 3)
    assert torch.allclose(patch_embeds, ref, atol=1e-6)
    assert torch.allclose(patch_embeds.norm(dim=1), torch.ones(2, 4, 3), atol=1e-5)
    assert encoder.prompt_norm.eps == 1e-6


def test_clip_frozen_and_deterministic_in_training(make_tiny_model):
    model = make_tiny_model(prompt_dropout=0.0).train()
    assert not model.image_encoder.visual.training and not model.text_encoder.training
    images = torch.randn(1, 3, 64, 64)
    a, b = model.image_encoder(images), model.image_encoder(images)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    trainable = {n for n, p in model.image_encoder.named_parameters() if p.requires_grad}
    assert trainable == {
        "prompts.prompt_embeddings",
        "prompts.deep_prompt_embeddings",
        "prompts.prompt_proj.weight",
        "prompts.prompt_proj.bias",
        "prompt_norm.weight",
        "prompt_norm.bias",
    }
