"""Dataset preparation from tiny raw downloads in the real formats."""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.fake_raw import (
    COCO_IDS,
    CONTEXT_IDS,
    VOC_IDS,
    cut_tar,
    make_coco_raw,
    make_context_raw,
    make_voc_raw,
)
from tests.helpers.outputs import error_line, read_image
from zegclip.cli.prepare import main
from zegclip.data.prepare import (
    EXTRACT_DIR,
    EXTRACT_STAMP,
    VOC_ARCHIVE,
    PrepareError,
    coco_stuff_lut,
    context_lut,
    prepare_coco_stuff,
    prepare_context,
    prepare_voc,
    read_split,
    rle_decode,
)

VOC = Path("VOCdevkit/VOC2012")
CTX = Path("VOCdevkit/VOC2010")
CLI_ENV = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}


def _not_jpeg(name: str) -> bool:
    return "/JPEGImages/" not in name


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
        mode, arr = read_image(out / VOC / "SegmentationClass" / f"{i}.png")
        assert mode == "P"
        np.testing.assert_array_equal(arr, expected)
    assert sorted(p.stem for p in (out / VOC / "SegmentationClassAug").iterdir()) == [b, d, f, g, h]
    for i, expected in labels["sbd"].items():
        mode, arr = read_image(out / VOC / "SegmentationClassAug" / f"{i}.png")
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
    before = kept.stat()
    # an interrupted run: the label never reached its final name, a partial temp file remains
    lost.unlink()
    stale = aug / f".{lost.name}.12345.tmp"
    stale.write_bytes(b"half a png")
    prepare_voc(raw_voc[0], prepared_voc, workers=1)
    after = kept.stat()  # skipped: a rewrite goes through a new file (new inode, new mtime)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_array_equal(read_image(lost)[1], raw_voc[1]["sbd"]["2008_000007"])
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


def test_workers_below_one_is_an_error(raw_voc, tmp_path: Path, capsys) -> None:
    assert main(["voc", "--raw", str(raw_voc[0]), "--out", str(tmp_path / "data"), "--workers", "0"]) == 2
    assert "--workers" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "data").exists()


