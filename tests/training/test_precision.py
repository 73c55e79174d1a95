"""GPU precision defaults, float32_matmul_precision from the config, and precisions refused."""

from __future__ import annotations

import subprocess

import pytest
import torch

from tests.helpers.configs import TINY_DEMO
from zegclip.training.config import ConfigError, run_cli
from zegclip.training.eval import evaluate
from zegclip.training.precision import apply_precision
from zegclip.training.train import train


@pytest.fixture
def restore_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("entry", ["train", "eval"])
@pytest.mark.parametrize(
    ("hardware", "precision", "matmul"),
    [
        ("cpu", "32-true", "highest"),
        ("gpu", "bf16-mixed", "high"),
        ("ddp", "bf16-mixed", "high"),
        ("amp", "bf16-mixed", "high"),
    ],
)
def test_hardware_defaults(compose_cfg, entry, hardware, precision, matmul):
    cfg = compose_cfg(
        entry, [f"hardware={hardware}", "checkpoint=model.pt"] if entry == "eval" else [f"hardware={hardware}"]
    )
    assert (cfg.trainer.precision, cfg.float32_matmul_precision) == (precision, matmul)
    # the README's DDP command and the paper's fp32 recipe
    if hardware == "ddp":
        faithful = compose_cfg(
            "train", ["hardware=ddp", "trainer.precision=32-true", "float32_matmul_precision=highest"]
        )
        assert (faithful.trainer.precision, faithful.float32_matmul_precision) == ("32-true", "highest")


def test_zegclip_train_applies_float32_matmul_precision(compose_cfg, restore_matmul_precision):
    torch.set_float32_matmul_precision("highest")
    train(compose_cfg("train", [*TINY_DEMO, "trainer.max_steps=1", "eval_every=1", "float32_matmul_precision=high"]))
    assert torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cuda.matmul.allow_tf32  # what "high" means on a GPU


def test_bad_float32_matmul_precision_is_one_line(compose_cfg, capsys, restore_matmul_precision):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train, compose_cfg("train", [*TINY_DEMO, "float32_matmul_precision=fast"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: float32_matmul_precision='fast' is not valid") and err.count("\n") == 1


def test_bf16_on_a_gpu_without_it_names_16_mixed(compose_cfg, monkeypatch, restore_matmul_precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(ConfigError, match=r"\(Tesla V100-SXM2-16GB\) has no bf16; use trainer.precision=16-mixed"):
        apply_precision(compose_cfg("train", ["hardware=gpu"]))
    assert apply_precision(compose_cfg("train", ["hardware=gpu", "trainer.precision=16-mixed"])) == "high"


@pytest.mark.parametrize(("precision", "instead"), [("bf16-true", "bf16-mixed"), ("64-true", "32-true")])
def test_precisions_the_model_cannot_run_are_refused_in_one_line(compose_cfg, capsys, precision, instead):
    """They used to fail on the first batch (the fp32 prompt norm met bf16 or fp64 weights)."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(evaluate, compose_cfg("eval", [*TINY_DEMO, "checkpoint=model.pt", f"trainer.precision={precision}"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: trainer.precision={precision} is not supported") and err.count("\n") == 1
    assert f"use trainer.precision={instead}" in err


def test_zegclip_train_refuses_bf16_true(tmp_path):
    """The console script, as users run it: one line on stderr, exit 2, before any data is written."""
    cmd = ["zegclip", "train", *TINY_DEMO, "trainer.precision=bf16-true", f"paths.root_dir={tmp_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: trainer.precision=bf16-true is not supported") and "Traceback" not in done.stderr
    )
    assert not (tmp_path / "data").exists()
