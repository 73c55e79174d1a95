"""Training and evaluation on a folder dataset (experiment=folder_demo), with no code."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.helpers.configs import TINY_DEMO
from tests.helpers.training import SigtermAtBatch, train_with
from tests.helpers.wandb_records import read_run
from zegclip.data.classes import SYNTHETIC_CLASSES
from zegclip.data.datasets import DatasetError
from zegclip.data.synthetic import write_synthetic_folder
from zegclip.training.callbacks import RunInterrupted
from zegclip.training.config import ConfigError, validate_config
from zegclip.training.datamodule import SegDataModule
from zegclip.training.eval import evaluate
from zegclip.training.train import train

TINY_FOLDER_DEMO = [
    "experiment=folder_demo",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "global_batch_size=4",
    "module.scheduler.warmup_steps=1",
]
"""Overrides that shrink the folder demo to seconds (the folder itself is written small)."""


def _write_demo_folder(data_dir: Path) -> Path:
    """What `zegclip synthetic --layout folder --out data/my_folder` writes, shrunk like TINY_DEMO."""
    return write_synthetic_folder(data_dir / "my_folder", num_train=8, num_val=3, size=96)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One inductive run of 4 steps, validated at 2 and 4, logged to CSV and (offline) W&B.

    Returns (output dir, metrics, data dir).
    """
    from tests.helpers.training import compose_in

    root = tmp_path_factory.mktemp("folder_run")
    _write_demo_folder(root / "data")
    overrides = [
        *TINY_FOLDER_DEMO,
        "trainer.max_steps=4",
        "eval_every=2",
        "trainer.log_every_n_steps=1",
        "logger=[csv,wandb]",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        metrics = train(compose_in(root, overrides))
    return root / "out", metrics, root / "data"


def test_inductive_run_logs_seen_unseen_and_hiou(trained):
    out, metrics, _ = trained
    for key in ("val/pAcc", "val/mIoU", "val/mIoU_seen", "val/mIoU_unseen", "val/hIoU", "train/loss"):
        assert key in metrics and np.isfinite(metrics[key]), key
    (log,) = (out / "csv").glob("version_*/metrics.csv")
    with open(log) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/hIoU")]
    assert len(rows) == 2 and float(rows[-1]["val/mIoU_unseen"]) == pytest.approx(metrics["val/mIoU_unseen"])
    resolved = (out / "config_resolved.yaml").read_text()
    assert "unseen:\n  - magenta stripes\n  - cyan checkerboard" in resolved


def test_wandb_shows_the_folder_classes(trained):
    out, metrics, _ = trained
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    table = sorted(run_dir.rglob("IoU_per_class_*.table.json"), key=lambda p: p.stat().st_mtime)[-1]
    content = json.loads(table.read_text())
    assert [row[0] for row in content["data"]] == list(SYNTHETIC_CLASSES)
    assert [row[2] for row in content["data"]] == ["seen"] * 4 + ["unseen"] * 2
    assert run["config"]["data"]["dataset"] == "folder"
    assert run["summary"]["val/hIoU"] == pytest.approx(metrics["val/hIoU"])


def test_eval_of_the_checkpoint_gives_the_same_scores(trained, compose_cfg):
    out, metrics, data = trained
    checkpoint = out / "checkpoints" / "last.ckpt"
    cfg = compose_cfg("eval", [*TINY_FOLDER_DEMO, f"checkpoint={checkpoint}", f"paths.data_dir={data}"])
    evaluated = evaluate(cfg)
    for key in ("val/pAcc", "val/mIoU", "val/mIoU_unseen", "val/hIoU"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-4), key


def test_same_scores_as_the_demo_in_the_voc_layout(trained, compose_cfg):
    """The same samples in the same order, the same classes: the folder reader changes nothing."""
    _, metrics, _ = trained
    demo = [*TINY_DEMO, "trainer.max_steps=4", "eval_every=2", "module.scheduler.warmup_steps=1", "logger=none"]
    voc = train(compose_cfg("train", demo))
    for key in ("train/loss", "val/pAcc", "val/mIoU", "val/mIoU_unseen", "val/hIoU"):
        assert voc[key] == pytest.approx(metrics[key], abs=1e-5), key


@pytest.mark.parametrize("setting", ["transductive", "fully"])
def test_transductive_and_fully_supervised_train(trained, compose_cfg, setting):
    out, _, data = trained
    overrides = [*TINY_FOLDER_DEMO, f"setting={setting}", "trainer.max_steps=2", "eval_every=2"]
    overrides += [f"paths.data_dir={data}", f"module.init_from={out / 'checkpoints' / 'last.ckpt'}", "logger=none"]
    metrics = train(compose_cfg("train", overrides))
    assert np.isfinite(metrics["train/loss"])
    assert np.isfinite(metrics["val/mIoU_unseen"]) and np.isfinite(metrics["val/hIoU"])


def test_synonyms_are_averaged_like_predict(compose_cfg, tmp_path):
    root = _write_demo_folder(tmp_path / "data")
    lines = (root / "classes.txt").read_text().replace("blue dots\n", "blue dots, blue spots   # two names\n")
    (root / "classes.txt").write_text(lines)
    cfg = compose_cfg("train", [*TINY_FOLDER_DEMO, "data.unseen=[blue spots]"])
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    assert module.class_names == SYNTHETIC_CLASSES and module.train_ids == (0, 1, 3, 4, 5)
    names = module.model.encode_text(["blue dots", "blue spots"], "single")
    everything = module.class_embeddings(train=False)
    torch.testing.assert_close(everything[2], F.normalize(names.mean(0), dim=-1))
    torch.testing.assert_close(everything[0], module.model.encode_text(["red stripes"], "single")[0])
    assert module.class_embeddings(train=True).shape[0] == 5


def test_more_than_254_classes_are_refused_for_training(tmp_path):
    (tmp_path / "classes.txt").write_text("".join(f"class {k}\n" for k in range(300)))
    for sample_id in ("a", "b"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "labels").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{sample_id}.png")
        Image.fromarray(np.full((8, 8), 299, dtype=np.uint16)).save(tmp_path / "labels" / f"{sample_id}.png")
    (tmp_path / "train.txt").write_text("a\n")
    (tmp_path / "val.txt").write_text("b\n")
    datamodule = SegDataModule("folder", str(tmp_path), batch_size=1, num_workers=0, ignore_index=65535)
    datamodule.check_root()
    with pytest.raises(DatasetError, match="300 classes can be evaluated, not trained"):
        datamodule.setup("fit")
    datamodule.setup("validate")
    assert datamodule.val_set.load(0)["label"].dtype == np.uint16


def test_folder_data_needs_its_root(compose_cfg):
    cfg = compose_cfg("train", ["data=folder"])
    with pytest.raises(ConfigError, match=r"data\.root"):
        validate_config(cfg)


def test_resume_on_the_folder_continues_to_the_same_weights(trained, compose_cfg, tmp_path, monkeypatch):
    """Stopped by SIGTERM after step 2, then ckpt_path=last: the same weights as 4 steps in one go."""
    _, _, data = trained
    overrides = [*TINY_FOLDER_DEMO, "trainer.max_steps=4", "eval_every=2", f"paths.data_dir={data}", "logger=none"]
    train(compose_cfg("train", [*overrides, f"paths.output_dir={tmp_path / 'straight'}"]))
    resumed_run = [*overrides, f"paths.output_dir={tmp_path / 'resumed'}"]
    with pytest.raises(RunInterrupted):
        train_with(monkeypatch, compose_cfg("train", resumed_run), SigtermAtBatch(0))
    train(compose_cfg("train", [*resumed_run, "ckpt_path=last"]))
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == straight["global_step"] == 4
    differ = [k for k, v in straight["state_dict"].items() if not torch.equal(resumed["state_dict"][k], v)]
    assert not differ, differ[:5]


def _zegclip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["zegclip", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_an_error_in_a_dataloader_worker_is_the_same_one_line(tmp_path):
    """data.num_workers=2: the worker's DatasetError is printed as with 0 workers, one line, exit 2."""
    from zegclip.data.folder import FolderSeg
    from zegclip.model.build import zegclip_tiny

    root = _write_demo_folder(tmp_path / "data")
    bad = root / "labels" / (FolderSeg(root, "val").ids[0] + ".png")
    Image.fromarray(np.ones((5, 7), np.uint8)).save(bad)  # the wrong size
    with pytest.raises(DatasetError) as in_process:
        FolderSeg(root, "val").load(0)
    zegclip_tiny().save(tmp_path / "tiny.pt")
    proc = _zegclip(
        "eval",
        *TINY_FOLDER_DEMO,
        f"checkpoint={tmp_path / 'tiny.pt'}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'out'}",
        "data.num_workers=2",
        "logger=none",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"error: {in_process.value}"


def test_a_train_split_smaller_than_the_batch_is_one_line(tmp_path):
    _write_demo_folder(tmp_path / "data")
    overrides = [*TINY_FOLDER_DEMO, "data.batch_size=16", "global_batch_size=16", "logger=none"]
    proc = _zegclip(
        "train", *overrides, f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'out'}", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"error: {tmp_path / 'data' / 'my_folder' / 'train.txt'}: 8 training image(s), fewer than "
        "data.batch_size=16; lower data.batch_size or add images"
    )


def test_a_single_unseen_name_without_brackets(compose_cfg, tmp_path):
    """data.unseen=magenta stripes is the one class, not a list of letters."""
    _write_demo_folder(tmp_path / "data")
    cfg = compose_cfg("train", [*TINY_FOLDER_DEMO, "data.unseen=magenta stripes"])
    assert cfg.data.unseen == "magenta stripes"
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert datamodule.unseen_ids == (SYNTHETIC_CLASSES.index("magenta stripes"),)
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    assert module.train_ids == tuple(
        i for i in range(len(SYNTHETIC_CLASSES)) if SYNTHETIC_CLASSES[i] != "magenta stripes"
    )


def test_model_folders_from_training_are_portable_and_complete(trained, tmp_path):
    """The run's own model folder and one saved from its last.ckpt: no local path; dataset, classes, step, scores."""
    from zegclip.model import load_model

    out, metrics, _ = trained
    exported = out / "model"
    config_text = (exported / "config.json").read_text()
    assert str(out) not in config_text and str(out.parent) not in config_text  # no /home/me/outputs/...
    info = json.loads(config_text)["info"]
    assert info["checkpoint"].startswith("checkpoints/best_step") and info["source"] == info["checkpoint"]
    card = (exported / "README.md").read_text()
    assert "## Evaluation" in card and "| folder | val |" in card and "ORG/NAME" not in card
    folder = load_model(out / "checkpoints" / "last.ckpt").save_pretrained(tmp_path / "shared")
    info = json.loads((folder / "config.json").read_text())["info"]
    assert info["dataset"] == "folder" and info["setting"] == "inductive" and info["step"] == 4
    assert info["class_names"] == list(SYNTHETIC_CLASSES)
    assert info["unseen"] == ["magenta stripes", "cyan checkerboard"]
    assert info["metrics"]["val/hIoU"] == pytest.approx(metrics["val/hIoU"], abs=1e-4)
    card = (folder / "README.md").read_text()
    assert "Unseen classes (2): magenta stripes, cyan checkerboard" in card and "| folder | val | 4 |" in card