def test_voc_tar_cut_at_member_boundary_is_an_error(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_voc_raw(raw, **VOC_IDS)
    # the download stopped after the 3rd of the 8 images; the lists and labels came before them
    with tarfile.open(raw / VOC_ARCHIVE) as tf:
        n_other = sum(_not_jpeg(m.name) for m in tf)
    kept = cut_tar(raw / VOC_ARCHIVE, n_other + 3, first=_not_jpeg)
    assert sum(not _not_jpeg(k) for k in kept) == 3
    with tarfile.open(raw / VOC_ARCHIVE) as tf:  # still a valid tar, just shorter
        assert sum(not _not_jpeg(m.name) for m in tf) == 3

    argv = ["voc", "--raw", str(raw), "--out", str(out), "--workers", "1"]
    assert main(argv) == 2
    err = error_line(capsys.readouterr().err)
    sets = out / VOC / "ImageSets" / "Segmentation"
    # names each split list, the count and a few ids; the images a, b, c came through
    assert f"{sets / 'val.txt'}: 2 of 2 ids, e.g. 2007_000004 (no image), 2007_000005 (no image)" in err
    assert f"{sets / 'aug.txt'}: 3 of 3 ids" in err
    assert f"{sets / 'trainaug.txt'}: 3 of 6 ids, e.g. 2008_000006 (no image)" in err
    assert f"{sets / 'train.txt'}:" not in err
    assert "4 split list(s)" not in err and "3 split list(s)" in err
    # nothing prepared is lost, and no list naming missing files was written
    assert len(list((out / VOC / "JPEGImages").glob("*.jpg"))) == 3
    assert len(list((out / VOC / "SegmentationClassAug").glob("*.png"))) == 5
    assert not sets.exists()
    with pytest.raises(PrepareError, match=r"val\.txt: 2 of 2 ids"):
        prepare_voc(raw, out, workers=1)

    # the full download replaces the cut one: extracted again, prepared completely
    labels = make_voc_raw(raw, **VOC_IDS)
    assert main(argv) == 0
    _check_voc(out, labels)


def test_sbd_list_naming_missing_mat_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_voc_raw(raw, **VOC_IDS, archive=False)
    (raw / "benchmark_RELEASE/dataset/cls/2008_000008.mat").unlink()
    with pytest.raises(PrepareError, match=r"1 of 5 ids, e\.g\. 2008_000008 \(no cls/2008_000008\.mat\)"):
        prepare_voc(raw, tmp_path / "data", workers=1)


def _replace_archives(raw: Path, make) -> None:
    """Write the raw archives again with ``make``; make sure each one's size or mtime changed.

    (A new download has a new mtime; on a file system with coarse timestamps the rewrite
    could keep the old one, which the stamp rightly cannot tell from the same archive.)
    """
    old = {p: p.stat() for p in raw.iterdir() if p.is_file()}
    make()
    for p, st in old.items():
        new = p.stat()
        if (new.st_size, new.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
            os.utime(p, ns=(new.st_atime_ns, st.st_mtime_ns + 10**9))


def test_replaced_archive_is_extracted_again(raw_voc, prepared_voc: Path) -> None:
    raw, out = raw_voc[0], prepared_voc
    extracted = out / EXTRACT_DIR / VOC_ARCHIVE
    assert (extracted / EXTRACT_STAMP).is_file()
    stale = extracted / "VOCdevkit/VOC2012/JPEGImages/stale_member.jpg"
    stale.write_bytes(b"only in the old archive")
    old_jpeg = (out / VOC / "JPEGImages/2007_000001.jpg").read_bytes()

    new_labels = {}
    _replace_archives(raw, lambda: new_labels.update(make_voc_raw(raw, **VOC_IDS, seed=1)))
    assert not np.array_equal(new_labels["sbd"]["2008_000006"], raw_voc[1]["sbd"]["2008_000006"])
    assert not np.array_equal(new_labels["voc"]["2007_000001"], raw_voc[1]["voc"]["2007_000001"])
    prepare_voc(raw, out, workers=1)

    assert not stale.exists()  # the old extraction was removed first
    _check_voc(out, new_labels)  # new official and SBD labels, not the old ones
    with tarfile.open(raw / VOC_ARCHIVE) as tf:
        new_jpeg = tf.extractfile("VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg").read()
    assert new_jpeg != old_jpeg
    assert (out / VOC / "JPEGImages/2007_000001.jpg").read_bytes() == new_jpeg


def test_unchanged_archive_reuses_its_extraction(raw_voc, prepared_voc: Path, caplog) -> None:
    extracted = prepared_voc / EXTRACT_DIR / VOC_ARCHIVE
    out_file = extracted / "VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg"
    ino = out_file.stat().st_ino
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_voc(raw_voc[0], prepared_voc, workers=1)
    assert out_file.stat().st_ino == ino
    assert "extracting" not in caplog.text
    # an extraction without a record (an older version's, or an interrupted one) is not trusted
    (extracted / EXTRACT_STAMP).unlink()
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_voc(raw_voc[0], prepared_voc, workers=1)
    assert "holds no record of the archive" in caplog.text
    assert (extracted / EXTRACT_STAMP).is_file()
    assert out_file.stat().st_ino != ino


def test_module_route_prints_info_and_warning_lines(raw_voc, tmp_path: Path) -> None:
    out = tmp_path / "data"
    argv = ["voc", "--raw", str(raw_voc[0]), "--out", str(out), "--workers", "2"]
    proc = subprocess.run(
        [sys.executable, "-m", "zegclip.data.prepare", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **CLI_ENV},
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in re.split(r"[\r\n]+", proc.stderr) if line]
    assert "SBD -> SegmentationClassAug: 5 to write, 0 already done" in lines  # INFO
    assert "voc: {'train': 3, 'val': 2, 'aug': 3, 'trainaug': 6}" in lines  # INFO
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and "voc: counts differ from the official ones: train 3 (official 1464)" in warnings[0]
    assert "Traceback" not in proc.stderr
    assert f"voc prepared in {out}" in proc.stdout
    assert (out / VOC / "ImageSets/Segmentation/trainaug.txt").is_file()


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
    mode, arr = read_image(out / "coco_stuff164k/annotations/train2017/000000000009_labelTrainIds.png")
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
    _, arr = read_image(out / "coco_stuff164k/annotations/val2017/000000000139_labelTrainIds.png")
    np.testing.assert_array_equal(arr, coco_stuff_lut()[maps["000000000139"]])


def test_coco_stuff_image_without_stuff_map_is_an_error(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_coco_raw(raw, **COCO_IDS, archive=False)
    (raw / "stuffthingmaps_trainval2017/train2017/000000000025.png").unlink()
    with pytest.raises(PrepareError) as info:
        prepare_coco_stuff(raw, out, workers=1)
    msg = str(info.value)
    assert f"{out / 'coco_stuff164k/images/train2017'}: 1 of 2 ids, e.g. 000000000025 (no label)" in msg
    assert (out / "coco_stuff164k/annotations/train2017/000000000009_labelTrainIds.png").is_file()  # kept


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
    mode, arr = read_image(out / CTX / "SegmentationClassContext/2008_000002.png")
    assert mode == "L"
    np.testing.assert_array_equal(arr, CONTEXT_EXPECTED)
    sets = out / CTX / "ImageSets/SegmentationContext"
    assert read_split(sets / "train.txt") == ["2008_000002", "2008_000003"]
    assert read_split(sets / "val.txt") == ["2008_000007"]
    assert (out / CTX / "JPEGImages/2008_000007.jpg").is_file()


@pytest.fixture
def fake_benchmark_count(monkeypatch):
    """The fake data's one val image counts as the benchmark's 5,104, so derived lists are taken."""
    from zegclip.data.prepare import context

    monkeypatch.setattr(context, "CONTEXT_VAL_IMAGES", len(CONTEXT_IDS["val_ids"]))


def test_context_lists_from_json_phase(tmp_path: Path, caplog, fake_benchmark_count) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS, form="json", lists=False, archive=False)
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        assert prepare_context(raw, out, workers=2) == {"train": 2, "val": 1}
    assert "context: train ids from the 'phase'" in caplog.text and "context: val ids from the 'phase'" in caplog.text


def test_context_lists_derived_from_voc2010(tmp_path: Path, caplog, fake_benchmark_count) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS, form="mat", lists=False)
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_context(raw, out, workers=1)
    assert "ImageSets/Main/train.txt (the annotated ids among them)" in caplog.text
    sets = out / CTX / "ImageSets/SegmentationContext"
    # the unannotated ids of the Main lists are dropped
    assert read_split(sets / "train.txt") == CONTEXT_IDS["train_ids"]
    assert read_split(sets / "val.txt") == CONTEXT_IDS["val_ids"]


def test_context_voc2010_tar_cut_short_is_an_error(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_context_raw(raw, **CONTEXT_IDS)
    tar = raw / "VOCtrainval_03-May-2010.tar"
    with tarfile.open(tar) as tf:
        n_other = sum(_not_jpeg(m.name) for m in tf)
    cut_tar(tar, n_other + 2, first=_not_jpeg)  # images 2008_000002, 2008_000003 only
    assert main(["context", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    sets = out / CTX / "ImageSets/SegmentationContext"
    assert f"{sets / 'val.txt'}: 1 of 1 ids, e.g. 2008_000007 (no image)" in err
    assert "1 split list(s)" in err and str(raw / "pascal_context/val.txt") in err
    assert not sets.exists()


def test_context_list_naming_unannotated_id_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_context_raw(raw, **CONTEXT_IDS)
    with open(raw / "pascal_context/train.txt", "a") as f:
        f.write("2008_000010\n")  # an image without a Context annotation
    with pytest.raises(PrepareError, match=r"train\.txt: 1 of 3 ids, e\.g\. 2008_000010 \(no annotation in "):
        prepare_context(raw, tmp_path / "data", workers=1)


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


# --------------------------------------------------------------------------- archives that point outside


def _tar(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    """A tar of ``(kind, name, content or link target)``; kind: file, dir, sym, hard, fifo."""
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
    kinds["fifo"] = tarfile.FIFOTYPE
    with tarfile.open(path, "w") as tf:
        for kind, name, value in entries:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            info.mode = 0o6777 if kind == "file" else 0o755  # set-id bits and world-writable: never kept
            data = value.encode() if kind == "file" else b""
            if kind in ("sym", "hard"):
                info.linkname = value
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


EVIL = {
    "absolute": [("file", "{outside}/evil.txt", "x")],
    "dotdot": [("file", "../evil.txt", "x")],
    "dotdot_inside": [("dir", "sub", ""), ("file", "sub/../../evil.txt", "x")],
    "symlink_absolute": [("sym", "link", "{outside}"), ("file", "link/evil.txt", "x")],
    "symlink_up": [("sym", "up", ".."), ("file", "up/evil.txt", "x")],
    "hardlink_out": [("hard", "hard", "../outside_file.txt")],
    "hardlink_absolute": [("hard", "hard", "{outside}/outside_file.txt")],
    # each link alone stays inside; the second, written through the first, would not
    "symlink_through_symlink": [
        ("dir", "p/q", ""),
        ("sym", "p/q/d", "../../r"),
        ("dir", "r", ""),
        ("sym", "p/q/d/l", "../../../evil"),
        ("file", "p/q/d/l/evil.txt", "x"),
    ],
    "fifo": [("fifo", "pipe", "")],
}


@pytest.mark.parametrize("filter_available", [False, True], ids=["no_data_filter", "data_filter"])
@pytest.mark.parametrize("case", sorted(EVIL))
def test_tar_members_pointing_outside_are_refused(tmp_path: Path, monkeypatch, case: str, filter_available) -> None:
    """Whatever the Python: the data filter forced off (3.10.0-3.10.11, 3.11.0-3.11.3) changes nothing."""
    from zegclip.data.prepare.files import _extract

    if not filter_available:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "outside_file.txt").write_text("the user's file")
    (outside / "outside_file.txt").write_text("the user's file")
    entries = [(kind, name.format(outside=outside), value.format(outside=outside)) for kind, name, value in EVIL[case]]
    (tmp_path / "raw").mkdir()
    archive = _tar(tmp_path / "raw" / "evil.tar", entries)
    out = tmp_path / "out" / "x" / "y"  # deep enough that ../ lands in tmp_path/out, watched below
    out.mkdir(parents=True)
    with pytest.raises(PrepareError) as caught:
        _extract(archive, out)
    assert str(caught.value).startswith(f"refusing to extract {archive}: member ")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*evil*") if p != archive)
    assert written == [], written
    assert (tmp_path / "outside_file.txt").read_text() == "the user's file"
    assert sorted(p.name for p in outside.iterdir()) == ["outside_file.txt"]
    assert not (out / "evil.tar").exists() and not (out / "evil.tar.partial").exists()  # nothing half-done kept


def test_tar_without_the_data_filter_refuses_by_its_own_check(tmp_path: Path, monkeypatch) -> None:
    from zegclip.data.prepare.files import _extract

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (tmp_path / "raw").mkdir()
    archive = _tar(tmp_path / "raw" / "evil.tar", [("file", "ok.txt", "fine"), ("sym", "up", "..")])
    with pytest.raises(PrepareError, match=r"member 'up' is a link to \.\., outside the extraction folder$"):
        _extract(archive, tmp_path / "out")
    archive = _tar(tmp_path / "raw" / "abs.tar", [("file", "/etc/zegclip_evil", "x")])
    with pytest.raises(PrepareError, match=r"member '/etc/zegclip_evil' is an absolute path$"):
        _extract(archive, tmp_path / "out")
    assert not Path("/etc/zegclip_evil").exists()


@pytest.mark.parametrize("filter_available", [False, True], ids=["no_data_filter", "data_filter"])
def test_tar_links_inside_the_archive_extract(tmp_path: Path, monkeypatch, filter_available) -> None:
    from zegclip.data.prepare.files import _extract

    if not filter_available:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile data filter")
    (tmp_path / "raw").mkdir()
    entries = [
        ("dir", "data", ""),
        ("file", "data/a.txt", "content"),
        ("sym", "data/link.txt", "a.txt"),
        ("hard", "data/hard.txt", "data/a.txt"),
    ]
    dest = _extract(_tar(tmp_path / "raw" / "ok.tar", entries), tmp_path / "out")
    assert (dest / "data" / "link.txt").read_text() == (dest / "data" / "hard.txt").read_text() == "content"
    mode = (dest / "data" / "a.txt").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH)
