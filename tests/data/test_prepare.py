"""Dataset preparation from tiny raw downloads in the real formats."""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.fake_raw import COCO_IDS, CONTEXT_IDS, VOC_IDS, make_coco_raw, make_context_raw, make_voc_raw
from zegclip.data.prepare import (
    EXTRACT_DIR,
    PrepareError,
    coco_stuff_lut,
    context_lut,
    main,
    prepare_coco_stuff,
    prepare_context,
    prepare_voc,
    read_split,
    rle_decode,
)

VOC = Path("VOCdevkit/VOC2012")
CTX = Path("VOCdevkit/VOC2010")


def _read(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


# ------------------------------------------------------------------- VOC


def _check_voc(out: Path, labels: dict) -> None:
    sets = out / VOC / "ImageSets" / "Segmentation"
    # hand-derived: full = {b, d, f, g, h}; VOC train {a, b, c}, val {d, e}
    a, b, c, d, e = (f"2007_00000{k}" for k in range(1, 6))
    f, g, h = "2008_000006", "2008_000007", "2008_000008"
    assert read_split(sets / "train.txt") == [a, b, c]
    assert read_split(sets / "val.txt") == [d, e]
    assert read_split(sets / "aug.txt") == [f, g, h]
    assert read_split(sets / "trainaug.txt") == [a, b, c, f, g, h]
    for i in (a, b, c, d, e, f, g, h):
        assert (out / VOC / "JPEGImages" / f"{i}.jpg").is_file()
    for i, expected in labels["voc"].items():  # official palette PNGs, unchanged
        mode, arr = _read(out / VOC / "SegmentationClass" / f"{i}.png")
        assert mode == "P"
        np.testing.assert_array_equal(arr, expected)
    assert sorted(p.stem for p in (out / VOC / "SegmentationClassAug").iterdir()) == [b, d, f, g, h]
    for i, expected in labels["sbd"].items():
        mode, arr = _read(out / VOC / "SegmentationClassAug" / f"{i}.png")
        assert mode == "L"
        np.testing.assert_array_equal(arr, expected)


def test_voc_from_archives(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    labels = make_voc_raw(raw, **VOC_IDS)
    counts = prepare_voc(raw, out, workers=2)  # through multiprocessing.Pool
    assert counts == {"train": 3, "val": 2, "aug": 3, "trainaug": 6}
    _check_voc(out, labels)
    # images are linked or copied, never moved; nothing written outside --out
    assert sorted(p.name for p in raw.iterdir()) == ["VOCtrainval_11-May-2012.tar", "benchmark.tgz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "raw"]
    assert (out / EXTRACT_DIR).is_dir()


def test_voc_from_extracted_folders(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    labels = make_voc_raw(raw, **VOC_IDS, archive=False)
    prepare_voc(raw, out, workers=1)
    _check_voc(out, labels)
    assert not (out / EXTRACT_DIR).exists()
    assert (raw / "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg").is_file()  # not moved


def test_rerun_skips_existing_and_distrusts_stale_tmp(raw_voc, prepared_voc: Path) -> None:
    aug = prepared_voc / VOC / "SegmentationClassAug"
    kept, lost = aug / "2008_000006.png", aug / "2008_000007.png"
    old = kept.stat().st_mtime_ns
    os.utime(kept, ns=(old - 10**9, old - 10**9))
    # an interrupted run: the label never reached its final name, a partial temp file remains
    lost.unlink()
    stale = aug / f".{lost.name}.12345.tmp"
    stale.write_bytes(b"half a png")
    prepare_voc(raw_voc[0], prepared_voc, workers=1)
    assert kept.stat().st_mtime_ns == old - 10**9  # skipped
    np.testing.assert_array_equal(_read(lost)[1], raw_voc[1]["sbd"]["2008_000007"])
    assert not stale.exists()


def test_missing_archive_is_one_clear_error(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(PrepareError, match="VOCtrainval_11-May-2012.tar"):
        prepare_voc(raw, tmp_path / "data")
    assert main(["voc", "--raw", str(raw), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ") and "VOCtrainval_11-May-2012.tar" in err[0]
    assert "Traceback" not in err[0]


def test_wrong_archive_contents_name_the_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_voc_raw(raw, **VOC_IDS)
    wrong = raw / "benchmark.tgz"
    wrong.unlink()
    with tarfile.open(wrong, "w:gz") as tf:  # a tar without benchmark_RELEASE/dataset
        tf.add(raw / "VOCtrainval_11-May-2012.tar", arcname="something_else.tar")
    with pytest.raises(PrepareError, match=r"benchmark\.tgz.*benchmark_RELEASE/dataset"):
        prepare_voc(raw, tmp_path / "data", workers=1)


def test_not_an_archive(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_voc_raw(raw, **VOC_IDS)
    (raw / "benchmark.tgz").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(PrepareError, match=r"benchmark\.tgz is neither a tar nor a zip"):
        prepare_voc(raw, tmp_path / "data", workers=1)


def test_count_mismatch_warns_and_strict_fails(raw_voc, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="zegclip.data.prepare"):
        prepare_voc(raw_voc[0], tmp_path / "data", workers=1)
    assert "train 3 (official 1464)" in caplog.text
    with pytest.raises(PrepareError, match="official"):
        prepare_voc(raw_voc[0], tmp_path / "data", workers=1, strict=True)
    argv = ["voc", "--raw", str(raw_voc[0]), "--out", str(tmp_path / "data"), "--strict"]
    assert main(argv) == 2
    assert main(argv[:-1]) == 0


# ------------------------------------------------------------------- COCO-Stuff


def test_coco_stuff_rank_mapping(tmp_path: Path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    # raw value -> train id by hand: rank among 0..181 minus {11, 25, 28, 29, 44, 65, 67, 68,
    # 70, 82, 90}: 0 -> 0; 12 -> 11 (11 missing below); 24 (giraffe) -> 23; 26 (backpack)
    # -> 24 (11, 25 missing below); 91 (banner) -> 80 (all 11 below); 181 (wood) -> 170;
    # 255 -> 255; 11 (missing, should not occur) -> 255; 200 (out of range) -> 255
    raw_map = np.array([[0, 12, 24, 26, 91], [181, 255, 11, 200, 10]])
    expected = np.array([[0, 11, 23, 24, 80], [170, 255, 255, 255, 10]])
    maps = {"000000000009": raw_map}
    make_coco_raw(raw, **COCO_IDS, maps=maps)
    with caplog.at_level(logging.WARNING, logger="zegclip.data.prepare"):
        counts = prepare_coco_stuff(raw, out, workers=1)
    assert counts == {"train2017": 2, "val2017": 1}
    mode, arr = _read(out / "coco_stuff164k/annotations/train2017/000000000009_labelTrainIds.png")
    assert mode == "L"
    np.testing.assert_array_equal(arr, expected)
    assert "2 pixels in 1 labels" in caplog.text
    for split, ids in (("train2017", COCO_IDS["train_ids"]), ("val2017", COCO_IDS["val_ids"])):
        for i in ids:
            assert (out / "coco_stuff164k/images" / split / f"{i}.jpg").is_file()
            assert (out / "coco_stuff164k/annotations" / split / f"{i}_labelTrainIds.png").is_file()


def test_coco_stuff_from_extracted_folders(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    maps = make_coco_raw(raw, **COCO_IDS, archive=False)
    prepare_coco_stuff(raw, out, workers=1)
    assert not (out / EXTRACT_DIR).exists()
    _, arr = _read(out / "coco_stuff164k/annotations/val2017/000000000139_labelTrainIds.png")
    np.testing.assert_array_equal(arr, coco_stuff_lut()[maps["000000000139"]])


def test_coco_stuff_lut_table() -> None:
    lut = coco_stuff_lut()
    assert lut.shape == (256,) and lut.dtype == np.uint8
    used = lut[lut != 255]
    np.testing.assert_array_equal(used, np.arange(171))  # increasing raw order
    assert lut[181] == 170 and lut[255] == 255 and lut[182] == 255


# ------------------------------------------------------------------- PASCAL Context


# full id -> value: 2 (aeroplane) -> 1, 9 (bag) -> 2, 458 (wood) -> 59, 284 (person) -> 37,
# 440 (wall) -> 56; 0 (unlabelled), 3, 100, 459 (not among the 59) -> 0
CONTEXT_FULL = np.array([[2, 9, 458, 284, 440], [0, 3, 100, 459, 2]])
CONTEXT_EXPECTED = np.array([[1, 2, 59, 37, 56], [0, 0, 0, 0, 1]])


@pytest.mark.parametrize("form", ["mat", "json"])
def test_context_mapping(tmp_path: Path, form: str) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS, form=form, full_maps={"2008_000002": CONTEXT_FULL})
    counts = prepare_context(raw, out, workers=1)
    assert counts == {"train": 2, "val": 1}
    mode, arr = _read(out / CTX / "SegmentationClassContext/2008_000002.png")
    assert mode == "L"
    np.testing.assert_array_equal(arr, CONTEXT_EXPECTED)
    sets = out / CTX / "ImageSets/SegmentationContext"
    assert read_split(sets / "train.txt") == ["2008_000002", "2008_000003"]
    assert read_split(sets / "val.txt") == ["2008_000007"]
    assert (out / CTX / "JPEGImages/2008_000007.jpg").is_file()


def test_context_lists_from_json_phase(tmp_path: Path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS, form="json", lists=False, archive=False)
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        assert prepare_context(raw, out, workers=2) == {"train": 2, "val": 1}
    assert "'phase'" in caplog.text


def test_context_lists_derived_from_voc2010(tmp_path: Path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS, form="mat", lists=False)
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_context(raw, out, workers=1)
    assert "derived them from VOC2010" in caplog.text
    sets = out / CTX / "ImageSets/SegmentationContext"
    # the unannotated ids of the Main lists are dropped
    assert read_split(sets / "train.txt") == CONTEXT_IDS["train_ids"]
    assert read_split(sets / "val.txt") == CONTEXT_IDS["val_ids"]


def test_context_missing_annotations(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_context_raw(raw, **CONTEXT_IDS)
    (raw / "trainval.tar.gz").unlink()
    with pytest.raises(PrepareError, match=r"trainval\.tar\.gz.*trainval_merged\.json"):
        prepare_context(raw, tmp_path / "data", workers=1)


def test_context_lut_table() -> None:
    lut = context_lut()
    assert lut[2] == 1 and lut[9] == 2 and lut[458] == 59
    assert lut[0] == 0 and lut[3] == 0 and lut[459] == 0
    assert sorted(set(lut.tolist())) == list(range(60))


def test_rle_decode_by_hand() -> None:
    # runs 1, 2, 1 down the columns of a 2x2 mask: column 0 = [0, 1], column 1 = [1, 0]
    np.testing.assert_array_equal(rle_decode({"size": [2, 2], "counts": "121"}), [[False, True], [True, False]])
    np.testing.assert_array_equal(rle_decode({"size": [2, 3], "counts": [0, 6]}), np.ones((2, 3), dtype=bool))


def test_corrupt_label_source_is_reported(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_voc_raw(raw, **VOC_IDS, archive=False)
    (raw / "benchmark_RELEASE/dataset/cls/2008_000007.mat").write_bytes(b"not a mat file")
    with pytest.raises(PrepareError, match=r"1 of 5 labels failed.*2008_000007"):
        prepare_voc(raw, out, workers=2)
    # every other label was written; the failed one is absent, not half-written
    assert (out / VOC / "SegmentationClassAug/2008_000006.png").is_file()
    assert not (out / VOC / "SegmentationClassAug/2008_000007.png").exists()
