"""The on-disk layouts: the real (mmsegmentation 0.x) paths, and writers and readers agreeing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zegclip.data import layouts
from zegclip.data.datasets import build_dataset
from zegclip.data.prepare import dataset_items
from zegclip.data.synthetic import write_synthetic_voc

ROOT = Path("/data")


@pytest.mark.parametrize(
    ("name", "split", "image", "label"),
    [
        ("voc", "train", "VOCdevkit/VOC2012/JPEGImages/X.jpg", "VOCdevkit/VOC2012/SegmentationClass/X.png"),
        ("voc", "val", "VOCdevkit/VOC2012/JPEGImages/X.jpg", "VOCdevkit/VOC2012/SegmentationClass/X.png"),
        ("voc", "aug", "VOCdevkit/VOC2012/JPEGImages/X.jpg", "VOCdevkit/VOC2012/SegmentationClassAug/X.png"),
        ("synthetic", "aug", "VOCdevkit/VOC2012/JPEGImages/X.jpg", "VOCdevkit/VOC2012/SegmentationClassAug/X.png"),
        (
            "coco_stuff",
            "train2017",
            "coco_stuff164k/images/train2017/X.jpg",
            "coco_stuff164k/annotations/train2017/X_labelTrainIds.png",
        ),
        (
            "coco_stuff",
            "val",  # an alias of val2017
            "coco_stuff164k/images/val2017/X.jpg",
            "coco_stuff164k/annotations/val2017/X_labelTrainIds.png",
        ),
        ("context", "train", "VOCdevkit/VOC2010/JPEGImages/X.jpg", "VOCdevkit/VOC2010/SegmentationClassContext/X.png"),
        ("context60", "val", "VOCdevkit/VOC2010/JPEGImages/X.jpg", "VOCdevkit/VOC2010/SegmentationClassContext/X.png"),
    ],
)
def test_real_paths(name: str, split: str, image: str, label: str) -> None:
    assert layouts.image_path(name, ROOT, "X", split) == ROOT / image
    assert layouts.label_path(name, ROOT, "X", split) == ROOT / label


def test_real_split_lists() -> None:
    voc_sets = ROOT / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    for name in ("voc", "synthetic"):
        assert layouts.layout(name).splits == ("train", "val", "aug", "trainaug")
        assert layouts.split_file(name, ROOT, "trainaug") == voc_sets / "trainaug.txt"
    for name in ("context", "context60"):
        assert layouts.layout(name).splits == ("train", "val")
        assert layouts.split_file(name, ROOT, "val") == ROOT / "VOCdevkit/VOC2010/ImageSets/SegmentationContext/val.txt"
    assert layouts.layout("coco_stuff").splits == ("train2017", "val2017")
    with pytest.raises(ValueError, match="no split lists"):
        layouts.split_file("coco_stuff", ROOT, "train2017")
    assert layouts.reader_lists("voc", "train") == ("train", "aug")
    assert layouts.reader_lists("coco_stuff", "train") == ("train2017",)


def test_ambiguous_folders_are_refused() -> None:
    with pytest.raises(ValueError, match="trainaug merges train, aug"):
        layouts.label_dir("voc", ROOT, "trainaug")
    with pytest.raises(ValueError, match="name the split"):
        layouts.image_dir("coco_stuff", ROOT)
    with pytest.raises(KeyError, match="no on-disk layout"):
        layouts.layout("cityscapes")


def test_layouts_need_no_third_party_modules() -> None:
    code = (
        "import sys, zegclip.data.layouts;"
        "bad = [m for m in ('numpy', 'torch', 'PIL', 'cv2') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and ".raw_extract" not in p.parts}


def test_synthetic_writer_and_reader_share_the_layout(tmp_path: Path) -> None:
    root = write_synthetic_voc(tmp_path / "syn", num_train=6, num_val=2, size=48)
    rows = {split: layouts.split_items("synthetic", root, split) for split in layouts.layout("synthetic").splits}
    # every file written is a listed image, label or split list, and every listed one exists
    listed = {path for split_rows in rows.values() for _i, image, label in split_rows for path in (image, label)}
    lists = {layouts.split_file("synthetic", root, split) for split in rows}
    assert _files(root) == listed | lists
    assert [len(r) for r in rows.values()] == [2, 2, 4, 6]
    # the reader's train split is the train list then the aug list; trainaug mixes both folders
    assert build_dataset("synthetic", root, "train").samples == rows["train"] + rows["aug"]
    assert build_dataset("synthetic", root, "trainaug").samples == rows["trainaug"]
    folders = {label.parent.name for _i, _image, label in rows["trainaug"]}
    assert folders == {"SegmentationClass", "SegmentationClassAug"}


@pytest.mark.parametrize(
    ("name", "fixture", "reader_splits"),
    [
        ("voc", "prepared_voc", {"val": "val", "aug": "aug", "trainaug": "trainaug"}),
        ("coco_stuff", "prepared_coco", {"train": "train2017", "val2017": "val2017"}),
        ("context", "prepared_context", {"train": "train", "val": "val"}),
    ],
)
def test_prepared_files_are_found_by_verify_and_the_readers(
    name: str, fixture: str, reader_splits: dict[str, str], request
) -> None:
    root = request.getfixturevalue(fixture)
    items = dataset_items(name, root)
    # every listed file exists; every file written lies in a folder of the layout (prepare
    # also links images and official masks no list names)
    listed = {path for rows in items.values() for _i, image, label in rows for path in (image, label)}
    assert listed <= _files(root)
    folders = {path.parent for path in listed}
    if layouts.layout(name).split_dir:
        folders.add(layouts.split_dir(name, root))
    assert {path.parent for path in _files(root)} == folders
    for reader_split, split in reader_splits.items():
        assert build_dataset(name, root, reader_split).samples == items[split]
