"""Mixed precision as on GPUs, run on the CPU: bf16-mixed, and 16-mixed with its loss scaler.

Under ``16-mixed`` a step with inf gradients is skipped by the scaler (which halves its
scale) and training goes on; gradients that stay inf stop the run after
``module.max_skipped_steps`` skipped steps in a row, with nothing saved.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers.train_runs import SMALL, trainable
from tests.helpers.training import train_with
from zegclip.training.callbacks import NonFiniteError
from zegclip.training.train import train

QUICK = [*SMALL, "trainer.max_steps=4", "eval_every=4", "data.batch_size=4", "global_batch_size=4"]


class InfGradient(L.Callback):
    """Puts an inf into one trainable gradient in the given optimizer steps; records the loss scale."""

    def __init__(self, steps: set[int]) -> None:
        self.steps, self.scales, self.weights = steps, [], []

    def on_after_backward(self, trainer, module) -> None:
        if trainer.global_step in self.steps:
            param = next(p for p in module.parameters() if p.requires_grad and p.grad is not None)
            param.grad.view(-1)[0] = float("inf")

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self.scales.append(float(trainer.precision_plugin.scaler.get_scale()))
        self.weights.append({k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad})


@pytest.fixture
def cfg(compose_cfg, tmp_path: Path):
    return lambda *o: compose_cfg("train", [*QUICK, f"paths.data_dir={tmp_path / 'data'}", *o])


def test_bf16_mixed_trains_and_keeps_fp32_checkpoints(cfg, tmp_path: Path):
    metrics = train(cfg("trainer.precision=bf16-mixed"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    weights = trainable(tmp_path / "out" / "checkpoints" / "last.ckpt")
    assert {w.dtype for w in weights.values()} == {torch.float32}


def test_fp16_scaler_skips_a_step_with_inf_gradients_and_goes_on(cfg, monkeypatch, tmp_path: Path):
    watch = InfGradient(steps={1})
    train_with(monkeypatch, cfg("trainer.precision=16-mixed"), watch)
    assert watch.scales[1] == watch.scales[0] / 2  # step 1 skipped: the scaler halved its scale
    assert all(torch.equal(watch.weights[1][k], watch.weights[0][k]) for k in watch.weights[0])  # nothing stepped
    assert not all(torch.equal(watch.weights[2][k], watch.weights[1][k]) for k in watch.weights[1])  # then trains
    assert torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


def test_fp16_gradients_that_stay_inf_stop_the_run(cfg, monkeypatch, tmp_path: Path):
    watch = InfGradient(steps={0, 1, 2, 3})
    with pytest.raises(NonFiniteError, match="skipped 3 steps in a row"):
        train_with(monkeypatch, cfg("trainer.precision=16-mixed", "module.max_skipped_steps=3"), watch)
    assert not list((tmp_path / "out").glob("checkpoints/*.ckpt"))
