"""PASCAL-Context with all 459 classes (``pc459``): vocabulary, preparation, verify and reader."""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.fake_raw import CONTEXT_IDS, Sink, mat_bytes
from tests.helpers.fake_raw_pc459 import (
    PC459_EXPECTED,
    PC459_EXPECTED_CONTEXT,
    PC459_FULL,
    PC459_VAL_ID,
    make_pc459_raw,
)
from tests.helpers.outputs import error_line, read_image
from zegclip.cli.prepare import main as prepare_main
from zegclip.cli.verify import main as verify_main
from zegclip.data import layouts
from zegclip.data.classes import CONTEXT_CLASSES, CONTEXT_FULL_IDS, DATASETS
from zegclip.data.datasets import Context459Seg, DatasetError, build_dataset
from zegclip.data.prepare import (
    OFFICIAL_COUNTS,
    PREPARERS,
    PrepareError,
    pc459_label,
    prepare_context,
    prepare_pc459,
    read_split,
    valid_label_values,
    write_label_png,
)
from zegclip.data.transforms import eval_transform
from zegclip.data.verify import verify_dataset
from zegclip.data.vocabularies.pascal_context import PASCAL_CONTEXT_459_CLASSES

CTX = Path("VOCdevkit/VOC2010")
LABELS = CTX / "SegmentationClassContext459"
VAL_LIST = CTX / "ImageSets/SegmentationContext/val.txt"


@pytest.fixture
def prepared_pc459(tmp_path: Path) -> Path:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    prepare_pc459(raw, out, workers=1)
    return out


# ------------------------------------------------------------------- vocabulary


def test_vocabulary_and_dataset_info() -> None:
    names = PASCAL_CONTEXT_459_CLASSES
    assert len(names) == len(set(names)) == 459
    assert names[:3] == ("accordion", "aeroplane", "air conditioner") and names[-1] == "wool"
    assert names[283] == "person" and names[457] == "wood"  # full ids 284, 458
    # the 59 Context classes sit at their full id - 1 (CONTEXT_FULL_IDS: the mmseg mapping)
    assert [names[i - 1] for i in CONTEXT_FULL_IDS] == list(CONTEXT_CLASSES)
    info = DATASETS["pc459"]
    assert info.class_names == names and info.num_classes == 459
    assert (info.unseen_ids, info.reduce_zero_label, info.ignore_index, info.eval_only) == ((), False, 65535, True)
    assert DATASETS["context"].ignore_index == 255 and not DATASETS["context"].eval_only


def test_label_mapping_by_hand() -> None:
    out = pc459_label(PC459_FULL)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, PC459_EXPECTED)
    for bad in (460, -1):
        with pytest.raises(ValueError, match=r"outside 0\.\.459"):
            pc459_label(np.array([[1, bad]]))


def test_layout_counts_and_valid_values() -> None:
    root = Path("/data")
    assert layouts.label_path("pc459", root, "X", "val") == root / LABELS / "X.png"
    assert layouts.image_path("pc459", root, "X", "val") == root / CTX / "JPEGImages/X.jpg"
    assert layouts.split_file("pc459", root, "val") == root / VAL_LIST  # Context's val list
    assert layouts.layout("pc459").splits == ("val",)
    assert OFFICIAL_COUNTS["pc459"] == {"val": 5104} == {"val": OFFICIAL_COUNTS["context"]["val"]}
    valid = valid_label_values("pc459")
    assert valid.shape == (65536,) and np.flatnonzero(valid).tolist() == [*range(459), 65535]
    assert valid_label_values("context").shape == (256,) and np.flatnonzero(valid_label_values("context")).max() == 59
    assert "pc459" in PREPARERS


# ------------------------------------------------------------------- preparation


@pytest.mark.parametrize(("form", "archive"), [("mat", True), ("mat", False), ("json", True)])
def test_prepare_writes_16bit_labels(tmp_path: Path, form: str, archive: bool) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, form=form, archive=archive)
    assert prepare_pc459(raw, out, workers=1) == {"val": 1}
    mode, arr = read_image(out / LABELS / f"{PC459_VAL_ID}.png")
    assert mode == "I;16" and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, PC459_EXPECTED)
    assert read_split(out / VAL_LIST) == CONTEXT_IDS["val_ids"]
    assert (out / CTX / "JPEGImages" / f"{PC459_VAL_ID}.jpg").is_file()
    # val only: no train labels, no train list
    assert sorted(p.name for p in (out / LABELS).iterdir()) == [f"{PC459_VAL_ID}.png"]
    assert not (out / CTX / "ImageSets/SegmentationContext/train.txt").exists()


