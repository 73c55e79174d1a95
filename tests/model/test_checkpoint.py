"""Reading the authors' released checkpoints (mmseg layout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.helpers.official import authors_layout
from zegclip import build_zegclip, load_model, load_official_checkpoint
from zegclip.model import CheckpointError
from zegclip.model.official import NOT_IN_OFFICIAL, convert_official_state_dict, official_config

KEYS_FILE = Path(__file__).parents[1] / "fixtures" / "official_voc_keys.txt"


def _official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")[:2]
        shapes[name] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return shapes


def test_released_voc_layout_maps_onto_vitb16_model():
    shapes = _official_shapes()
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    config = official_config(state)
    assert config["num_prompts"] == 10 and config["image_size"] == 512
    assert config["decoder_layers"] == 3 and config["decoder_ffn_dim"] == 2048
    assert config["clip_config"]["embed_dim"] == 512 and config["clip_config"]["text_cfg"]["layers"] == 12
    converted = convert_official_state_dict(state, 3)
    model = build_zegclip("ViT-B-16", None, 10, quick_gelu=True)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in NOT_IN_OFFICIAL}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    # dropped: self-attention, norm1, the loss buffer, and the last layer's unused parts
    kept = {k for k in shapes if _is_kept(k)}
    assert len(converted) == len(kept) == len(shapes) - 3 * 6 - 12 - 1  # 6 self-attention + norm1 keys per layer


def _is_kept(key: str) -> bool:
    if "self_attn" in key or ".norm1." in key or "loss_decode" in key:
        return False
    if key.startswith("decode_head.decoder_1.layers.2."):
        return ".multihead_attn.q." in key or ".multihead_attn.k." in key
    return True


def test_load_authors_checkpoint_matches_source_model(make_tiny_model, tmp_path):
    source = make_tiny_model(seed=5, decoder_heads=8)
    path = tmp_path / "ZegCLIP_tiny.pth"
    torch.save({"meta": {"CLASSES": ["a", "b"]}, "state_dict": authors_layout(source)}, path)
    model = load_official_checkpoint(path).eval()
    assert model.metadata["num_train_classes"] == 15
    assert model.config["clip_config"]["quick_gelu"] is True
    images = torch.randn(1, 3, 64, 64)
    embeds = source.encode_text(["x", "y", "z"])
    assert torch.allclose(model.encode_text(["x", "y", "z"]), embeds, atol=1e-6)
    ref, out = source(images, embeds), model(images, embeds)
    for a, b in zip(ref.layer_logits, out.layer_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    # converted model saves and reloads in our own format
    model.save(tmp_path / "converted.pt")
    again = load_model(tmp_path / "converted.pt").eval()
    assert torch.allclose(again(images, embeds).logits, out.logits, atol=1e-6)
    assert again.metadata["num_train_classes"] == 15
    assert torch.allclose(load_model(path).eval()(images, embeds).logits, out.logits, atol=1e-6)


def test_unknown_and_missing_keys_are_named(make_tiny_model, tmp_path):
    state = authors_layout(make_tiny_model())
    extra = dict(state, **{"decode_head.new_thing.weight": torch.zeros(1)})
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="decode_head.new_thing.weight"):
        load_official_checkpoint(tmp_path / "extra.pth")
    missing = {k: v for k, v in state.items() if k != "backbone.ln_post.bias"}
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="image_encoder.visual.ln_post.bias"):
        load_official_checkpoint(tmp_path / "missing.pth")
    torch.save({"state_dict": {"x": torch.zeros(1)}}, tmp_path / "ours.pth")
    with pytest.raises(CheckpointError, match="not an authors'"):
        load_official_checkpoint(tmp_path / "ours.pth")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty or cut short"),
        ("truncated", "truncated or corrupt"),
        (b"hello world\n", "not a PyTorch checkpoint"),
        (bytes(range(256)) * 4, "not a PyTorch checkpoint"),
        ("folder", "not a zegclip model folder (no config.json)"),
    ],
    ids=["empty", "truncated", "text", "random_bytes", "folder"],
)
def test_unreadable_checkpoints_say_why_in_words(tiny_model, tmp_path, content, reason):
    path = tmp_path / "model.pt"
    if content == "truncated":
        tiny_model.save(path)
        path.write_bytes(path.read_bytes()[:5000])
    elif content == "folder":
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert "weights_only" not in message and "\n" not in message  # not torch's advice to unpickle


def test_config_that_does_not_fit_the_weights_names_the_tensor(tiny_model, tmp_path):
    path = tmp_path / "model.pt"
    tiny_model.save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["num_prompts"] = 7  # 4 prompts stored
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"image_encoder\.prompts\.\w+ is \(1, 4, 64\) in the checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match=r"prompt_embeddings is \(1, 4, 64\) in the checkpoint but \(1, 7, 64\)"):
        load_model(tmp_path / "model.pt", num_prompts=7)


def test_overrides_apply_to_the_authors_checkpoints_too(make_tiny_model, tmp_path):
    path = tmp_path / "ZegCLIP_tiny.pth"
    torch.save({"state_dict": authors_layout(make_tiny_model())}, path)
    assert load_model(path, prompt_dropout=0.0).image_encoder.prompts.prompt_dropout.p == 0.0
    assert load_model(path).image_encoder.prompts.prompt_dropout.p == 0.1
    with pytest.raises(CheckpointError, match="decoder"):
        load_model(path, decoder_layers=2)  # does not fit the stored weights: refused, not ignored
    with pytest.raises(TypeError, match="unknown override"):
        load_model(path, prompt_droput=0.0)
