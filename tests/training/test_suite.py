"""``zegclip suite``: one checkpoint, several benchmarks, one table (markdown and CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers.fake_data import write_fake_context, write_fake_voc
from zegclip.cli.main import main as zegclip_main
from zegclip.model.build import zegclip_tiny
from zegclip.training.suite import BENCHMARKS

SMALL = ["data.num_workers=0", "data.persistent_workers=false", "data.pin_memory=false", "data.eval_short_side=64"]
SMALL += ["module.crop=64", "module.stride=48", "logger=none", "callbacks=none"]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    zegclip_tiny().save(path)
    return path


def test_suite_writes_one_table_next_to_each_benchmark(tmp_path: Path, checkpoint: Path, capsys):
    data = tmp_path / "data"
    write_fake_voc(data / "voc")
    write_fake_context(data / "context")
    out = tmp_path / "suite"
    argv = ["suite", "--checkpoint", str(checkpoint), "--benchmarks", "PC-59,PAS-20", "--output", str(out)]
    assert zegclip_main([*argv, f"paths.data_dir={data}", *SMALL]) == 0
    with open(out / "suite.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["checkpoint", "PC-59", "PAS-20"]
    for name, value in zip(rows[0][1:], rows[1][1:], strict=True):
        metrics = json.loads((out / BENCHMARKS[name] / "metrics.json").read_text())  # its own outputs
        assert value == f"{metrics['val/mIoU']:.1f}"
    table = (out / "suite.md").read_text().splitlines()
    assert "| PC-59 | PAS-20 |" in table and len(table) == 5
    assert "suite.md" in capsys.readouterr().out


def test_suite_checks_every_dataset_before_loading_the_model(tmp_path: Path, checkpoint: Path, capsys):
    argv = ["suite", "--checkpoint", str(tmp_path / "not_loaded.pt"), "--output", str(tmp_path / "o")]
    assert zegclip_main([*argv, f"paths.data_dir={tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing datasets") and all(name in err for name in BENCHMARKS)
    assert zegclip_main(["suite", "--checkpoint", str(checkpoint), "--benchmarks", "A-151"]) == 2
    assert "unknown benchmark(s) ['A-151']" in capsys.readouterr().err