@pytest.fixture
def fake_benchmark_count(monkeypatch):
    """The fake data's one val image counts as the benchmark's 5,104, so derived lists are taken."""
    from zegclip.data.prepare import context

    monkeypatch.setattr(context, "CONTEXT_VAL_IMAGES", len(CONTEXT_IDS["val_ids"]))


def test_val_list_from_json_phase_and_from_voc2010(tmp_path: Path, caplog, fake_benchmark_count) -> None:
    for form, archive, says in (("json", False, "'phase'"), ("mat", True, "ImageSets/Main/val.txt (the annotated")):
        raw, out = tmp_path / form / "raw", tmp_path / form / "data"
        make_pc459_raw(raw, form=form, lists=False, archive=archive)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
            assert prepare_pc459(raw, out, workers=2) == {"val": 1}
        assert says in caplog.text and "pc459: val ids from" in caplog.text
        assert read_split(out / VAL_LIST) == CONTEXT_IDS["val_ids"]
        np.testing.assert_array_equal(read_image(out / LABELS / f"{PC459_VAL_ID}.png")[1], PC459_EXPECTED)


@pytest.mark.parametrize("form", ["json", "mat"])
def test_a_derived_val_list_of_another_count_is_refused(tmp_path: Path, capsys, form: str) -> None:
    """VOC 2010's Main/val.txt holds 5,105 ids, the benchmark 5,104: a derived list must have 5,104."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, form=form, lists=False)
    assert prepare_main(["pc459", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith(f"error: pc459: no validation list of the 5,104 benchmark images in {raw} (")
    assert "ImageSets/Main/val.txt gives 1 annotated ids" in err and "pascalcontext_val.txt" in err
    if form == "json":
        assert f"the 'phase' of {raw / 'trainval_merged.json'} gives 1" in err
    assert not (out / VAL_LIST).exists()


def test_catseg_val_list_comes_first(tmp_path: Path, caplog) -> None:
    """pascalcontext_val.txt wins over the JSON's phase and over a Context val.txt, whatever its count."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, form="both", lists="catseg")
    other = raw / "pascal_context"
    other.mkdir()
    (other / "val.txt").write_text("".join(f"{i}\n" for i in CONTEXT_IDS["train_ids"]))  # not the benchmark's
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        assert prepare_pc459(raw, out, workers=1) == {"val": 1}
    assert f"pc459: val ids from {raw / 'pascalcontext_val.txt'}" in caplog.text
    assert read_split(out / VAL_LIST) == CONTEXT_IDS["val_ids"]


def test_the_json_phase_is_read_with_mat_files_too(tmp_path: Path, caplog, fake_benchmark_count) -> None:
    """docs/data.md: lists come from the lists in --raw, else from the JSON's phase, .mat files present or not."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, form="both", lists="val", listed_val=[PC459_VAL_ID, *CONTEXT_IDS["train_ids"]])
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        assert prepare_pc459(raw, out, workers=1) == {"val": 1}  # the JSON's phase before a val-only list
    assert f"val ids from the 'phase' of each image in {raw / 'trainval_merged.json'}" in caplog.text
    np.testing.assert_array_equal(read_image(out / LABELS / f"{PC459_VAL_ID}.png")[1], PC459_EXPECTED)  # from the .mat


def test_a_val_only_list_is_taken(tmp_path: Path) -> None:
    """A val.txt without train.txt (pc459 needs nothing else); a subset list is taken as it is."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, form="mat", lists="val", listed_val=[PC459_VAL_ID, CONTEXT_IDS["train_ids"][0]])
    assert prepare_pc459(raw, out, workers=1) == {"val": 2}
    assert read_split(out / VAL_LIST) == sorted([PC459_VAL_ID, CONTEXT_IDS["train_ids"][0]])


