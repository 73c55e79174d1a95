"""The model presets: one definition (the Hydra model configs), built the same from Python and Hydra."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from zegclip.model import MODEL_PRESETS
from zegclip.model.presets import PRESET_CONFIGS, preset_kwargs

# Learnable parameters, counted by hand from the architecture (docs/method.md §2 and §5):
# prompts 12 layers x N x 768 + prompt_proj 768^2 + 768 + prompt_norm 2 x 768; the decoder
# (D = 512, FFN 2048) 2 full layers + the last layer's scores + the relationship descriptor:
# 7,354,880, the paper's 13,821,184 less its never-run 3,154,944 and 2,627,072 (docs/checkpoints.md).
VITB16_DECODER = 13_821_184 - 3_154_944 - 2_627_072 - 684_288
LEARNABLE = {
    "vitb16_voc": 12 * 10 * 768 + 768 * 768 + 768 + 2 * 768 + VITB16_DECODER,  # 8,039,168
    "vitb16_coco": 12 * 100 * 768 + 768 * 768 + 768 + 2 * 768 + VITB16_DECODER,  # 8,868,608
    # width 64, 2 layers, N = 4; decoder D = 64, FFN 256: 2 x (4 (64^2 + 64) + 4 x 64 + 2 x 64 x 256
    # + 256 + 64) + 2 (64^2 + 64) + (128 x 64 + 64)
    "tiny": 2 * 4 * 64
    + 64 * 64
    + 64
    + 2 * 64
    + 2 * (4 * (64 * 64 + 64) + 4 * 64 + 2 * 64 * 256 + 256 + 64)
    + 2 * (64 * 64 + 64)
    + 128 * 64
    + 64,  # 121,344
}
TOTAL_MILLIONS = {"vitb16_voc": 158.3, "vitb16_coco": 159.1}  # docs/performance.md: CLIP towers included


@pytest.fixture(scope="module", params=sorted(MODEL_PRESETS))
def built(request):
    """Each preset built once, random weights (a meta-device build cannot: open_clip moves tensors)."""
    torch.manual_seed(0)
    return request.param, MODEL_PRESETS[request.param](pretrained=None)


def test_every_preset_builds_with_its_parameter_count(built):
    name, model = built
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert learnable == LEARNABLE[name]
    if name in TOTAL_MILLIONS:
        total = sum(p.numel() for p in model.parameters())
        assert round(total / 1e6, 1) == TOTAL_MILLIONS[name]
        assert model.image_encoder.visual.positional_embedding.shape == (1025, 768)  # 512 / 16 = 32, squared + 1


def test_every_preset_is_a_hydra_model_config_composed_the_same(compose_cfg):
    assert set(PRESET_CONFIGS) == set(MODEL_PRESETS)
    for name, config in PRESET_CONFIGS.items():
        cfg = compose_cfg("train", [f"model={config}"])
        assert OmegaConf.to_container(cfg.model) == preset_kwargs(name), name


def test_the_coco_preset_differs_from_the_voc_one_in_its_prompts_only():
    voc, coco = preset_kwargs("vitb16_voc"), preset_kwargs("vitb16_coco")
    assert (voc["num_prompts"], coco["num_prompts"]) == (10, 100)
    assert {k: v for k, v in voc.items() if k != "num_prompts"} == {k: v for k, v in coco.items() if k != "num_prompts"}
    with pytest.raises(KeyError, match="known: \\['tiny', 'vitb16_coco', 'vitb16_voc'\\]"):
        preset_kwargs("vitl14")
