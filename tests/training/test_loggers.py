"""W&B logging never waits for a network: offline runs, one-line fallback."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.helpers.configs import TINY_DEMO
from tests.helpers.wandb_records import read_run
from zegclip.data.classes import SYNTHETIC_CLASSES
from zegclip.training.loggers import wandb_logger
from zegclip.training.train import train


def test_no_network_falls_back_to_offline_fast(monkeypatch, tmp_path, capsys):
    """One bounded connection attempt to the W&B host, then offline (no waiting on wandb's retries)."""
    attempts = []
    connect = socket.create_connection

    def refused(address, timeout=None, *args, **kwargs):
        attempts.append((address, timeout))
        return connect(address, timeout, *args, **kwargs)

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(socket, "create_connection", refused)
    logger = wandb_logger(project="zegclip-test", save_dir=str(tmp_path))
    assert len(attempts) == 1 and attempts[0][1] is not None  # one try, never an unbounded wait
    assert logger._offline
    assert "logging offline" in capsys.readouterr().out


def test_no_api_key_falls_back_to_offline(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_logger(project="zegclip-test", save_dir=str(tmp_path))._offline
    assert "no API key" in capsys.readouterr().out


def test_wandb_run_shows_segmentation_with_class_names(compose_cfg, tmp_path, monkeypatch):
    """What an offline run wrote, read back: mask overlays with class names, the seen/unseen
    IoU table, the best score in the summary, the resolved config in the config panel."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(
        "train", [*TINY_DEMO, "logger=wandb", "trainer.max_steps=4", "eval_every=2", "module.scheduler.warmup_steps=1"]
    )
    metrics = train(cfg)
    (run_dir,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    for _ in range(50):  # wandb's service may still be appending the last rows after finish()
        run = read_run(run_dir)
        if len([row for row in run["history"] if "val/examples/all_masks" in row]) == 2 and run["summary"]:
            break
        time.sleep(0.2)
    names = {str(i): name for i, name in enumerate(SYNTHETIC_CLASSES)} | {"255": "ignored"}
    labels = run["config"]["_wandb"]["mask/class_labels"]
    for mask in ("predictions", "ground_truth"):
        assert labels[f"val/examples_wandb_delimeter_{mask}"]["value"] == names
    examples = [row for row in run["history"] if "val/examples/all_masks" in row]
    assert len(examples) == 2 and len(examples[-1]["val/examples/all_masks"]) == 3  # 3 validation images
    assert {"predictions", "ground_truth"} == set(examples[-1]["val/examples/all_masks"][0])
    table = sorted(run_dir.rglob("IoU_per_class_*.table.json"), key=lambda p: p.stat().st_mtime)[-1]
    content = json.loads(table.read_text())
    assert content["columns"] == ["class", "IoU", "split", "pixel share (%)"]
    assert [row[2] for row in content["data"]] == ["seen"] * 4 + ["unseen"] * 2
    assert sum(row[3] for row in content["data"]) == pytest.approx(100, abs=1e-3)
    ious = [row[1] for row in content["data"] if row[1] == row[1]]  # NaN: absent from prediction and truth
    assert sum(ious) / len(ious) == pytest.approx(metrics["val/mIoU"], abs=1e-3)  # the last validation's table
    best = max(row["val/hIoU"] for row in run["history"] if "val/hIoU" in row)
    assert run["summary"]["best/val/hIoU"] == pytest.approx(best)
    assert run["summary"]["best/step"] in (2, 4)
    assert run["config"]["setting"] == "inductive" and run["config"]["data"]["dataset"] == "synthetic"
    assert metrics["val/hIoU"] == pytest.approx(run["summary"]["val/hIoU"])