@pytest.mark.parametrize("form", ["mat", "json", "both"])
def test_the_open_vocabulary_repositories_layout(tmp_path: Path, form: str) -> None:
    """VOCdevkit/VOC2010/ holding trainval/, trainval_merged.json and pascalcontext_val.txt (CAT-Seg, ov-seg, ODISE)."""
    raw, out = tmp_path / "datasets", tmp_path / "data"
    make_pc459_raw(raw, form=form, lists="catseg", archive=False, layout="ov")
    assert sorted(p.name for p in (raw / CTX).iterdir()) == sorted(
        ["ImageSets", "JPEGImages", "pascalcontext_val.txt"]
        + (["trainval"] if form != "json" else [])
        + (["trainval_merged.json"] if form != "mat" else [])
    )
    assert prepare_pc459(raw, out, workers=1) == {"val": 1}
    np.testing.assert_array_equal(read_image(out / LABELS / f"{PC459_VAL_ID}.png")[1], PC459_EXPECTED)
    if form != "mat":  # Context's train ids from the JSON's phase
        assert prepare_context(raw, out, workers=1) == {"train": 2, "val": 1}
        assert read_split(out / CTX / "ImageSets/SegmentationContext/train.txt") == CONTEXT_IDS["train_ids"]


def test_context_and_pc459_share_one_out(tmp_path: Path) -> None:
    """Preparing pc459 next to Context leaves Context's files as they were; both verify."""
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    assert prepare_context(raw, out, workers=1) == {"train": 2, "val": 1}
    context_label = out / CTX / "SegmentationClassContext" / f"{PC459_VAL_ID}.png"
    before = context_label.read_bytes(), read_split(out / VAL_LIST)
    assert prepare_pc459(raw, out, workers=1) == {"val": 1}
    assert prepare_context(raw, out, workers=1) == {"train": 2, "val": 1}  # and again after
    assert (context_label.read_bytes(), read_split(out / VAL_LIST)) == before
    mode, arr = read_image(context_label)
    assert mode == "L"
    np.testing.assert_array_equal(arr, PC459_EXPECTED_CONTEXT)
    assert verify_dataset("context", out) == [] and verify_dataset("pc459", out) == []


