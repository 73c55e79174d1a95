"""Composing the real configs and running the real training entry point (with extra callbacks: pre-emption, ...)."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from zegclip.training.config import CONFIG_DIR
from zegclip.training.train import train


def compose_in(root: Path, overrides: Sequence[str] = (), name: str = "train") -> DictConfig:
    """Compose ``conf/<name>.yaml`` as the entry points do, outputs in ``root/out`` and data in ``root/data``."""
    base = [f"paths.output_dir={root / 'out'}", f"paths.data_dir={root / 'data'}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=[*base, *overrides])


class SigtermAtBatch(L.Callback):
    """Sends SIGTERM to this process after micro-batch ``batch`` (counted over the run)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


def train_with(monkeypatch, cfg, *callbacks):
    """``train(cfg)`` with extra callbacks appended to the trainer the config builds."""
    import zegclip.training.train as train_module

    original = train_module.build_trainer

    def build(cfg, **kwargs):
        trainer = original(cfg, **kwargs)
        trainer.callbacks.extend(callbacks)
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", build)
    try:
        return train(cfg)
    finally:
        monkeypatch.setattr(train_module, "build_trainer", original)
