"""Training after validation or testing under ``torch.inference_mode``, on each route that reaches it.

``trainer.validate`` and ``trainer.test`` run under inference mode; the validation inside
``trainer.fit`` (sanity steps, every ``eval_every``) runs under ``torch.no_grad`` in Lightning 2.6,
and a resumed run starts with empty caches. The model's caches (bf16 weight copies, folded MLP
weights, class embeddings) must serve a training step whatever mode filled them.
"""

from __future__ import annotations

import hydra
import lightning as L
import torch

from tests.helpers.configs import TINY_DEMO
from tests.helpers.training import train_with
from zegclip.training.config import build_trainer

# bf16: the weight-copy caches fill; fully: training and validation share one vocabulary, so the
# class embeddings cached by a validation are the training step's
ROUTE = [*TINY_DEMO, "trainer.precision=bf16-mixed", "setting=fully", "logger=none"]


class GradModes(L.Callback):
    """Records (stage, inference mode on?) per batch; ``force`` runs fit's validation under inference mode."""

    def __init__(self, force: bool = False) -> None:
        self.force, self.modes = force, []

    def setup(self, trainer, module, stage) -> None:
        if self.force:  # as trainer.validate does, and as the fit loop could
            trainer.fit_loop.epoch_loop.val_loop.inference_mode = True

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.modes.append(("sanity" if trainer.sanity_checking else "val", torch.is_inference_mode_enabled()))

    def on_test_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0) -> None:
        self.modes.append(("test", torch.is_inference_mode_enabled()))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.modes.append(("train", torch.is_inference_mode_enabled()))


def test_validate_then_fit_the_same_module(compose_cfg):
    """The Trainer API: ``trainer.validate(module)`` (inference mode) before ``trainer.fit(module)``."""
    cfg = compose_cfg("train", [*ROUTE, "trainer.max_steps=2", "eval_every=2"])
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    spy = GradModes()
    trainer = build_trainer(cfg, callbacks=[spy])
    trainer.validate(module, datamodule=datamodule)
    trainer.fit(module, datamodule=datamodule)
    assert ("val", True) in spy.modes and ("train", False) in spy.modes
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_zegclip_train_routes_with_validation_in_inference_mode(compose_cfg, monkeypatch):
    """``zegclip train`` with sanity steps, validation after every step, a test, then a resume from
    the ``last.ckpt`` of the last validation; fit's validation forced into inference mode."""
    route = [*ROUTE, "trainer.num_sanity_val_steps=2", "eval_every=1"]
    first = GradModes(force=True)
    metrics = train_with(monkeypatch, compose_cfg("train", [*route, "trainer.max_steps=2", "test=true"]), first)
    assert first.modes[:3] == [("sanity", True), ("sanity", True), ("train", False)]
    assert ("val", True) in first.modes[3:] and ("test", True) in first.modes
    assert "test/hIoU" in metrics  # the run went on to its test after training

    resumed = GradModes(force=True)
    metrics = train_with(monkeypatch, compose_cfg("train", [*route, "trainer.max_steps=3", "ckpt_path=last"]), resumed)
    assert resumed.modes[0] == ("train", False) and ("val", True) in resumed.modes
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and "val/hIoU" in metrics
