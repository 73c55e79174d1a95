"""Nothing lost, nothing overwritten: the last step is saved, a run folder belongs to one run,
checkpoints survive a full disk, and a resume is checked like any checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.tmpfs import fill, small_tmpfs
from tests.helpers.train_runs import SMALL, train_run
from zegclip.model.build import CheckpointError
from zegclip.training.run_folder import RunFolderError, claim_run_folder
from zegclip.training.train import train

QUICK = [*SMALL, "trainer.max_steps=3", "eval_every=2"]


@pytest.fixture
def run_cfg(tmp_path: Path, compose_cfg):
    """The tiny demo's config with its run folder under ``tmp_path/out``."""

    def make(*overrides: str):
        return compose_cfg("train", [*QUICK, f"paths.data_dir={tmp_path / 'data'}", *overrides])

    return make


def step_of(path: Path) -> int:
    return int(torch.load(path, weights_only=True, mmap=True)["global_step"])


@pytest.mark.parametrize(("max_steps", "eval_every"), [(3, 2), (3, 500)])
def test_the_last_step_is_validated_and_saved(run_cfg, tmp_path: Path, max_steps: int, eval_every: int):
    metrics = train(run_cfg(f"trainer.max_steps={max_steps}", f"eval_every={eval_every}"))
    out = tmp_path / "out"
    assert step_of(out / "checkpoints" / "last.ckpt") == max_steps
    assert (out / "model" / "model.safetensors").is_file()  # the model folder of the best checkpoint
    assert "best/val/hIoU" in metrics and "val/mIoU" in metrics


def test_a_finished_run_is_never_overwritten(run_cfg, tmp_path: Path):
    train(run_cfg())
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run .*ckpt_path=last.*overwrite=true"):
        train(run_cfg("seed=1"))
    assert last.read_bytes() == before
    train(run_cfg("seed=1", "overwrite=true"))  # asked for: replaced
    assert last.read_bytes() != before
    assert len(list((tmp_path / "out" / "checkpoints").glob("best_step*.ckpt"))) == 1


def test_a_live_run_keeps_its_folder(run_cfg, tmp_path: Path):
    live = claim_run_folder(tmp_path / "out", resuming=False, overwrite=False)  # another run, still going
    with live, pytest.raises(RunFolderError, match="in use by a live run"):
        train(run_cfg("overwrite=true", "ckpt_path=null"))
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_from_a_damaged_last_checkpoint_is_one_error(run_cfg, tmp_path: Path, damage: str):
    train(run_cfg())
    last = tmp_path / "out" / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.ckpt"):
        train(run_cfg("ckpt_path=last", "trainer.max_steps=4"))


def test_resume_with_another_experiment_is_refused_naming_the_keys(run_cfg, tmp_path: Path):
    train(run_cfg())
    with pytest.raises(RunFolderError, match=r"model.num_prompts: 4 -> 2.*setting: 'inductive' -> 'fully'"):
        train(run_cfg("ckpt_path=last", "model.num_prompts=2", "setting=fully"))
    # what a resume may change: where outputs go, processes, workers
    train(run_cfg("ckpt_path=last", "data.num_workers=0", "trainer.enable_progress_bar=false"))


def test_an_empty_validation_split_is_refused_at_start(run_cfg, tmp_path: Path):
    from zegclip.data.datasets import DatasetError
    from zegclip.data.layouts import split_file
    from zegclip.data.synthetic import write_synthetic_voc

    write_synthetic_voc(tmp_path / "data" / "synthetic", num_train=10, num_val=2, size=80)
    split_file("synthetic", tmp_path / "data" / "synthetic", "val").write_text("")
    with pytest.raises(DatasetError, match="val.txt: the validation split .* lists no images"):
        train(run_cfg())
    assert not list((tmp_path / "out").glob("checkpoints/*.ckpt"))


def test_the_command_line_refuses_with_one_line(tmp_path: Path):
    cmd = [sys.executable, "-m", "zegclip.train", *QUICK, f"paths.root_dir={tmp_path}", "run_name=r"]
    assert subprocess.run(cmd, capture_output=True, timeout=300, cwd=tmp_path).returncode == 0
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in done.stderr


def test_a_full_disk_keeps_the_earlier_checkpoints(tmp_path: Path):
    """Outputs on a tmpfs with room for two checkpoints: the third write fails, cleanly."""
    (tmp_path / "probe").mkdir()
    probe = train_run(tmp_path / "probe", "p", [*QUICK, "trainer.max_steps=2", "run_name=p"])
    assert probe.code == 0, probe.stderr[-2000:]
    size = (probe.folder / "checkpoints" / "last.ckpt").stat().st_size
    outputs = tmp_path / "disk" / "outputs"
    with small_tmpfs(outputs, int(2.6 * size)):
        run = train_run(tmp_path / "disk", "full", [*QUICK, "trainer.max_steps=4", "run_name=full"])
        assert run.code == 2, run.stderr[-2000:]
        last_line = run.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: cannot write checkpoint") and "No space left on device" in last_line
        kept = sorted(p.name for p in (run.folder / "checkpoints").iterdir())
        assert kept == ["best_step000002.ckpt", "last.ckpt"]  # no partial file under any name
        assert step_of(run.folder / "checkpoints" / "last.ckpt") == 2
        assert step_of(run.folder / "checkpoints" / "best_step000002.ckpt") == 2


def test_a_full_tmpdir_does_not_stop_training(tmp_path: Path):
    with small_tmpfs(tmp_path / "tmp", 64 * 1024) as tmp:
        fill(tmp)
        run = train_run(tmp_path, "t", [*QUICK, "run_name=t"], env={"TMPDIR": str(tmp)})
        assert run.code == 0, run.stderr[-2000:]
    assert step_of(run.last) == 3
