"""``zegclip suite``: one checkpoint, several benchmarks, one table (markdown and CSV)."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers.configs import SMALL_EVAL
from tests.helpers.fake_raw import VOC_IDS, make_voc_raw
from tests.helpers.fake_raw_ade import ADE150_IDS, make_ade150_raw, make_ade_full_raw
from tests.helpers.fake_raw_pc459 import make_pc459_raw
from zegclip.cli.main import main as zegclip_main
from zegclip.data.prepare import prepare_ade150, prepare_ade847, prepare_context, prepare_pc459, prepare_voc
from zegclip.training.suite import BENCHMARKS

SMALL = SMALL_EVAL


def test_suite_checks_every_dataset_before_loading_the_model(tmp_path: Path, tiny_checkpoint: Path, capsys):
    argv = ["suite", "--checkpoint", str(tmp_path / "not_loaded.pt"), "--output", str(tmp_path / "o")]
    assert zegclip_main([*argv, f"paths.data_dir={tmp_path / 'nothing'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: missing datasets") and all(name in err for name in BENCHMARKS)
    assert zegclip_main(["suite", "--checkpoint", str(tiny_checkpoint), "--benchmarks", "A-151"]) == 2
    assert "unknown benchmark(s) ['A-151']" in capsys.readouterr().err


def test_all_five_benchmarks_from_raw_archives_to_one_table(tmp_path: Path, tiny_checkpoint: Path):
    """Each benchmark prepared from tiny archives in its real format, then the whole suite."""
    raw, data = tmp_path / "raw", tmp_path / "data"
    make_ade150_raw(raw / "ade", **ADE150_IDS)
    make_ade_full_raw(raw / "ade")
    make_pc459_raw(raw / "context")
    make_voc_raw(raw / "voc", **VOC_IDS)
    for prepare, where in [
        (prepare_ade150, "ade"),
        (prepare_ade847, "ade"),
        (prepare_context, "context"),
        (prepare_pc459, "context"),
        (prepare_voc, "voc"),
    ]:
        prepare(raw / where, data / where, workers=1)  # a warning each: fewer images than the official counts
    out = tmp_path / "suite"
    argv = ["suite", "--checkpoint", str(tiny_checkpoint), "--output", str(out), f"paths.data_dir={data}", *SMALL]
    assert zegclip_main(argv) == 0
    with open(out / "suite.csv") as f:
        header, row = list(csv.reader(f))
    assert header == ["checkpoint", "A-847", "PC-459", "A-150", "PC-59", "PAS-20"]
    for name, value in zip(header[1:], row[1:], strict=True):
        metrics = json.loads((out / BENCHMARKS[name] / "metrics.json").read_text())
        assert value == f"{metrics['val/mIoU']:.1f}" and 0 <= float(value) <= 100, name
    table = (out / "suite.md").read_text().splitlines()
    assert table[2:] == [
        "| A-847 | PC-459 | A-150 | PC-59 | PAS-20 |",
        "|---|---|---|---|---|",
        f"| {' | '.join(row[1:])} |",
    ]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopped_suite_keeps_its_results_and_the_rerun_evaluates_the_rest(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch, capsys, signum, code
):
    raw, data = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw / "context")
    make_voc_raw(raw / "voc", **VOC_IDS)
    prepare_context(raw / "context", data / "context", workers=1)
    prepare_voc(raw / "voc", data / "voc", workers=1)
    out = tmp_path / "suite"
    argv = ["suite", "--checkpoint", str(tiny_checkpoint), "--output", str(out), "--benchmarks", "PC-59,PAS-20"]
    argv += [f"paths.data_dir={data}", *SMALL]
    from zegclip.training.module import ZegCLIPModule

    step, evaluated = ZegCLIPModule.validation_step, []

    def signalled_in_the_second(self, batch, batch_idx):
        if batch_idx == 0:
            evaluated.append(self.hparams.dataset)
        if len(evaluated) == 2 and stop:  # PAS-20, the second benchmark: pre-empted mid-evaluation
            os.kill(os.getpid(), signum)
        return step(self, batch, batch_idx)

    stop = True
    monkeypatch.setattr(ZegCLIPModule, "validation_step", signalled_in_the_second)
    assert zegclip_main(argv) == code
    err = capsys.readouterr().err
    assert f"interrupted: {signal.Signals(signum).name}; evaluated PC-59" in err
    assert not (out / "suite.md").exists()
    kept = json.loads((out / "suite.json").read_text())["results"]
    assert list(kept) == ["PC-59"]

    stop = False
    evaluated.clear()
    assert zegclip_main(argv) == 0
    assert evaluated == ["voc"]  # only the benchmark still missing
    assert "kept from an earlier run" in capsys.readouterr().out
    with open(out / "suite.csv") as f:
        header, row = list(csv.reader(f))
    assert header == ["checkpoint", "PC-59", "PAS-20"] and row[1] == f"{kept['PC-59']:.1f}"
