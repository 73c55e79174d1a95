"""zegclip predict (zegclip.cli.predict): the command line on generated images with the tiny model."""

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

from tests.helpers.exif import ORIENTATIONS, as_displayed, decoded_as_stored, stored_pattern, write_oriented_jpeg
from zegclip.cli.image_files import collect_jobs
from zegclip.cli.predict import main
from zegclip.cli.prediction_files import PREDICTIONS_FILE
from zegclip.visualize import palette

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
    assert {r["label_png"].removesuffix("_label.png") for r in records} == expected
    for stem in expected:
        assert (out / f"{stem}_label.png").is_file()
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
    assert not (out / "broken_label.png").exists() and not (out / "broken_overlay.jpg").exists()


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
    from zegclip.model.build import zegclip_tiny

    torch.manual_seed(0)
    zegclip_tiny().save(tmp_path / "tiny.pt")
    _write_images(tmp_path / "in", {"img.png": (24, 36)})
    common = [str(tmp_path / "in"), "--classes", "cat; dog; sky", "--short-side", "32"]
    assert _run([*common, "--checkpoint", str(tmp_path / "tiny.pt"), "-o", str(tmp_path / "ckpt")], capsys)[0] == 0
    assert _run([*common, "--tiny", "-o", str(tmp_path / "tiny")], capsys)[0] == 0
    np.testing.assert_array_equal(
        np.array(Image.open(tmp_path / "ckpt" / "img_label.png")),
        np.array(Image.open(tmp_path / "tiny" / "img_label.png")),
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
    fp32, bf16 = (np.array(Image.open(tmp_path / name / "img_label.png")) for name in ("fp32", "bf16"))
    assert (fp32 == bf16).mean() > 0.9  # bf16 rounding may flip a few near-tied pixels


# ---------------------------------------------------------------- any image, bounded, isolated failures


def test_extreme_aspect_ratio_completes_with_a_note(tmp_path: Path, capsys) -> None:
    """4000 x 20 at the paper's scale would be 102,400 x 512 (3 GB); capped it takes seconds."""
    _write_images(tmp_path / "in", {"strip.png": (4000, 20), "ok.png": (40, 60)})
    code, err = _run([str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "strip.png" in notes[0] and "long side capped" in notes[0], err
    with Image.open(tmp_path / "out" / "strip_label.png") as label:
        assert label.size == (20, 4000)
    lines = (tmp_path / "out" / PREDICTIONS_FILE).read_text().splitlines()
    records = {Path(r["image"]).name: r for r in map(json.loads, lines)}
    assert "long side capped" in records["strip.png"]["note"] and "note" not in records["ok.png"]


def _flaky_segment_batch(monkeypatch, error: BaseException) -> list[int]:
    """segment_batch that raises ``error`` for any batch holding an image whose pixels are all 7."""
    import zegclip.cli.segment_files as loop

    calls = []
    real = loop.segment_batch

    def flaky(model, images, *args, **kwargs):
        calls.append(len(images))
        if any((np.asarray(image) == 7).all() for image in images):
            raise error
        return real(model, images, *args, **kwargs)

    monkeypatch.setattr(loop, "segment_batch", flaky)
    return calls


@pytest.mark.parametrize(
    ("mode", "error"),
    [("slide", RuntimeError("CUDA out of memory.\nTried to allocate 3 GB")), ("whole", MemoryError())],
)
def test_an_image_failing_mid_run_does_not_stop_the_others(tmp_path: Path, capsys, monkeypatch, mode, error) -> None:
    _write_images(tmp_path / "in", {"a.png": (24, 36), "c.png": (24, 36), "d.png": (24, 36)})
    Image.fromarray(np.full((24, 36, 3), 7, np.uint8)).save(tmp_path / "in" / "b.png")
    calls = _flaky_segment_batch(monkeypatch, error)
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "32", "--mode", mode]
    code, err = _run([*argv, "--batch-size", "4", "-o", str(tmp_path / "out")], capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "b.png" in errors[0] and type(error).__name__ in errors[0], err
    assert "done 3 image(s), failed 1" in err
    lines = (tmp_path / "out" / PREDICTIONS_FILE).read_text().splitlines()
    assert sorted(Path(json.loads(line)["image"]).name for line in lines) == ["a.png", "c.png", "d.png"]
    assert not (tmp_path / "out" / "b_label.png").exists()
    if mode == "whole":  # the group of four failed, then each image ran alone
        assert calls == [4, 1, 1, 1, 1]


def test_a_write_error_does_not_stop_the_others(tmp_path: Path, capsys, monkeypatch) -> None:
    import zegclip.cli.prediction_files as outputs

    real = outputs.overlay_image

    def failing(image, result, **kwargs):
        if image.shape[:2] == (30, 20):
            raise ValueError("image too large for the JPEG encoder")
        return real(image, result, **kwargs)

    monkeypatch.setattr(outputs, "overlay_image", failing)
    _write_images(tmp_path / "in", {"a.png": (20, 30), "b.png": (30, 20), "c.png": (20, 30)})
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "32"]
    code, err = _run([*argv, "-o", str(tmp_path / "out")], capsys)
    assert code == 1 and "error: cannot write outputs for" in err and "b.png" in err
    assert "done 2 image(s), failed 1" in err


@pytest.mark.parametrize("short_side", ["1", "31", "-5", "4097", "100000"])
def test_short_side_out_of_range_exits_2(tmp_path: Path, capsys, monkeypatch, short_side) -> None:
    import zegclip.cli.predict as predict

    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    _write_images(tmp_path, {"img.png": (8, 8)})
    argv = [str(tmp_path / "img.png"), "--tiny", "--classes", "cat", "--short-side", short_side]
    code, err = _run([*argv, "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err == f"error: --short-side must be between 32 and 4096 (or 0 to keep the image size), got {short_side}\n"


def test_short_side_0_keeps_the_size_even_below_the_crop(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "in", {"tiny.png": (8, 12), "small.png": (40, 60)})
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "0"]
    code, err = _run([*argv, "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "note: " in err and "tiny.png" in err and "stretched to 32" in err  # two ViT patches at least
    with Image.open(tmp_path / "out" / "tiny_label.png") as label:
        assert label.size == (12, 8)


def test_output_folder_that_cannot_be_created_exits_2_before_loading(tmp_path: Path, capsys, monkeypatch) -> None:
    import zegclip.cli.predict as predict

    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    _write_images(tmp_path, {"img.png": (8, 8)})
    (tmp_path / "file").write_text("x")
    argv = [str(tmp_path / "img.png"), "--tiny", "--classes", "cat", "-o"]
    code, err = _run([*argv, str(tmp_path / "file/sub")], capsys)
    assert code == 2
    assert err.startswith(f"error: cannot create the output folder {tmp_path / 'file/sub'}: ")
    assert len(err.strip().splitlines()) == 1
    code, err = _run([*argv, str(tmp_path / "file")], capsys)
    assert code == 2 and err == f"error: --output {tmp_path / 'file'} exists and is not a folder\n"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_output_folder_without_permission_exits_2(tmp_path: Path, capsys, monkeypatch) -> None:
    import zegclip.cli.predict as predict

    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    _write_images(tmp_path, {"img.png": (8, 8)})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for out in (locked, locked / "sub"):
            code, err = _run([str(tmp_path / "img.png"), "--tiny", "--classes", "cat", "-o", str(out)], capsys)
            assert code == 2 and err.startswith("error: cannot ") and len(err.strip().splitlines()) == 1
    finally:
        locked.chmod(0o755)


def test_output_folder_permission_error_exits_2(tmp_path: Path, capsys, monkeypatch) -> None:
    """As the root user ignores permissions, the OS refusal is simulated."""
    import zegclip.cli.predict as predict

    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    _write_images(tmp_path, {"img.png": (8, 8)})

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    argv = [str(tmp_path / "img.png"), "--tiny", "--classes", "cat", "-o"]
    monkeypatch.setattr(Path, "mkdir", refuse)
    code, err = _run([*argv, str(tmp_path / "new")], capsys)
    assert code == 2 and err == f"error: cannot create the output folder {tmp_path / 'new'}: Permission denied\n"
    monkeypatch.undo()
    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    monkeypatch.setattr(Path, "write_bytes", refuse)
    code, err = _run([*argv, str(tmp_path / "existing")], capsys)
    assert code == 2 and err == f"error: cannot write to the output folder {tmp_path / 'existing'}: Permission denied\n"


def test_rerun_keeps_one_record_per_image(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "in", {"a.png": (20, 30), "b.png": (30, 20), "c.png": (24, 24)})
    inputs = {name: str(tmp_path / "in" / name) for name in ("a.png", "b.png", "c.png")}
    out = tmp_path / "out"
    common = ["--tiny", "--classes", "cat; dog", "--short-side", "32", "-o", str(out)]
    assert _run([inputs["a.png"], inputs["b.png"], *common], capsys)[0] == 0
    with open(out / PREDICTIONS_FILE, "a", encoding="utf-8") as f:
        f.write('{"image": "cut short by a kill')  # a half-written last line
    assert _run([inputs["b.png"], inputs["c.png"], *common], capsys)[0] == 0
    records = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == ["a.png", "b.png", "c.png"]
    assert _run([str(tmp_path / "in"), *common[:-2], "--classes", "cat; dog; sky", "-o", str(out)], capsys)[0] == 0
    records = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == ["a.png", "b.png", "c.png"]
    assert all(r["classes"] == ["cat", "dog", "sky"] for r in records)  # the latest run's records


def test_checkpoint_whose_config_does_not_fit_its_weights_is_one_line(tmp_path: Path, capsys) -> None:
    from zegclip.model.build import zegclip_tiny

    path = tmp_path / "tiny.pt"
    zegclip_tiny().save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["num_prompts"] = 7  # the file holds 4
    torch.save(payload, path)
    _write_images(tmp_path / "in", {"img.png": (24, 36)})
    code, err = _run(
        [str(tmp_path / "in"), "--classes", "cat", "--checkpoint", str(path), "-o", str(tmp_path / "o")], capsys
    )
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "prompt_embeddings is (1, 4, 64) in the checkpoint but (1, 7, 64)" in err


@pytest.mark.parametrize(
    ("device", "has_bf16", "expected"), [("cpu", True, "fp32"), ("cuda", True, "bf16"), ("cuda", False, "fp16")]
)
def test_default_precision_per_device(monkeypatch, device, has_bf16, expected) -> None:
    """--precision left out: fp32 on a CPU, reduced precision on a GPU (bf16 where it has it)."""
    from zegclip.cli.predict import build_parser, default_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: has_bf16)
    assert build_parser().parse_args(["x", "--tiny", "--classes", "a", "-o", "o"]).precision is None
    assert default_precision(torch.device(device)) == expected


# ---------------------------------------------------------------- inputs are never written over


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_output_into_the_input_folder_leaves_a_png_input_untouched(tmp_path: Path) -> None:
    """`zegclip predict chelsea.png --output .` in the photo's folder: the photo stays the photo."""
    _write_images(tmp_path, {"chelsea.png": (40, 60)})
    before = (tmp_path / "chelsea.png").read_bytes()
    proc = subprocess.run(
        ["zegclip", "predict", "chelsea.png", "--tiny", "--classes", "cat; wall", "--short-side", "32"]
        + ["--output", "."],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "chelsea.png").read_bytes() == before
    with Image.open(tmp_path / "chelsea.png") as photo:
        assert photo.mode == "RGB"
    with Image.open(tmp_path / "chelsea_label.png") as label:
        assert label.mode == "P" and label.size == (60, 40)
    assert (tmp_path / "chelsea_overlay.jpg").is_file()


def test_a_jpg_png_pair_into_their_own_folder_reads_both_photos(tmp_path: Path, capsys) -> None:
    """chelsea.jpg and chelsea.png with --output their folder: each label is the segmentation of its photo."""
    from zegclip.model.build import zegclip_tiny
    from zegclip.segmentation import segment

    _write_images(tmp_path, {"chelsea.jpg": (40, 60), "chelsea.png": (50, 30)}, seed=3)
    before = _digests(tmp_path)
    argv = [str(tmp_path), "--tiny", "--classes", "cat; wall; sky", "--short-side", "32", "-o", str(tmp_path)]
    assert _run(argv, capsys)[0] == 0
    after = _digests(tmp_path)
    assert {name: after[name] for name in before} == before  # no input changed
    records = {
        Path(r["image"]).name: r for r in map(json.loads, (tmp_path / PREDICTIONS_FILE).read_text().splitlines())
    }
    assert {name: r["label_png"] for name, r in records.items()} == {
        "chelsea.jpg": "chelsea_label.png",
        "chelsea.png": "chelsea_2_label.png",
    }
    torch.manual_seed(0)
    model = zegclip_tiny().eval()
    for name, record in records.items():
        expected = segment(model, tmp_path / name, "cat; wall; sky", short_side=32).labels
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / record["label_png"])), expected)
    # a second run into the same folder segments the two photos again, not the outputs of the first
    code, err = _run(argv, capsys)
    assert code == 0 and "note: 4 input(s) are outputs of an earlier run" in err
    records = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == ["chelsea.jpg", "chelsea.png"]
    assert sorted(r["label_png"] for r in records) == ["chelsea_2_label.png", "chelsea_label.png"]
    assert {name: _digests(tmp_path)[name] for name in before} == before


def test_rerun_into_the_input_folder_skips_earlier_outputs(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path, {"a.png": (20, 30)})
    argv = [str(tmp_path), "--tiny", "--classes", "cat; dog", "--short-side", "32", "-o", str(tmp_path)]
    assert _run(argv, capsys)[0] == 0
    code, err = _run(argv, capsys)
    assert code == 0
    assert "note: 2 input(s) are outputs of an earlier run" in err and "done 1 image(s), failed 0" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_label.png", "a_overlay.jpg", PREDICTIONS_FILE]


def test_files_it_did_not_write_are_never_replaced(tmp_path: Path, capsys) -> None:
    """A file named like an output but not listed in predictions.jsonl (the user's) is kept; the output moves."""
    _write_images(tmp_path / "in", {"a.png": (20, 30)})
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_label.png").write_bytes(b"the user's own file")
    (out / "a_2_overlay.jpg").write_bytes(b"another one")
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "32", "-o", str(out)]
    assert _run(argv, capsys)[0] == 0
    assert (out / "a_label.png").read_bytes() == b"the user's own file"
    assert (out / "a_2_overlay.jpg").read_bytes() == b"another one"
    (record,) = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert record["label_png"] == "a_3_label.png" and record["overlay"] == "a_3_overlay.jpg"
    assert _run(argv, capsys)[0] == 0  # its own outputs are replaced on a re-run
    (record,) = [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text().splitlines()]
    assert record["label_png"] == "a_3_label.png"
    assert sorted(p.name for p in out.iterdir()) == [
        "a_2_overlay.jpg",
        "a_3_label.png",
        "a_3_overlay.jpg",
        "a_label.png",
        PREDICTIONS_FILE,
    ]


