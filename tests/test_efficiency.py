"""zegclip.efficiency: parameter counts, FLOPs against a hand count, throughput."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from zegclip import efficiency
from zegclip.cli.efficiency import main
from zegclip.efficiency import count_flops, count_parameters, efficiency_report
from zegclip.model import ZegCLIP
from zegclip.model.build import zegclip_tiny


@pytest.fixture(scope="module")
def model() -> ZegCLIP:
    torch.manual_seed(0)
    return zegclip_tiny().eval()


@pytest.fixture(scope="module")
def report(model: ZegCLIP) -> dict:
    return efficiency_report(model, height=64, width=64, num_classes=20, repeats=1)


def test_parameter_counts(model: ZegCLIP, report: dict) -> None:
    assert report["learnable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report["total_params"] == sum(p.numel() for p in model.parameters())
    assert 0 < report["learnable_params"] < report["total_params"]
    assert count_parameters(nn.Linear(3, 4)) == (16, 16)


def test_flop_counter_on_one_linear_layer() -> None:
    layer = nn.Linear(64, 32)
    # 5 rows x 64 inputs x 32 outputs multiply-adds, 2 FLOPs each (the bias add is not counted)
    assert count_flops(lambda: layer(torch.randn(5, 64))) == 2 * 5 * 64 * 32


def test_attention_is_counted_on_cpu() -> None:
    q = torch.randn(2, 3, 10, 8)  # B x heads x L x E
    # Q K^T and A V: each 2 * B * heads * L * L * E (torch's counter alone misses the CPU kernel)
    assert count_flops(lambda: nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * (2 * 2 * 3 * 10 * 10 * 8)


def _hand_count(model: ZegCLIP, height: int, width: int, num_classes: int) -> int:
    """FLOPs of one forward (B = 1) counted layer by layer: 2 * (rows x in x out) per linear."""
    visual = model.image_encoder.visual
    W, p = visual.conv1.out_channels, model.patch_size
    M = (height // p) * (width // p)  # patches
    N = model.image_encoder.prompts.num_tokens
    T = 1 + N + M  # tokens: cls, prompts, patches
    blocks = len(visual.transformer.resblocks)
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    D, C = visual.proj.shape[1], num_classes
    ffn = model.decoder.layers[0].ffn[0].out_features
    flops = 2 * M * (3 * p * p) * W  # patch embedding conv
    flops += blocks * 2 * N * W * W  # prompt projection
    flops += blocks * (2 * T * W * 3 * W + 2 * T * W * W + 2 * T * W * mlp * 2)  # qkv, out proj, MLP
    flops += blocks * 2 * (2 * T * T * W)  # attention QK^T and AV
    flops += 2 * (1 + M) * W * D  # CLIP projection
    flops += 2 * C * 2 * D * D  # relationship descriptor
    layer = 2 * C * D * D + 2 * (2 * M * D * D) + 2 * (2 * C * M * D) + 2 * C * D * D + 2 * (2 * C * D * ffn)
    flops += len(model.decoder.layers) * layer  # q, k+v, scores+AV, out proj, FFN
    flops += 2 * C * D * D + 2 * M * D * D + 2 * C * M * D  # last layer: q, k, scores
    return flops


def test_flops_match_the_hand_count(model: ZegCLIP, report: dict) -> None:
    expected = _hand_count(model, 64, 64, 20)
    assert report["flops"] > 0
    assert report["flops"] == pytest.approx(expected, rel=0.01)
    assert report["macs"] == report["flops"] // 2
    assert report["gmacs"] == pytest.approx(report["flops"] / 2e9)


def test_throughput_is_images_over_the_timed_runs(monkeypatch) -> None:
    """One untimed warm-up, then ``repeats`` timed calls: images x repeats / their seconds."""
    calls = []
    clock = iter([100.0, 104.0])  # the timed runs take 4 s
    monkeypatch.setattr(efficiency.time, "perf_counter", lambda: next(clock))
    rate = efficiency._images_per_second(lambda: calls.append(1), 2, torch.device("cpu"), repeats=3)
    assert len(calls) == 1 + 3
    assert rate == 2 * 3 / 4.0


def test_report_settings(report: dict) -> None:
    assert report["slide_image_size"] == [512, 683]
    assert (report["precision"], report["batch_size"], report["device"]) == ("fp32", 1, "cpu")


def test_cli_prints_json(capsys) -> None:
    code = main(["--tiny", "--height", "32", "--width", "48", "--num-classes", "3", "--repeats", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["height"] == 32 and report["num_classes"] == 3 and report["flops"] > 0


def test_cli_bad_checkpoint(tmp_path, capsys) -> None:
    path = tmp_path / "random.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert main(["--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
