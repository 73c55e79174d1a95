"""zegclip.export: ONNX export and parity with PyTorch (onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from zegclip.cli.export import main
from zegclip.export import export_onnx
from zegclip.model import ZegCLIP
from zegclip.model.build import zegclip_tiny

HEIGHT, WIDTH = 64, 96  # not the model's 128 x 128 training size: the positional embedding is resized


@pytest.fixture(scope="module")
def model() -> ZegCLIP:
    torch.manual_seed(0)
    return zegclip_tiny().eval()


@pytest.fixture(scope="module")
def onnx_file(model: ZegCLIP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", height=HEIGHT, width=WIDTH)


def test_graph_is_valid_with_dynamic_batch_and_classes(onnx_file: Path) -> None:
    graph = onnx.load(str(onnx_file))
    onnx.checker.check_model(graph)
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input}
    assert dims["images"] == ["batch", 3, HEIGHT, WIDTH]
    assert dims["class_embeddings"][0] == "classes"
    assert not list(onnx_file.parent.glob(".*.tmp"))


@pytest.mark.parametrize(("batch", "classes"), [(1, 2), (3, 7)])
def test_onnxruntime_matches_pytorch(model: ZegCLIP, onnx_file: Path, batch: int, classes: int) -> None:
    torch.manual_seed(batch)
    images = model.preprocess(torch.rand(batch, 3, HEIGHT, WIDTH) * 255)
    class_embeds = F.normalize(torch.randn(classes, 64), dim=-1)
    with torch.no_grad():
        expected = model(images, class_embeds).logits.numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy(), "class_embeddings": class_embeds.numpy()})
    assert logits.shape == (batch, classes, HEIGHT // 16, WIDTH // 16)
    assert np.abs(logits - expected).max() < 1e-4


def test_export_keeps_training_mode(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zegclip_tiny().train()
    export_onnx(model, tmp_path / "m.onnx", height=32, width=32)
    assert model.training and model.decoder.training


def test_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "tiny.onnx"
    assert main(["--tiny", "--format", "onnx", "--output", str(out), "--height", "32", "--width", "48"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["--tiny", "--output", str(tmp_path / "bad.onnx"), "--height", "30"]) == 2
    assert "multiples of the patch size" in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()