def test_an_input_linked_into_the_output_folder_is_not_replaced(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "in", {"a.png": (20, 30), "b_label.png": (20, 30)})
    out = tmp_path / "out"
    out.mkdir()
    os.link(tmp_path / "in" / "b_label.png", out / "b_label.png")  # listed by no earlier run, and an input
    before = _digests(tmp_path / "in")
    (tmp_path / "in" / "b.png").write_bytes((tmp_path / "in" / "a.png").read_bytes())
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat; dog", "--short-side", "32", "-o", str(out)]
    assert _run(argv, capsys)[0] == 0
    assert {k: v for k, v in _digests(tmp_path / "in").items() if k in before} == before
    labels = sorted(json.loads(line)["label_png"] for line in (out / PREDICTIONS_FILE).read_text().splitlines())
    assert labels == ["a_label.png", "b_2_label.png", "b_label_label.png"]


def test_someone_elses_predictions_jsonl_is_refused(tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "in", {"a.png": (20, 30)})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / PREDICTIONS_FILE).write_text('{"id": 1, "score": 0.5}\n')
    argv = [str(tmp_path / "in"), "--tiny", "--classes", "cat", "-o", str(tmp_path / "out")]
    code, err = _run(argv, capsys)
    assert code == 2
    jsonl = tmp_path / "out" / PREDICTIONS_FILE
    assert err == f"error: {jsonl} exists and was not written by zegclip predict; choose another --output\n"
    assert (tmp_path / "out" / PREDICTIONS_FILE).read_text() == '{"id": 1, "score": 0.5}\n'


