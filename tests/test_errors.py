"""The one error contract (zegclip.errors): every deliberate error is one line and exit 2."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import zegclip.cli.demo
import zegclip.cli.predict
import zegclip.cli.prepare
import zegclip.cli.segment_files
from zegclip.data.classes import DatasetChoiceError
from zegclip.data.datasets import DatasetError
from zegclip.data.folder import FolderError
from zegclip.data.layouts import IdListError
from zegclip.data.synthetic import SyntheticError
from zegclip.data.verify import VerifyError
from zegclip.errors import (
    INTERRUPTED_EXIT_CODE,
    FileAccessError,
    UsageError,
    ZegCLIPError,
    ensure_writable_folder,
    run_command,
)
from zegclip.export import ExportError
from zegclip.model import CheckpointError, CLIPLoadError
from zegclip.segmentation import DeviceError, ImageReadError, VocabularyError


@pytest.mark.parametrize(
    "error",
    [
        VocabularyError,
        ImageReadError,
        DeviceError,
        CheckpointError,
        CLIPLoadError,
        DatasetError,
        DatasetChoiceError,
        FolderError,
        IdListError,
        SyntheticError,
        VerifyError,
        ExportError,
        UsageError,
    ],
)
def test_deliberate_errors_are_zegclip_errors(error) -> None:
    assert issubclass(error, ZegCLIPError)
    assert run_command(_raise, error("a message naming the file")) == 2


def test_usage_error_is_defined_once() -> None:
    assert zegclip.cli.predict.UsageError is zegclip.cli.prepare.UsageError is UsageError
    assert zegclip.cli.demo.UsageError is UsageError


def _raise(err: BaseException) -> None:
    raise err


def test_bugs_keep_their_traceback() -> None:
    for bug in (KeyError("x"), ValueError("y"), TypeError("z"), OSError(errno.EIO, "I/O error", "f")):
        with pytest.raises(type(bug)):
            run_command(_raise, bug)


@pytest.mark.parametrize("number", [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.ENOTDIR])
def test_a_file_the_user_cannot_write_is_one_line(capsys, number: int) -> None:

    assert run_command(_raise, OSError(number, os.strerror(number), "/data/out/config.yaml")) == 2
    assert capsys.readouterr().err == f"error: /data/out/config.yaml: {os.strerror(number)}\n"
    assert isinstance(FileAccessError("x"), ZegCLIPError)


def test_ctrl_c_is_exit_130_with_one_line(capsys) -> None:
    assert run_command(_raise, KeyboardInterrupt()) == INTERRUPTED_EXIT_CODE == 130
    assert capsys.readouterr().err == "interrupted: stopped by Ctrl-C\n"


class _Broken(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 1:
            raise DatasetError(f"labels/{index}.png: label is 5x7 (WxH) but its image is 8x8")
        return torch.zeros(1)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_in_a_dataloader_worker_keeps_its_one_line(workers: int) -> None:
    with pytest.raises(DatasetError) as caught:
        list(DataLoader(_Broken(), batch_size=1, num_workers=workers))
    assert str(caught.value) == "labels/1.png: label is 5x7 (WxH) but its image is 8x8"


def test_ensure_writable_folder(tmp_path: Path, monkeypatch) -> None:
    assert ensure_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"the output folder .*file exists and is not a folder"):
        ensure_writable_folder(tmp_path / "file")
    with pytest.raises(UsageError, match=r"^cannot create the output folder .*file/sub: Not a directory$"):
        ensure_writable_folder(tmp_path / "file" / "sub")

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)  # the probe's removal must not hide the first error
    with pytest.raises(UsageError, match=r"^cannot write to the output folder .*: Read-only file system$"):
        ensure_writable_folder(tmp_path)


# ---------------------------------------------------------------- the commands, as users run them


def _zegclip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["zegclip", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _one_line(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "interrupted:"))]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr  # besides log lines
    return errors[0]


def test_hydra_key_typo_is_one_line(tmp_path: Path) -> None:
    line = _one_line(_zegclip("train", "experiment=demo", "trainer.max_stepz=3", cwd=tmp_path))
    assert line == (
        "error: Could not override 'trainer.max_stepz': Key 'max_stepz' is not in struct "
        "(to add a new key use +trainer.max_stepz=3)"
    )
    line = _one_line(_zegclip("eval", "experiment=nope", "checkpoint=x.pt", cwd=tmp_path))
    assert line.startswith("error: In 'eval': Could not find 'experiment/nope'; available: coco_fully, ")


def test_eval_split_banana_is_one_line(tmp_path: Path) -> None:
    line = _one_line(_zegclip("eval", "experiment=demo", "checkpoint=x.pt", "split=banana", cwd=tmp_path))
    assert line == "error: split='banana' is not valid: expected one of ['val', 'test']"


def test_synthetic_without_images_is_one_line(tmp_path: Path) -> None:
    line = _one_line(_zegclip("synthetic", "--out", "syn", "--num-train", "0", "--num-val", "0", cwd=tmp_path))
    assert line.startswith("error: num_train and num_val (--num-train, --num-val) must be 0 or more, with at least")
    assert not (tmp_path / "syn").exists()


def test_export_to_an_existing_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    line = _one_line(_zegclip("export", "--tiny", "-o", "models", "--height", "64", "--width", "64", cwd=tmp_path))
    assert line == "error: models is a folder; give the .onnx file to write, e.g. models/zegclip.onnx"


@pytest.mark.slow  # every console command in its own process
def test_outputs_under_a_file_are_one_line_for_every_command(tmp_path: Path) -> None:
    """An output path through a regular file: the OS refuses (as it refuses a read-only folder)."""
    (tmp_path / "file").write_text("not a folder")
    line = _one_line(_zegclip("synthetic", "--out", "file/syn", cwd=tmp_path))
    assert line.startswith("error: file/syn/") and line.endswith(": Not a directory")
    line = _one_line(_zegclip("export", "--tiny", "-o", "file/m.onnx", cwd=tmp_path))
    assert line == "error: the folder of --output file exists and is not a folder"
    line = _one_line(_zegclip("train", "experiment=demo", "paths.output_dir=file/run", cwd=tmp_path))
    assert line.startswith("error: file/run") and line.endswith(": Not a directory")
    line = _one_line(_zegclip("eval", "experiment=demo", "checkpoint=x.pt", "paths.output_dir=file/run", cwd=tmp_path))
    assert line.startswith("error: file/run") and line.endswith(": Not a directory")


def test_ctrl_c_in_predict_and_in_a_hydra_command_is_exit_130(tmp_path: Path, capsys, monkeypatch) -> None:
    from PIL import Image

    from zegclip.training.config import run_hydra

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    monkeypatch.setattr(zegclip.cli.segment_files, "segment_batch", lambda *args, **kwargs: _raise(KeyboardInterrupt()))
    argv = [str(tmp_path / "a.png"), "--tiny", "--classes", "cat", "--short-side", "32", "-o", str(tmp_path / "o")]
    assert zegclip.cli.predict.main(argv) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted: stopped by Ctrl-C"
    with pytest.raises(SystemExit) as stopped:
        run_hydra(lambda: _raise(KeyboardInterrupt()))
    assert stopped.value.code == 130


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folders_are_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for args in (
            ("synthetic", "--out", "locked/syn"),
            ("export", "--tiny", "-o", "locked/m.onnx"),
            ("train", "experiment=demo", "paths.output_dir=locked/run"),
        ):
            line = _one_line(_zegclip(*args, cwd=tmp_path))
            assert "locked" in line and "Permission denied" in line, line
    finally:
        locked.chmod(0o755)
