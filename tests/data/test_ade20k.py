"""ADE20K-150 and ADE20K-847: preparation from tiny raw archives, verify, readers, vocabularies."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.fake_raw_ade import (
    ADE150_IDS,
    ADE_FULL_VAL,
    cut_zip,
    make_ade150_raw,
    make_ade_full_raw,
)
from tests.helpers.outputs import error_line, read_image
from zegclip.cli.prepare import main
from zegclip.cli.verify import main as verify_main
from zegclip.data import layouts
from zegclip.data.classes import DATASETS
from zegclip.data.datasets import ADE150Seg, ADE847Seg, DatasetError, build_dataset
from zegclip.data.prepare import (
    ADE150_ARCHIVE,
    ADE_FULL_ARCHIVE,
    EXTRACT_DIR,
    EXTRACT_STAMP,
    PREPARERS,
    PrepareError,
    ade847_lut,
    prepare_ade150,
    prepare_ade847,
    write_label_png,
)
from zegclip.data.transforms import eval_transform
from zegclip.data.verify import verify_dataset
from zegclip.data.vocabularies.ade20k import (
    ADE150_CLASSES,
    ADE847_CLASSES,
    ADE847_FULL_IDS,
    ADE847_FULL_NAMES,
)

A150 = Path("ADEChallengeData2016")
A847 = Path("ADE20K_2021_17_01")
CLI_ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}

# ADE-150: raw annotation (0 = other) -> reader label (0 -> 255, k -> k - 1), by hand
ADE150_RAW = np.array([[0, 1, 2, 150], [149, 75, 0, 10]])
ADE150_READ = np.array([[255, 0, 1, 149], [148, 74, 255, 9]])

# ADE-847, by hand: full-ADE index (R // 10 * 256 + G) -> label. 2978 wall -> 0; 312 building,
# edifice -> 1; 6 ad -> 263 (above 255); 603 control panel -> 768; 3148 adding machine -> 846;
# 0 (unlabelled), 1 and 5000 (no ADE-847 class) -> 65535. R gets 5 added at [0, 0] (R = 115:
# 115 // 10 = 11, still wall) and 9 at [0, 2] (R = 9: 9 // 10 = 0, still ad).
ADE847_FULL = np.array([[2978, 312, 6, 603], [3148, 0, 1, 5000], [2978, 2978, 312, 6]])
ADE847_R_EXTRA = np.array([[5, 0, 9, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
ADE847_LABEL = np.array([[0, 1, 263, 768], [846, 65535, 65535, 65535], [0, 0, 1, 263]])
# a 600 x 520 (W x H) image: shorter side 520 > 512 -> 512, longer round(600 / 520 * 512) = 591;
# left half wall (-> 0), right half ad (-> 263), resized by nearest neighbour
BIG_ID = "ADE_val_00000002"
BIG_FULL = np.where(np.arange(600)[None, :] < 300, 2978, 6) * np.ones((520, 1), dtype=np.int64)


def _prepare_847(raw: Path, out: Path, **kwargs) -> dict[str, np.ndarray]:
    maps = make_ade_full_raw(
        raw,
        maps={"ADE_val_00000001": ADE847_FULL, BIG_ID: BIG_FULL},
        r_extra={"ADE_val_00000001": ADE847_R_EXTRA},
        **kwargs,
    )
    assert prepare_ade847(raw, out, workers=1) == {"validation": 3}
    return maps


@pytest.fixture
def prepared_ade150(tmp_path: Path) -> Path:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade150_raw(raw, **ADE150_IDS, labels={"ADE_val_00000001": ADE150_RAW})
    prepare_ade150(raw, out)
    return out


@pytest.fixture
def prepared_ade847(tmp_path: Path) -> Path:
    out = tmp_path / "ade"
    _prepare_847(tmp_path / "raw", out)
    return out


# ------------------------------------------------------------------- vocabularies


def test_vocabularies_and_registration() -> None:
    assert len(ADE150_CLASSES) == 150 and len(ADE847_CLASSES) == len(ADE847_FULL_NAMES) == 847
    assert ADE150_CLASSES[:3] == ("wall", "building", "sky") and ADE150_CLASSES[7] == "bed"
    assert ADE150_CLASSES[-1] == "flag" and all(n == n.strip() for n in ADE150_CLASSES)
    # the sources' strings with synonyms; one prompt name per class: the first form
    assert ADE847_FULL_NAMES[1] == "building, edifice" and ADE847_CLASSES[1] == "building"
    assert ADE847_FULL_NAMES[11] == "person, individual, someone, somebody, mortal, soul"
    assert ADE847_CLASSES[11] == "person" and ADE847_CLASSES[846] == "adding machine"
    assert len(set(ADE847_FULL_IDS)) == 847 and ADE847_FULL_IDS[:3] == (2978, 312, 2420)
    ade150, ade847 = DATASETS["ade150"], DATASETS["ade847"]
    assert (ade150.num_classes, ade150.reduce_zero_label, ade150.ignore_index) == (150, True, 255)
    assert (ade847.num_classes, ade847.reduce_zero_label, ade847.ignore_index) == (847, False, 65535)
    assert ade847.eval_only and ade847.unseen_ids == () and ade150.unseen_ids == ()
    assert {"ade150", "ade847"} <= set(PREPARERS)


def test_layout_paths() -> None:
    root = Path("/data/ade")
    assert layouts.image_path("ade150", root, "X", "train") == root / A150 / "images/training/X.jpg"
    assert layouts.label_path("ade150", root, "X", "val") == root / A150 / "annotations/validation/X.png"
    assert layouts.image_path("ade847", root, "X", "val") == root / A847 / "images_detectron2/validation/X.jpg"
    assert layouts.label_path("ade847", root, "X", "validation") == (
        root / A847 / "annotations_detectron2/validation/X.png"
    )


def test_ade847_lut_table() -> None:
    lut = ade847_lut()
    assert lut.dtype == np.uint16
    assert (lut[2978], lut[312], lut[6], lut[603], lut[3148]) == (0, 1, 263, 768, 846)
    assert lut[0] == lut[1] == lut[5000] == 65535
    assert sorted(set(lut.tolist()) - {65535}) == list(range(847))


# ------------------------------------------------------------------- ADE20K-150


def test_ade150_from_archive(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    labels = make_ade150_raw(raw, **ADE150_IDS, labels={"ADE_val_00000001": ADE150_RAW})
    assert prepare_ade150(raw, out) == {"training": 2, "validation": 1}
    for split, ids in (("training", ADE150_IDS["train_ids"]), ("validation", ADE150_IDS["val_ids"])):
        for i in ids:
            assert (out / A150 / "images" / split / f"{i}.jpg").is_file()
            mode, arr = read_image(out / A150 / "annotations" / split / f"{i}.png")
            assert mode == "L"  # the raw annotation, linked as it is (mmsegmentation's layout)
            np.testing.assert_array_equal(arr, labels[i])
    assert sorted(p.name for p in raw.iterdir()) == [ADE150_ARCHIVE]  # nothing written outside --out
    assert (out / EXTRACT_DIR / ADE150_ARCHIVE / EXTRACT_STAMP).is_file()


def test_ade150_from_extracted_folder(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade150_raw(raw, **ADE150_IDS, labels={"ADE_val_00000001": ADE150_RAW}, archive=False)
    assert prepare_ade150(raw, out) == {"training": 2, "validation": 1}
    assert not (out / EXTRACT_DIR).exists()
    assert (raw / A150 / "images/validation/ADE_val_00000001.jpg").is_file()  # not moved
    np.testing.assert_array_equal(read_image(out / A150 / "annotations/validation/ADE_val_00000001.png")[1], ADE150_RAW)


def test_ade150_reader_reduces(prepared_ade150: Path) -> None:
    ds = build_dataset("ade150", prepared_ade150, "val")
    assert isinstance(ds, ADE150Seg) and ds.ids == ["ADE_val_00000001"]
    sample = ds[0]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (2, 4, 3)
    assert sample["label"].dtype == np.uint8
    np.testing.assert_array_equal(sample["label"], ADE150_READ)
    assert len(build_dataset("ade150", prepared_ade150, "train")) == 2
    assert build_dataset("ade150", prepared_ade150, "training").ids == ADE150_IDS["train_ids"]


def test_ade150_image_without_annotation_is_an_error(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade150_raw(raw, **ADE150_IDS, archive=False)
    (raw / A150 / "annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(PrepareError) as info:
        prepare_ade150(raw, out)
    assert f"{out / A150 / 'images/training'}: 1 of 2 ids, e.g. ADE_train_00000002 (no label)" in str(info.value)


def test_ade150_counts_warn_and_strict_fails(tmp_path: Path, caplog) -> None:
    raw = tmp_path / "raw"
    make_ade150_raw(raw, **ADE150_IDS)
    with caplog.at_level(logging.WARNING, logger="zegclip.data.prepare"):
        prepare_ade150(raw, tmp_path / "ade")
    assert "training 2 (official 20210); validation 1 (official 2000)" in caplog.text
    with pytest.raises(PrepareError, match="official"):
        prepare_ade150(raw, tmp_path / "ade", strict=True)


# ------------------------------------------------------------------- ADE20K-847


def test_ade847_labels_and_images(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    maps = _prepare_847(raw, out)
    labels, images = out / A847 / "annotations_detectron2/validation", out / A847 / "images_detectron2/validation"
    assert sorted(p.name for p in labels.iterdir()) == [f"{i}.png" for i in sorted(ADE_FULL_VAL)]
    mode, arr = read_image(labels / "ADE_val_00000001.png")
    assert mode == "I;16" and arr.dtype == np.uint16  # 16-bit grayscale PNG
    np.testing.assert_array_equal(arr, ADE847_LABEL)
    with Image.open(images / "ADE_val_00000001.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (4, 3))
    # the large image and its label: shorter side 512, longer 591
    with Image.open(images / f"{BIG_ID}.jpg") as im:
        assert (im.format, im.size) == ("JPEG", (591, 512))
    mode, big = read_image(labels / f"{BIG_ID}.png")
    assert mode == "I;16" and big.shape == (512, 591)
    assert (big[:, :290] == 0).all() and (big[:, 300:] == 263).all()
    # the third, default map: blocks of the same indices, through the same table
    np.testing.assert_array_equal(
        read_image(labels / "ADE_val_00000003.png")[1], ade847_lut()[maps["ADE_val_00000003"]]
    )
    # only the validation part of the release was extracted, and never the training images
    extracted = out / EXTRACT_DIR / ADE_FULL_ARCHIVE
    assert (extracted / A847 / "images/ADE/validation/urban/street" / f"{BIG_ID}_seg.png").is_file()
    assert not (extracted / A847 / "images/ADE/training").exists()
    assert not (extracted / A847 / "index_ade20k.pkl").exists()
    stamp = json.loads((extracted / EXTRACT_STAMP).read_text())
    assert stamp["members"] == "ADE20K_2021_17_01/images/ADE/validation/"
    assert not (images / "ADE_train_00000001.jpg").exists() and not (images / "ADE_frame_00000001.jpg").exists()


def test_ade847_from_extracted_folder(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    _prepare_847(raw, out, archive=False)
    assert not (out / EXTRACT_DIR).exists()
    label = out / A847 / "annotations_detectron2/validation/ADE_val_00000001.png"
    np.testing.assert_array_equal(read_image(label)[1], ADE847_LABEL)


def test_ade847_from_the_sites_download_name(tmp_path: Path, caplog) -> None:
    """ADE20K's site names the full release <username>_<hash>.zip (ODISE's data README): found by its content."""
    raw, out = tmp_path / "raw", tmp_path / "ade"
    raw.mkdir()
    make_ade150_raw(raw, **ADE150_IDS)  # another zip beside it, and a file that is no zip
    (raw / "notes.zip").write_text("not a zip")
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        _prepare_847(raw, out, archive="jdoe_5c1a0e7f.zip")
    assert f"{raw / 'jdoe_5c1a0e7f.zip'}: the ADE20K full release" in caplog.text
    label = out / A847 / "annotations_detectron2/validation/ADE_val_00000001.png"
    np.testing.assert_array_equal(read_image(label)[1], ADE847_LABEL)
    assert (out / EXTRACT_DIR / "jdoe_5c1a0e7f.zip" / A847 / "images/ADE/validation").is_dir()


def test_ade847_reader_returns_uint16(prepared_ade847: Path) -> None:
    ds = build_dataset("ade847", prepared_ade847, "validation")
    assert isinstance(ds, ADE847Seg) and ds.ids == sorted(ADE_FULL_VAL)
    sample = ds[0]
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (3, 4, 3)
    assert sample["label"].dtype == np.uint16
    np.testing.assert_array_equal(sample["label"], ADE847_LABEL)
    assert ds[1]["label"].shape == (512, 591)
    # through the evaluation pipeline: image resized, label kept at full size as int64, 65535 kept
    evaluated = build_dataset("ade847", prepared_ade847, "val", eval_transform(512))[0]
    assert evaluated["label"].dtype == torch.int64
    np.testing.assert_array_equal(evaluated["label"].numpy(), ADE847_LABEL)
    with pytest.raises(DatasetError, match="evaluation only"):
        build_dataset("ade847", prepared_ade847, "training")


def test_ade847_reader_refuses_8bit_and_out_of_range_labels(prepared_ade847: Path) -> None:
    label = prepared_ade847 / A847 / "annotations_detectron2/validation/ADE_val_00000001.png"
    write_label_png(np.full((3, 4), 5), label)  # 8-bit: 255 would read as a class
    ds = build_dataset("ade847", prepared_ade847, "val")
    with pytest.raises(DatasetError, match="16-bit"):
        ds[0]
    write_label_png(np.full((3, 4), 900), label, bits=16)
    with pytest.raises(DatasetError, match=r"values \[900\].*expected 0\.\.846 or 65535"):
        ds[0]


def test_ade847_rerun_is_resumable(tmp_path: Path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    _prepare_847(raw, out)
    labels = out / A847 / "annotations_detectron2/validation"
    kept, lost = labels / "ADE_val_00000001.png", labels / "ADE_val_00000003.png"
    kept_image = out / A847 / "images_detectron2/validation/ADE_val_00000001.jpg"
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (kept, kept_image)]
    lost.unlink()  # an interrupted run: one label missing, a half-written temporary left
    stale = labels / f".{lost.name}.12345.tmp"
    stale.write_bytes(b"half a png")
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        assert prepare_ade847(raw, out, workers=1) == {"validation": 3}
    assert "ADE-847 labels: 1 to write, 2 already done" in caplog.text
    assert "ADE-847 images: 0 to write, 3 already done" in caplog.text
    assert "extracting" not in caplog.text  # the extraction is reused
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (kept, kept_image)] == before
    assert lost.is_file() and not stale.exists()


def test_ade847_replaced_archive_is_extracted_and_converted_again(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    _prepare_847(raw, out)
    archive = raw / ADE_FULL_ARCHIVE
    old = archive.stat()
    new_map = np.full((3, 4), 3148)  # adding machine everywhere
    make_ade_full_raw(raw, maps={"ADE_val_00000001": new_map, BIG_ID: BIG_FULL})
    new = archive.stat()
    if (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns):  # coarse file-system clocks
        os.utime(archive, ns=(new.st_atime_ns, old.st_mtime_ns + 10**9))
    prepare_ade847(raw, out, workers=2)  # through multiprocessing.Pool
    label = out / A847 / "annotations_detectron2/validation/ADE_val_00000001.png"
    np.testing.assert_array_equal(read_image(label)[1], np.full((3, 4), 846))


def test_ade847_image_without_seg_is_an_error(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade_full_raw(raw, archive=False)
    (raw / A847 / "images/ADE/validation/urban/street/ADE_val_00000002_seg.png").unlink()
    with pytest.raises(PrepareError, match=r"1 of 3 ids, e\.g\. ADE_val_00000002 \(no ADE_val_00000002_seg\.png\)"):
        prepare_ade847(raw, out, workers=1)


# ------------------------------------------------------------------- errors on the command line


@pytest.mark.parametrize(("name", "archive"), [("ade150", ADE150_ARCHIVE), ("ade847", ADE_FULL_ARCHIVE)])
def test_missing_archive_is_oneerror_line(name: str, archive: str, tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    assert main([name, "--raw", str(raw), "--out", str(tmp_path / "ade")]) == 2
    err = error_line(capsys.readouterr().err)
    assert archive in err and str(raw / archive) in err and "not found" in err
    if name == "ade847":  # the site's own download name is accepted, and the line says so
        assert "under any name: a zip holding ADE20K_2021_17_01/images/ADE/validation/ is recognised" in err


@pytest.mark.parametrize("name", ["ade150", "ade847"])
def test_cut_archive_is_an_error(name: str, tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    archive = raw / (ADE150_ARCHIVE if name == "ade150" else ADE_FULL_ARCHIVE)
    make_ade150_raw(raw, **ADE150_IDS) if name == "ade150" else make_ade_full_raw(raw)
    cut_zip(archive, 0.6)  # the download stopped there: no central directory
    assert main([name, "--raw", str(raw), "--out", str(tmp_path / "ade"), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    assert f"{archive} is neither a tar nor a zip archive (incomplete or wrong download?)" in err


def test_wrong_archive_names_what_it_lacks(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    make_ade150_raw(raw, **ADE150_IDS)
    (raw / ADE150_ARCHIVE).rename(raw / ADE_FULL_ARCHIVE)  # the SceneParsing zip under the full release's name
    assert main(["ade847", "--raw", str(raw), "--out", str(tmp_path / "ade")]) == 2
    err = error_line(capsys.readouterr().err)
    assert f"{raw / ADE_FULL_ARCHIVE} is not the expected ADE20K full release" in err
    assert "ADE20K_2021_17_01/images/ADE/validation/" in err


def test_corrupt_seg_is_reported(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade_full_raw(raw, archive=False)
    (raw / A847 / "images/ADE/validation/home_or_hotel/bathroom/ADE_val_00000003_seg.png").write_bytes(b"no png")
    with pytest.raises(PrepareError, match=r"1 of 3 labels failed.*ADE_val_00000003"):
        prepare_ade847(raw, out, workers=1)
    assert (out / A847 / "annotations_detectron2/validation/ADE_val_00000001.png").is_file()  # the others written


# ------------------------------------------------------------------- verify


def test_verify_passes(prepared_ade150: Path, prepared_ade847: Path, capsys) -> None:
    # both in one data root, as conf/data/ade150.yaml and ade847.yaml have it
    assert prepared_ade150 == prepared_ade847
    for name in ("ade150", "ade847"):
        assert verify_dataset(name, prepared_ade150) == []
        assert verify_main([name, "--root", str(prepared_ade150)]) == 0
        out = capsys.readouterr().out
        assert "OK" in out and ("validation: " in out)


def test_verify_flags_8bit_and_out_of_range_ade847_labels(prepared_ade847: Path) -> None:
    labels = prepared_ade847 / A847 / "annotations_detectron2/validation"
    write_label_png(np.zeros((3, 4)), labels / "ADE_val_00000001.png")
    problems = verify_dataset("ade847", prepared_ade847)
    assert len(problems) == 1 and "not 16-bit index maps" in problems[0] and "ADE_val_00000001" in problems[0]
    write_label_png(np.full((3, 4), 900), labels / "ADE_val_00000001.png", bits=16)
    problems = verify_dataset("ade847", prepared_ade847)
    assert len(problems) == 1 and "outside 0..846 or 65535" in problems[0] and "[900]" in problems[0]


def test_verify_flags_ade150_values_above_150(prepared_ade150: Path) -> None:
    write_label_png(np.full((2, 4), 151), prepared_ade150 / A150 / "annotations/validation/ADE_val_00000001.png")
    problems = verify_dataset("ade150", prepared_ade150)
    assert len(problems) == 1 and "outside 0..150 or 255" in problems[0]


def test_module_routes(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "ade"
    make_ade_full_raw(raw)
    env = {**os.environ, **CLI_ENV}
    argv = ["ade847", "--raw", str(raw), "--out", str(out), "--workers", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "zegclip.data.prepare", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "ade847: {'validation': 3}" in proc.stderr and "Traceback" not in proc.stderr
    assert "warning: ade847: counts differ from the official ones: validation 3 (official 2000)" in proc.stderr
    assert f"ade847 prepared in {out}" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "zegclip.data.verify", "ade847", "--root", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    assert zipfile.is_zipfile(raw / ADE_FULL_ARCHIVE)  # the download is left as it was