def test_read_only_output_folder_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    """On a read-only file system even removing the (never written) probe fails: the first error is shown."""
    import errno

    import zegclip.cli.predict as predict

    monkeypatch.setattr(predict, "load_checkpoint_model", lambda args: pytest.fail("the model must not load"))
    _write_images(tmp_path, {"img.png": (8, 8)})
    (tmp_path / "ro").mkdir()

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    code, err = _run([str(tmp_path / "img.png"), "--tiny", "--classes", "cat", "-o", str(tmp_path / "ro")], capsys)
    assert code == 2
    assert err == f"error: cannot write to the output folder {tmp_path / 'ro'}: Read-only file system\n"


# ---------------------------------------------------------------- photos with an EXIF orientation tag


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_tagged_photo_is_segmented_and_written_as_a_viewer_shows_it(tmp_path: Path, capsys, orientation) -> None:
    from zegclip.model.build import zegclip_tiny
    from zegclip.segmentation import segment

    path = write_oriented_jpeg(tmp_path / "in" / "phone.jpg", stored_pattern(40, 72), orientation)
    shown = as_displayed(decoded_as_stored(path), orientation)  # what a photo viewer shows
    argv = [str(path), "--tiny", "--classes", "cat; wall; sky", "--short-side", "32", "-o", str(tmp_path / "out")]
    assert _run(argv, capsys)[0] == 0
    torch.manual_seed(0)
    expected = segment(zegclip_tiny().eval(), shown, "cat; wall; sky", short_side=32).labels
    label = np.array(Image.open(tmp_path / "out" / "phone_label.png"))
    assert label.shape == shown.shape[:2]
    np.testing.assert_array_equal(label, expected)
    overlay = np.array(Image.open(tmp_path / "out" / "phone_overlay.jpg")).astype(int)
    height, width = shown.shape[:2]
    blend = 0.5 * shown + 0.5 * palette(256)[expected]
    assert np.abs(overlay[:height, :width] - blend).mean() < 8  # JPEG loss; the stored picture would be far off
