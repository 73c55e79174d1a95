"""W&B logging never waits for a network: offline runs, one-line fallback."""

from __future__ import annotations

import time

from tests.helpers.configs import TINY_DEMO
from zegclip.training.loggers import wandb_logger
from zegclip.training.train import train


def test_no_network_falls_back_to_offline_fast(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    logger = wandb_logger(project="zegclip-test", save_dir=str(tmp_path))
    assert time.perf_counter() - start < 10
    assert logger._offline
    assert "logging offline" in capsys.readouterr().out


def test_no_api_key_falls_back_to_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_logger(project="zegclip-test", save_dir=str(tmp_path))._offline
    assert "no API key" in capsys.readouterr().out


def test_training_with_wandb_logger_offline(compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(
        "train", [*TINY_DEMO, "logger=wandb", "trainer.max_steps=4", "eval_every=2", "module.scheduler.warmup_steps=1"]
    )
    metrics = train(cfg)
    assert "val/hIoU" in metrics
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))
