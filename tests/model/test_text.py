"""Class embeddings from the frozen text tower: templates, ensembling, caching, .npy files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zegclip.model.text import (
    ENSEMBLE_TEMPLATES,
    load_text_embeddings,
    resolve_templates,
    save_text_embeddings,
)


def _direct(model, prompts):
    tokens = model.text_encoder.tokenizer(prompts)
    return F.normalize(model.text_encoder.clip.encode_text(tokens), dim=-1)


def test_single_template_is_normalised_text_feature(tiny_model):
    embeds = tiny_model.encode_text(["cat", "pottedplant"], ["a photo of a {}"])
    expected = _direct(tiny_model, ["a photo of a cat", "a photo of a pottedplant"])
    assert embeds.shape == (2, 64) and embeds.dtype == torch.float32
    assert torch.allclose(embeds, expected, atol=1e-6)


def test_ensemble_is_normalised_mean_of_normalised(tiny_model):
    assert len(ENSEMBLE_TEMPLATES) == 15
    embeds = tiny_model.encode_text(["grass"], "ensemble")
    each = _direct(tiny_model, [t.format("grass") for t in ENSEMBLE_TEMPLATES])
    assert torch.allclose(embeds[0], F.normalize(each.mean(0), dim=-1), atol=1e-6)
    assert not torch.allclose(embeds[0], each[0], atol=1e-3)


def test_cache_hits_and_is_cleared_by_new_weights(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.text_encoder.clip.encode_text
    monkeypatch.setattr(
        tiny_model.text_encoder.clip, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    first = tiny_model.encode_text(["a", "b"])
    assert tiny_model.encode_text(["a", "b"]) is first
    assert len(calls) == 1
    tiny_model.encode_text(["a", "b"], "ensemble")  # other templates: another entry
    assert len(calls) == 2
    tiny_model.load_state_dict(tiny_model.state_dict())
    tiny_model.encode_text(["a", "b"])
    assert len(calls) == 3


def test_bad_templates_and_empty_vocabulary(tiny_model):
    with pytest.raises(ValueError, match="one '\\{\\}'"):
        resolve_templates(["no placeholder"])
    assert resolve_templates("a {} photo") == ("a {} photo",)
    with pytest.raises(ValueError, match="empty"):
        tiny_model.encode_text([])


def test_npy_round_trip_float16_not_renormalised(tmp_path):
    embeds = F.normalize(torch.randn(5, 16), dim=-1)
    save_text_embeddings(tmp_path / "voc.npy", embeds)
    stored = np.load(tmp_path / "voc.npy")
    assert stored.dtype == np.float16 and stored.shape == (5, 16)
    loaded = load_text_embeddings(tmp_path / "voc.npy")
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded, torch.from_numpy(stored).float())  # as stored, no re-normalising
    assert (loaded.norm(dim=-1) - 1).abs().max() < 5e-3
