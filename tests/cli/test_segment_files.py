"""The one read -> segment -> write loop (zegclip.cli.segment_files) that predict and the demo run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zegclip.cli.prediction_files as prediction_files
from zegclip.cli.image_files import Job, collect_jobs
from zegclip.cli.prediction_files import PREDICTIONS_FILE
from zegclip.cli.segment_files import segment_files
from zegclip.model.build import zegclip_tiny
from zegclip.segmentation import ImageReadError, segment

CLASSES = "cat; grass, lawn; sky"
OPTIONS = {"classes": CLASSES, "short_side": 32, "keep_scores": False}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zegclip_tiny().eval()


def _image(path: Path, size: tuple[int, int], seed: int) -> Path:
    base = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(base).resize(size[::-1], Image.BILINEAR).save(path)
    return path


@pytest.mark.parametrize("mode", ["slide", "whole"])
def test_each_image_ends_once_written_or_failed_at_its_own_stage(model, tmp_path: Path, monkeypatch, mode) -> None:
    """Unreadable, failing to write, and good images in one run: every job one outcome, the good ones written."""
    folder = tmp_path / "in"
    folder.mkdir()
    for seed, name in enumerate(["a.png", "b.png", "d.png"]):
        _image(folder / name, (24, 40) if name != "b.png" else (40, 24), seed)
    (folder / "c.png").write_bytes(b"not a png")
    real = prediction_files.overlay_image

    def overlay(image, result, **kwargs):  # b.png (40 x 24) cannot be written, as on a full disk
        if image.shape[:2] == (40, 24):
            raise OSError(28, "No space left on device")
        return real(image, result, **kwargs)

    monkeypatch.setattr(prediction_files, "overlay_image", overlay)
    jobs = collect_jobs([str(folder)])
    out = tmp_path / "out"
    out.mkdir()
    outcomes = list(segment_files(model, jobs, out, mode=mode, batch_size=4, **OPTIONS))
    assert sorted(o.job.image.name for o in outcomes) == ["a.png", "b.png", "c.png", "d.png"]
    by_name = {o.job.image.name: o for o in outcomes}
    assert by_name["c.png"].failed == "read" and isinstance(by_name["c.png"].error, ImageReadError)
    assert str(folder / "c.png") in by_name["c.png"].message()
    assert by_name["b.png"].failed == "write"
    no_space = "OSError: [Errno 28] No space left on device"
    assert by_name["b.png"].message() == f"cannot write outputs for {folder / 'b.png'}: {no_space}"
    for name in ("a.png", "d.png"):
        written = by_name[name]
        assert written.failed is None and written.error is None
        expected = segment(model, folder / name, CLASSES, short_side=32)
        label = np.asarray(Image.open(out / written.record["label_png"]))
        assert np.array_equal(label, expected.labels)
    records = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert records == [by_name["a.png"].record, by_name["d.png"].record]  # only complete outputs are listed
    assert not (out / "c_label.png").exists()


def test_a_reader_and_a_name_replace_the_file_and_its_path(model, tmp_path: Path) -> None:
    """The demo's use: its own reader (limits, upload names), records and messages under the given name."""
    path = _image(tmp_path / "tmp_upload_1234.png", (24, 40), 0)
    jobs = [Job(path, Path("holiday"), "holiday.png"), Job(path, Path("second"), "second.png")]

    def read(job: Job) -> np.ndarray:
        if job.label == "second.png":
            raise ImageReadError(f"{job.label}: image too large")
        return np.asarray(Image.open(job.image).convert("RGB"))

    outcomes = list(segment_files(model, jobs, tmp_path, read=read, legend=False, **OPTIONS))
    assert [o.failed for o in outcomes] == [None, "read"]  # slide mode: one image at a time, in order
    assert outcomes[0].record["image"] == "holiday.png" and outcomes[0].record["label_png"] == "holiday_label.png"
    assert outcomes[1].message() == "second.png: image too large"
