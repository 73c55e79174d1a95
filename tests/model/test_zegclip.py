"""The whole model: outputs, what trains, gradients, prediction, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zegclip import ZegCLIP, ZegCLIPOutput, build_zegclip, load_model
from zegclip.model import CheckpointError, ZegCLIPCriterion


def test_forward_shapes_dtypes_non_square(tiny_model):
    embeds = tiny_model.encode_text(["cat", "dog", "sky"])
    out = tiny_model(torch.randn(2, 3, 64, 96), embeds)
    assert isinstance(out, ZegCLIPOutput)
    assert out.logits.shape == (2, 3, 4, 6) and out.logits.dtype == torch.float32
    assert len(out.layer_logits) == 3 and out.layer_logits[-1] is out.logits
    assert out.global_embedding.shape == (2, 64) and out.patch_embeddings.shape == (2, 64, 4, 6)
    assert torch.isfinite(out.logits).all()


def test_batch_items_independent_in_eval(tiny_model):
    embeds = tiny_model.encode_text(["cat", "dog"])
    images = torch.randn(3, 3, 64, 64)
    batched = tiny_model(images, embeds).logits
    single = tiny_model(images[1:2], embeds).logits
    assert torch.allclose(batched[1:2], single, atol=1e-5)


def test_every_trainable_parameter_gets_a_gradient_and_clip_none(make_tiny_model):
    model = make_tiny_model().train()
    embeds = model.encode_text(["a", "b", "c"])
    out = model(torch.randn(2, 3, 64, 64), embeds)
    labels = torch.randint(0, 3, (2, 64, 64))
    ZegCLIPCriterion()(out.logits, labels)["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"image_encoder", "relationship", "decoder"}
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    assert not any(p.requires_grad for p in model.image_encoder.visual.parameters())


def test_vitb16_trainable_count():
    """Paper: 13,821,184 learnable, of which 3,154,944 are the decoder's never-run self-attention
    and first norms and 2,627,072 the last layer's value/projection/FFN/norms."""
    model = build_zegclip("ViT-B-16", None, 10)
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert learnable == 13_821_184 - 3_154_944 - 2_627_072
    assert model.image_encoder.visual.positional_embedding.shape == (1025, 768)


def test_predict_whole_matches_sigmoid_of_upsampled_logits(tiny_model):
    images = torch.randn(1, 3, 64, 80)
    embeds = tiny_model.encode_text(["a", "b"])
    logits = tiny_model(images, embeds).logits
    expected = F.interpolate(logits, size=(64, 80), mode="bilinear", align_corners=False).sigmoid()
    scores = tiny_model.predict(images, embeds, seen_mask=[True, False], mode="whole")
    assert torch.allclose(scores[:, 0], expected[:, 0] - 0.1, atol=1e-6)
    assert torch.allclose(scores[:, 1], expected[:, 1], atol=1e-6)
    resized = tiny_model.predict(images, embeds, mode="whole", output_size=(30, 41))
    assert resized.shape == (1, 2, 30, 41)
    with pytest.raises(ValueError, match="mode"):
        tiny_model.predict(images, embeds, mode="tiles")


def test_preprocess_uses_released_mean_std(tiny_model):
    images = torch.full((1, 3, 2, 2), 255.0)
    out = tiny_model.preprocess(images)
    assert out[0, 0, 0, 0].item() == pytest.approx((255 - 123.675) / 58.395)


@pytest.mark.parametrize("trainable_only", [False, True])
def test_save_and_reload(make_tiny_model, tmp_path, trainable_only):
    model = make_tiny_model(seed=3)
    with torch.no_grad():
        model.decoder.last.q.weight.add_(1.0)  # differs from any fresh build
    path = tmp_path / "model.pt"
    model.save(path, trainable_only=trainable_only)
    payload = torch.load(path, weights_only=True)
    assert ("image_encoder.visual.conv1.weight" in payload["state_dict"]) != trainable_only
    loaded = load_model(path).eval()
    images, embeds = torch.randn(1, 3, 64, 64), model.encode_text(["a", "b"])
    assert torch.allclose(loaded(images, embeds).logits, model(images, embeds).logits, atol=1e-6)
    assert isinstance(load_model(path), ZegCLIP)


def test_wrong_checkpoint_kind_is_named(tmp_path):
    path = tmp_path / "random.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="random.pt: not a ZegCLIP checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("mode", ["slide", "whole"])
def test_predict_labels_in_class_chunks_equals_argmax_of_predict(tiny_model, mode, monkeypatch):
    """Classes scored a chunk at a time, the encoder run once: the argmax of all scores."""
    import zegclip.model.inference as inference
    import zegclip.model.loss as loss_module

    torch.manual_seed(0)
    images = torch.randn(2, 3, 80, 112)
    embeds = tiny_model.encode_text([f"class {i}" for i in range(7)])
    seen = [i % 2 == 0 for i in range(7)]
    options = {"mode": mode, "crop": 64, "stride": 48, "output_size": (50, 70)}
    scores = tiny_model.predict(images, embeds, seen, **options)

    encoder_calls, widest = [], []
    encoder, upsample = tiny_model.image_encoder.forward, inference.upsample
    monkeypatch.setattr(tiny_model.image_encoder, "forward", lambda x: encoder_calls.append(1) or encoder(x))
    monkeypatch.setattr(inference, "upsample", lambda s, size: widest.append(s.shape[1]) or upsample(s, size))
    labels = tiny_model.predict_labels(images, embeds, seen, class_chunk=3, **options)
    assert labels.shape == (2, 50, 70) and max(widest) == 3  # never more than 3 classes at full size
    windows = 1 if mode == "whole" else 4
    assert len(encoder_calls) == -(-2 * windows // 8)  # the encoder ran once per window batch, not per chunk
    top2 = scores.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 1e-6  # no rounding difference can flip these
    assert clear.float().mean() > 0.5
    assert torch.equal(labels[clear], scores.argmax(1)[clear])
    assert loss_module.upsample is upsample  # only the model's reference was wrapped


def test_predict_labels_ties_go_to_the_first_class(tiny_model):
    """The same two classes twice, in two chunks computed alike: every pixel takes the first copy."""
    images = torch.randn(1, 3, 64, 64)
    embeds = tiny_model.encode_text(["cat", "dog"])
    labels = tiny_model.predict_labels(images, torch.cat([embeds, embeds]), mode="whole", class_chunk=2)
    assert set(labels.unique().tolist()) <= {0, 1}