def test_rerun_is_resumable(tmp_path: Path, caplog) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    prepare_pc459(raw, out, workers=1)
    label = out / LABELS / f"{PC459_VAL_ID}.png"
    before = label.stat()
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_pc459(raw, out, workers=1)
    assert "Context-459 labels: 0 to write, 1 already done" in caplog.text
    assert (label.stat().st_ino, label.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    label.unlink()  # a run stopped before this label was written
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zegclip.data.prepare"):
        prepare_pc459(raw, out, workers=1)
    assert "Context-459 labels: 1 to write, 0 already done" in caplog.text
    np.testing.assert_array_equal(read_image(label)[1], PC459_EXPECTED)


def test_cli_prepare_and_verify(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    assert prepare_main(["pc459", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert f"pc459 prepared in {out}: {{'val': 1}}" in captured.out
    assert "warning: pc459: counts differ from the official ones: val 1 (official 5104)" in captured.err
    assert verify_main(["pc459", "--root", str(out)]) == 0
    report = capsys.readouterr().out
    assert "val: 1 ids" in report and report.rstrip().endswith("OK")
    with pytest.raises(PrepareError, match=r"pc459: counts differ .* val 1 \(official 5104\) \(--strict\)"):
        prepare_pc459(raw, out, workers=1, strict=True)


@pytest.mark.parametrize("missing", ["trainval.tar.gz", "VOCtrainval_03-May-2010.tar"])
def test_missing_archive_is_oneerror_line(tmp_path: Path, capsys, missing: str) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    (raw / missing).unlink()
    assert prepare_main(["pc459", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    assert missing in err
    if missing == "trainval.tar.gz":
        assert "PASCAL-Context annotations not found" in err and "trainval_merged.json" in err
    else:
        assert "PASCAL VOC 2010 trainval not found" in err
    assert not (out / VAL_LIST).exists()


def test_wrong_archive_is_oneerror_line(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw)
    with Sink(raw / "trainval.tar.gz", "tgz") as sink:  # another download under the expected name
        sink.add("benchmark_RELEASE/dataset/cls/2008_000007.mat", mat_bytes({"GTcls": np.zeros((2, 2))}))
    assert prepare_main(["pc459", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "trainval.tar.gz is not the expected PASCAL-Context .mat annotations archive" in err


def test_not_a_full_context_map_is_an_error(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw", tmp_path / "data"
    make_pc459_raw(raw, full=np.array([[1, 460], [0, 2]], dtype=np.uint16))
    assert prepare_main(["pc459", "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "1 of 1 labels failed to convert" in err and "[460] outside 0..459" in err
    assert not (out / VAL_LIST).exists()


def test_val_list_naming_an_unannotated_image_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_pc459_raw(raw)
    with open(raw / "pascal_context/val.txt", "a") as f:
        f.write("2008_000010\n")  # in VOC 2010, without a Context annotation
    with tarfile.open(raw / "trainval.tar.gz") as tf:
        assert "trainval/2008_000010.mat" not in tf.getnames()
    with pytest.raises(PrepareError, match=r"val\.txt: 1 of 2 ids, e\.g\. 2008_000010 \(no annotation in "):
        prepare_pc459(raw, tmp_path / "data", workers=1)


# ------------------------------------------------------------------- verify


def test_verify_flags_8bit_and_out_of_range_labels(prepared_pc459: Path, capsys) -> None:
    label = prepared_pc459 / LABELS / f"{PC459_VAL_ID}.png"
    arr = read_image(label)[1].copy()
    arr[0, 0] = 459  # one past the last class
    write_label_png(arr, label, bits=16)
    problems = verify_dataset("pc459", prepared_pc459)
    assert len(problems) == 1 and "outside 0..458 or 65535 (values [459])" in problems[0]
    write_label_png(PC459_EXPECTED_CONTEXT, label)  # an 8-bit (Context) label in its place
    problems = verify_dataset("pc459", prepared_pc459)
    assert len(problems) == 1 and "not 16-bit index maps (mode I;16)" in problems[0] and "(L)" in problems[0]
    assert verify_main(["pc459", "--root", str(prepared_pc459)]) == 1


def test_verify_without_the_dataset(tmp_path: Path) -> None:
    (problem,) = verify_dataset("pc459", tmp_path)
    assert "no split list" in problem and "zegclip.data.prepare pc459" in problem


# ------------------------------------------------------------------- reader


def test_reader_returns_uint16_labels(prepared_pc459: Path) -> None:
    ds = build_dataset("pc459", prepared_pc459, "val")
    assert isinstance(ds, Context459Seg) and ds.info is DATASETS["pc459"] and ds.ids == [PC459_VAL_ID]
    sample = ds[0]
    assert sample["label"].dtype == np.uint16 and sample["image"].dtype == np.uint8
    np.testing.assert_array_equal(sample["label"], PC459_EXPECTED)  # stored reduced: read as they are
    assert sample["image"].shape == (*PC459_EXPECTED.shape, 3)
    # the evaluation pipeline keeps the label at its size, values included
    out = build_dataset("pc459", prepared_pc459, "val", eval_transform(8))[0]
    assert out["label"].dtype == torch.int64
    np.testing.assert_array_equal(out["label"].numpy(), PC459_EXPECTED.astype(np.int64))
    assert out["image"].dtype == torch.float32 and out["image"].shape[0] == 3


def test_reader_refuses_bad_labels_and_splits(prepared_pc459: Path) -> None:
    with pytest.raises(DatasetError, match="pc459 is evaluation only: its splits are val, not 'train'"):
        build_dataset("pc459", prepared_pc459, "train")
    label = prepared_pc459 / LABELS / f"{PC459_VAL_ID}.png"
    arr = PC459_EXPECTED.copy()
    arr[2, 5] = 1000
    write_label_png(arr, label, bits=16)
    with pytest.raises(DatasetError, match=r"label values \[1000\] are outside the pc459 classes; expected 0\.\.458"):
        build_dataset("pc459", prepared_pc459, "val")[0]
    write_label_png(PC459_EXPECTED_CONTEXT, label)
    with pytest.raises(DatasetError, match="has mode 'L'; expected a 16-bit grayscale PNG"):
        build_dataset("pc459", prepared_pc459, "val")[0]
    shutil.rmtree(prepared_pc459 / LABELS)
    with pytest.raises(DatasetError, match="label not found"):
        build_dataset("pc459", prepared_pc459, "val")
