"""The verify command on prepared tiny datasets, clean and broken."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.exif import stored_pattern, write_oriented_jpeg
from zegclip.cli.verify import main
from zegclip.data import verify
from zegclip.data.prepare import write_label_png
from zegclip.data.verify import verify_dataset, verify_report

VOC = Path("VOCdevkit/VOC2012")
CTX = Path("VOCdevkit/VOC2010")


@pytest.mark.parametrize("name", ["voc", "coco_stuff", "context"])
def test_prepared_data_passes(name: str, request, capsys) -> None:
    root = request.getfixturevalue({"voc": "prepared_voc", "coco_stuff": "prepared_coco"}.get(name, "prepared_context"))
    assert verify_dataset(name, root) == []
    assert main([name, "--root", str(root)]) == 0
    assert "OK" in capsys.readouterr().out


def test_colour_label_is_flagged(prepared_voc: Path, capsys) -> None:
    label = prepared_voc / VOC / "SegmentationClass" / "2007_000004.png"
    with Image.open(label) as im:
        rgb = im.convert("RGB")
    label.unlink()  # the prepared file may be a hard link to the raw one
    rgb.save(label)
    problems = verify_dataset("voc", prepared_voc)
    assert len(problems) == 1
    assert "COLOUR" in problems[0] and "near-zero mIoU" in problems[0]
    assert "2007_000004.png" in problems[0]
    assert main(["voc", "--root", str(prepared_voc)]) == 1
    assert "COLOUR" in capsys.readouterr().out


def test_out_of_range_values_are_flagged(prepared_context: Path) -> None:
    label = prepared_context / CTX / "SegmentationClassContext" / "2008_000003.png"
    with Image.open(label) as im:
        arr = np.asarray(im).copy()
    arr[0, 0] = 60  # Context labels hold 0..59 only
    arr[0, 1] = 255
    write_label_png(arr, label)
    problems = verify_dataset("context", prepared_context)
    assert len(problems) == 1
    assert "outside 0..59" in problems[0] and "[60, 255]" in problems[0]


def test_missing_label_is_flagged(prepared_coco: Path) -> None:
    (prepared_coco / "coco_stuff164k/annotations/val2017/000000000139_labelTrainIds.png").unlink()
    problems = verify_dataset("coco_stuff", prepared_coco)
    assert problems == [
        "val2017: 1 of 1 ids have no label, e.g. "
        f"{prepared_coco / 'coco_stuff164k/annotations/val2017/000000000139_labelTrainIds.png'}"
    ]


def test_size_mismatch_is_flagged(prepared_voc: Path) -> None:
    write_label_png(np.zeros((5, 5), np.uint8), prepared_voc / VOC / "SegmentationClassAug/2008_000006.png")
    problems = verify_dataset("voc", prepared_voc)
    assert len(problems) == 1 and "differ in size" in problems[0]


def test_missing_split_list(prepared_voc: Path) -> None:
    (prepared_voc / VOC / "ImageSets/Segmentation/aug.txt").unlink()
    problems = verify_dataset("voc", prepared_voc)
    assert len(problems) == 1 and "aug.txt" in problems[0] and "prepare" in problems[0]


def test_single_value_labels(prepared_voc: Path, caplog, monkeypatch) -> None:
    for label in (prepared_voc / VOC).glob("SegmentationClass*/*.png"):
        with Image.open(label) as im:
            size = im.size
        label.unlink()
        write_label_png(np.zeros(size[::-1], np.uint8), label)
    # a tiny sample only warns
    with caplog.at_level(logging.WARNING, logger="zegclip.data.verify"):
        assert verify_dataset("voc", prepared_voc) == []
    assert "all 1920 sampled label pixels have value 0" in caplog.text
    # a sample of the size that counts is a problem
    monkeypatch.setattr(verify, "MIN_LABELS_FOR_HISTOGRAM", 8)
    problems = verify_dataset("voc", prepared_voc)
    assert len(problems) == 2
    assert "value 0" in problems[0] and "only 0 distinct classes" in problems[1]


def test_sample_is_deterministic(prepared_coco: Path) -> None:
    a = verify_report("coco_stuff", prepared_coco, sample=2)
    b = verify_report("coco_stuff", prepared_coco, sample=2)
    assert a.sampled == 2
    np.testing.assert_array_equal(a.histogram, b.histogram)


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.unlink()  # the prepared file may be a hard link to the raw one
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"<html>404 not found</html>")


@pytest.mark.parametrize(
    ("rel", "how"),
    [
        ("SegmentationClassAug/2008_000006.png", "truncated"),  # written by prepare
        ("SegmentationClass/2007_000004.png", "garbage"),  # linked from the archive
        ("JPEGImages/2007_000002.jpg", "truncated"),
        ("JPEGImages/2008_000007.jpg", "garbage"),
    ],
)
def test_undecodable_file_is_a_listed_problem(prepared_voc: Path, rel: str, how: str, capsys) -> None:
    bad = prepared_voc / VOC / rel
    _damage(bad, how)
    problems = verify_dataset("voc", prepared_voc)
    assert len(problems) == 1, problems
    assert "1 sampled file(s) cannot be decoded" in problems[0] and str(bad) in problems[0]
    assert main(["voc", "--root", str(prepared_voc)]) == 1
    captured = capsys.readouterr()
    assert "1 problem(s):" in captured.out and str(bad) in captured.out
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize("sample", ["-5", "0"])
def test_sample_below_one_is_an_error(prepared_voc: Path, sample: str, capsys) -> None:
    assert main(["voc", "--root", str(prepared_voc), "--sample", sample]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"error: --sample must be at least 1 (the number of labels to read), got {sample}"
    ]
    with pytest.raises(ValueError, match="at least 1"):
        verify_report("voc", prepared_voc, sample=int(sample))


def test_tagged_images_are_named_in_a_warning(prepared_voc: Path, capsys) -> None:
    image = prepared_voc / VOC / "JPEGImages" / "2007_000004.jpg"
    with Image.open(image) as im:
        width, height = im.size
    image.unlink()  # the prepared file may be a hard link to the raw one
    write_oriented_jpeg(image, stored_pattern(height, width), 6)
    report = verify_report("voc", prepared_voc)
    assert report.problems == []
    assert any("EXIF orientation tag" in w and "2007_000004.jpg (orientation 6" in w for w in report.warnings)
    assert main(["voc", "--root", str(prepared_voc)]) == 0
    assert "warning: 1 image(s) carry an EXIF orientation tag" in capsys.readouterr().out
