"""zegclip.predict: the command line on generated images with the tiny model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zegclip.predict import PREDICTIONS_FILE, collect_jobs, main, palette

CLASSES = "cat; grass, lawn; sky; road"
NAMES = ["cat", "grass", "sky", "road"]
SIZES = {"a.jpg": (40, 70), "a.png": (50, 30), "sub/b.PNG": (33, 47), "sub/deeper/c.webp": (64, 64)}


def _write_images(root: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, (h, w) in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # smooth blobs so the random model gives more than one class
        base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(path)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """One CLI run over a folder: (input folder, output folder, exit code)."""
    root = tmp_path_factory.mktemp("predict")
    images, out = root / "images", root / "out"
    _write_images(images, SIZES)
    (images / "notes.txt").write_text("not an image")
    code = main([str(images), "--tiny", "--classes", CLASSES, "--short-side", "64", "--output", str(out)])
    return images, out, code


@pytest.fixture(scope="module")
def records(folder_run) -> list[dict]:
    _, out, _ = folder_run
    return [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]


def test_folder_run_writes_every_output(folder_run, records) -> None:
    images, out, code = folder_run
    assert code == 0
    assert len(records) == len(SIZES)
    expected = {"a", "a_2", "sub/b", "sub/deeper/c"}  # mirrored names; a.jpg / a.png do not collide
    assert {str(Path(r["label_png"]).with_suffix("")) for r in records} == expected
    for stem in expected:
        assert (out / f"{stem}.png").is_file()
        assert (out / f"{stem}_overlay.jpg").is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no leftovers


def test_label_png_is_a_palette_image_at_original_size(folder_run, records) -> None:
    _, out, _ = folder_run
    for record in records:
        with Image.open(record["image"]) as image:
            size = image.size
        with Image.open(out / record["label_png"]) as label:
            assert label.mode == "P"
            assert label.size == size
            assert np.array(label).max() < len(NAMES)
            np.testing.assert_array_equal(np.array(label.getpalette()[:12]).reshape(4, 3), palette(4))


def test_json_areas_match_the_label_map(folder_run, records) -> None:
    _, out, _ = folder_run
    multi = 0
    for record in records:
        labels = np.array(Image.open(out / record["label_png"]))
        present = {NAMES[i] for i in np.unique(labels)}
        assert set(record["areas"]) == present
        assert sum(record["areas"].values()) == pytest.approx(100.0, abs=1e-2)
        for name, area in record["areas"].items():
            assert area == pytest.approx(100 * np.mean(labels == NAMES.index(name)), abs=1e-3)
        multi += len(present) > 1
    assert multi, "the random model should give several classes somewhere"


def test_overlay_legend_shows_the_classes_present(folder_run, records) -> None:
    """The legend panel right of the image holds a swatch of each present class and no other."""
    _, out, _ = folder_run
    colors = palette(len(NAMES)).astype(int)
    for record in records:
        overlay = np.array(Image.open(out / record["overlay"])).astype(int)
        with Image.open(record["image"]) as image:
            width, height = image.size
        assert overlay.shape[0] >= height and overlay.shape[1] > width
        panel = overlay[:, width + 2 :]
        for c, name in enumerate(NAMES):
            close = (np.abs(panel - colors[c]).max(-1) < 24).sum()
            assert (close > 20) == (name in record["areas"]), (record["image"], name)


def test_collect_jobs_files_globs_and_collisions(tmp_path: Path) -> None:
    _write_images(tmp_path / "x", {"one.jpg": (8, 8), "two.JPEG": (8, 8)})
    _write_images(tmp_path / "y", {"one.png": (8, 8)})
    jobs = collect_jobs([str(tmp_path / "x" / "*.[jJ]*"), str(tmp_path / "y" / "one.png"), str(tmp_path / "x")])
    assert [j.image.name for j in jobs] == ["one.jpg", "two.JPEG", "one.png"]  # each file once
    assert [str(j.stem) for j in jobs] == ["one", "two", "one_2"]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_unreadable_image_among_good_ones(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "in", {"good1.png": (20, 30), "good2.jpg": (30, 20)})
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    out = tmp_path / "out"
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "32", "--mode", "whole"]
    code, err = _run([*argv, "--batch-size", "4", "--output", str(out)], capsys)
    assert code == 1
    assert "error: cannot read image" in err and "broken.jpg" in err
    assert "done 2 image(s), failed 1" in err
    lines = (out / PREDICTIONS_FILE).read_text().splitlines()
    assert sorted(Path(json.loads(line)["image"]).name for line in lines) == ["good1.png", "good2.jpg"]
    assert not (out / "broken.png").exists() and not (out / "broken_overlay.jpg").exists()


@pytest.mark.parametrize(
    ("classes", "extra", "message"),
    [
        (" ; ", [], "vocabulary .* is empty"),
        ("cat; dog; cat", [], "duplicate class names .*cat"),
        ("cat; dog", ["--seen", "cat, horse"], "not in the vocabulary: horse"),
        ("cat; dog", ["--batch-size", "0"], "batch-size"),
        ("missing/classes.txt", [], "vocabulary file not found"),
    ],
)
def test_configuration_errors_exit_2(tmp_path: Path, capsys, classes, extra, message) -> None:
    _write_images(tmp_path, {"img.png": (8, 8)})
    code, err = _run([str(tmp_path / "img.png"), "--tiny", "--classes", classes, *extra, "-o", str(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_missing_input_exits_2(tmp_path: Path, capsys) -> None:
    code, err = _run([str(tmp_path / "nope.jpg"), "--tiny", "--classes", "cat", "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and err == f"error: input not found: {tmp_path / 'nope.jpg'}\n"
    assert not (tmp_path / "o").exists()


def test_wrong_checkpoint_kind_exits_2_without_traceback(tmp_path: Path) -> None:
    _write_images(tmp_path, {"img.png": (8, 8)})
    checkpoint = tmp_path / "random.pt"
    torch.save({"weight": torch.zeros(3), "epoch": 1}, checkpoint)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "zegclip.predict", str(tmp_path / "img.png"), "--checkpoint", str(checkpoint)]
        + ["--classes", "cat", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "not a ZegCLIP checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_round_trip(tmp_path: Path, capsys) -> None:
    """A file written by ZegCLIP.save predicts the same labels as --tiny (same seed)."""
    from zegclip.model.zegclip import zegclip_tiny

    torch.manual_seed(0)
    zegclip_tiny().save(tmp_path / "tiny.pt")
    _write_images(tmp_path / "in", {"img.png": (24, 36)})
    common = [str(tmp_path / "in"), "--classes", "cat; dog; sky", "--short-side", "32"]
    assert _run([*common, "--checkpoint", str(tmp_path / "tiny.pt"), "-o", str(tmp_path / "ckpt")], capsys)[0] == 0
    assert _run([*common, "--tiny", "-o", str(tmp_path / "tiny")], capsys)[0] == 0
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "ckpt" / "img.png")), np.array(Image.open(tmp_path / "tiny" / "img.png"))
    )


def test_precision_and_compile_prepare_the_encoder(tmp_path: Path, capsys, monkeypatch) -> None:
    """bf16 stores the frozen weights in bf16 once; --compile compiles after the cast."""
    from zegclip.model.clip_encoder import PromptedVisionEncoder

    seen = []
    monkeypatch.setattr(
        PromptedVisionEncoder, "compile_for_inference", lambda self: seen.append(self.matmul_dtype)
    )  # compiling itself is tested in tests/model/test_compile.py
    _write_images(tmp_path / "in", {"img.png": (24, 36)})
    common = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog; sky", "--short-side", "32"]
    assert _run([*common, "-o", str(tmp_path / "fp32")], capsys)[0] == 0
    assert _run([*common, "--precision", "bf16", "--compile", "-o", str(tmp_path / "bf16")], capsys)[0] == 0
    assert seen == [torch.bfloat16]
    fp32, bf16 = (np.array(Image.open(tmp_path / name / "img.png")) for name in ("fp32", "bf16"))
    assert (fp32 == bf16).mean() > 0.9  # bf16 rounding may flip a few near-tied pixels
