"""Dataset readers: layouts, label reduction, setting remaps and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.exif import ORIENTATIONS, decoded_as_stored, stored_pattern, write_oriented_jpeg
from tests.helpers.fake_data import (
    fake_label,
    write_fake_coco_stuff,
    write_fake_context,
    write_fake_voc,
)
from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX
from zegclip.data.classes import DATASETS
from zegclip.data.datasets import (
    COCOStuffSeg,
    ContextSeg,
    DatasetError,
    VOCSeg,
    build_dataset,
    read_image,
    setting_label_lut,
    train_class_ids,
)

VOC = Path("VOCdevkit/VOC2012")


# fresh tiny datasets per test: several tests break them on purpose
@pytest.fixture
def fake_voc(tmp_path: Path) -> Path:
    return write_fake_voc(tmp_path / "voc")


@pytest.fixture
def fake_coco(tmp_path: Path) -> Path:
    return write_fake_coco_stuff(tmp_path / "coco")


@pytest.fixture
def fake_context(tmp_path: Path) -> Path:
    return write_fake_context(tmp_path / "context")


def test_voc_train_is_train_plus_aug_and_reduces_labels(fake_voc: Path) -> None:
    ds = VOCSeg(fake_voc, "train")
    assert ds.ids == ["2007_000000", "2007_000001", "2007_000002", "2007_000003"]
    sample = ds[0]
    image, label = sample["image"], sample["label"]
    assert image.dtype == np.uint8 and image.shape == (64, 80, 3)
    assert label.dtype == np.uint8 and label.shape == (64, 80)
    # raw quadrants 0 | 1 / 17 | 255  ->  255 | 0 / 16 | 255
    assert label[0, 0] == 255 and label[0, -1] == 0
    assert label[-1, 0] == 16 and label[-1, -1] == 255
    # image 3 comes from aug.txt (grayscale SegmentationClassAug): raw 1 + 3 % 3 = 1
    aug = ds[3]
    assert aug["id"] == "2007_000003"
    assert aug["label"][0, -1] == 0 and aug["label"][-1, 0] == 16


def test_voc_val_reads_palette_indices(fake_voc: Path) -> None:
    ds = VOCSeg(fake_voc, "val")
    assert len(ds) == 2
    raw = fake_label("voc", 5)  # val is images 4, 5
    expected = np.where(raw == 0, 255, np.where(raw == 255, 255, raw - 1)).astype(np.uint8)
    np.testing.assert_array_equal(ds[1]["label"], expected)
    with Image.open(fake_voc / VOC / "SegmentationClass" / "2007_000005.png") as png:
        assert png.mode == "P"


def test_coco_stuff_keeps_train_ids_and_accepts_aliases(fake_coco: Path) -> None:
    ds = COCOStuffSeg(fake_coco, "train")
    assert ds.ids == sorted(ds.ids) and len(ds) == 2
    np.testing.assert_array_equal(ds[1]["label"], fake_label("coco_stuff", 1))
    assert len(COCOStuffSeg(fake_coco, "val2017")) == 2


def test_context_reduces_zero_label(fake_context: Path) -> None:
    label = ContextSeg(fake_context, "train")[0]["label"]
    # raw 0 | 1 / 7 | 59 -> 255 | 0 / 6 | 58
    assert label[0, 0] == 255 and label[0, -1] == 0 and label[-1, 0] == 6 and label[-1, -1] == 58
    assert len(ContextSeg(fake_context, "val")) == 2


def test_build_dataset_dispatch_and_transform(fake_voc: Path, fake_context: Path) -> None:
    assert isinstance(build_dataset("context", fake_context, "val"), ContextSeg)

    def transform(image: np.ndarray, mask: np.ndarray) -> dict:
        return {"image": image[:4], "mask": mask[:4] + 1}

    ds = build_dataset("voc", fake_voc, "val", transform)
    assert isinstance(ds, VOCSeg) and ds[0]["image"].shape[0] == 4
    assert ds[0]["label"][0, -1] == 2  # raw 2 (image 4), reduced 1, then the transform's + 1
    with pytest.raises(KeyError, match="unknown dataset"):
        build_dataset("ade", fake_voc, "val")


# --- bad input -------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="VOC2012"):
        VOCSeg(tmp_path / "nowhere", "train")
    with pytest.raises(DatasetError, match="coco_stuff164k"):
        COCOStuffSeg(tmp_path, "train")


def test_missing_split_file(fake_voc: Path, fake_context: Path) -> None:
    (fake_voc / VOC / "ImageSets/Segmentation/aug.txt").unlink()
    with pytest.raises(DatasetError, match=r"aug\.txt.*split file"):
        VOCSeg(fake_voc, "train")
    with pytest.raises(DatasetError, match=r"test\.txt"):
        ContextSeg(fake_context, "test")


def test_image_without_label(fake_voc: Path, fake_coco: Path) -> None:
    (fake_voc / VOC / "SegmentationClassAug/2007_000002.png").unlink()
    with pytest.raises(DatasetError, match=r"2007_000002\.png: label not found"):
        VOCSeg(fake_voc, "train")
    label_dir = fake_coco / "coco_stuff164k/annotations/val2017"
    next(label_dir.iterdir()).unlink()
    with pytest.raises(DatasetError, match="_labelTrainIds.png: label not found"):
        COCOStuffSeg(fake_coco, "val")


def test_label_without_image(fake_context: Path) -> None:
    (fake_context / "VOCdevkit/VOC2010/JPEGImages/2008_000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"2008_000001\.jpg: image not found"):
        ContextSeg(fake_context, "train")


def test_size_mismatch(fake_voc: Path) -> None:
    path = fake_voc / VOC / "SegmentationClass/2007_000004.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(path)
    ds = VOCSeg(fake_voc, "val")  # existence only at construction
    with pytest.raises(DatasetError, match=r"2007_000004\.png.*12x10.*expected equal sizes"):
        ds[0]


def test_label_values_outside_classes(fake_voc: Path, fake_context: Path) -> None:
    path = fake_voc / VOC / "SegmentationClass/2007_000004.png"
    label = fake_label("voc", 4)
    label[0, 0] = 21  # VOC raw values are 0..20 and 255
    Image.fromarray(label).save(path)
    with pytest.raises(DatasetError, match=r"2007_000004\.png: label values \[21\]"):
        VOCSeg(fake_voc, "val")[0]
    path = fake_context / "VOCdevkit/VOC2010/SegmentationClassContext/2008_000000.png"
    label = fake_label("context", 0)
    label[5, 5] = 60
    Image.fromarray(label).save(path)
    with pytest.raises(DatasetError, match=r"2008_000000\.png: label values \[60\]"):
        ContextSeg(fake_context, "train")[0]


def test_unreadable_image(fake_coco: Path) -> None:
    path = sorted((fake_coco / "coco_stuff164k/images/train2017").iterdir())[0]
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=rf"{path.name}: cannot decode image"):
        COCOStuffSeg(fake_coco, "train")[0]


def test_colour_label_rejected(fake_voc: Path) -> None:
    path = fake_voc / VOC / "SegmentationClass/2007_000000.png"
    with Image.open(path) as png:
        rgb = png.convert("RGB")
    rgb.save(path)
    with pytest.raises(DatasetError, match=r"2007_000000\.png: this is a colour \(RGB\) label"):
        VOCSeg(fake_voc, "train")[0]


# --- settings -------------------------------------------------------------------------

# hand-made reduced VOC label: seen 0 and 14, unseen 15 and 19, ignore 255
HAND = np.array([[0, 14, 15], [19, 255, 3]], dtype=np.uint8)


def test_inductive_lut_ignores_unseen_and_compacts_seen() -> None:
    lut = setting_label_lut(DATASETS["voc"], "inductive")
    np.testing.assert_array_equal(lut[HAND], [[0, 14, 255], [255, 255, 3]])
    # COCO: seen ids skip the unseen ones, so 20 (elephant) becomes 19
    coco = setting_label_lut(DATASETS["coco_stuff"], "inductive")
    assert coco[18] == 18 and coco[19] == IGNORE_INDEX and coco[20] == 19 and coco[170] == 155
    assert train_class_ids(DATASETS["coco_stuff"], "inductive")[19] == 20


def test_transductive_lut_hides_unseen() -> None:
    lut = setting_label_lut(DATASETS["voc"], "transductive")
    expected = [[0, 14, HIDDEN_INDEX], [HIDDEN_INDEX, IGNORE_INDEX, 3]]
    np.testing.assert_array_equal(lut[HAND], expected)


def test_fully_lut_is_identity_on_classes() -> None:
    lut = setting_label_lut(DATASETS["voc"], "fully")
    np.testing.assert_array_equal(lut[HAND], HAND)
    assert train_class_ids(DATASETS["voc"], "fully") == tuple(range(20))
    with pytest.raises(ValueError, match="unknown setting"):
        setting_label_lut(DATASETS["voc"], "zero")


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_labelled_images_are_read_as_stored_whatever_the_exif_tag(fake_voc: Path, orientation: int) -> None:
    """A phone photo tagged 3, 6 or 8 is read as its pixels are stored, as its label is drawn."""
    sample_id = VOCSeg(fake_voc, "val").ids[0]
    image_path = fake_voc / VOC / "JPEGImages" / f"{sample_id}.jpg"
    with Image.open(fake_voc / VOC / "SegmentationClass" / f"{sample_id}.png") as label:
        width, height = label.size
    write_oriented_jpeg(image_path, stored_pattern(height, width), orientation)
    image = read_image(image_path)
    assert image.shape == (height, width, 3)
    assert np.abs(image.astype(int) - decoded_as_stored(image_path)).mean() < 2  # two JPEG decoders; a turn: ~80
    sample = VOCSeg(fake_voc, "val")[0]  # label and image agree: no size error for 6 and 8
    assert sample["image"].shape[:2] == sample["label"].shape == (height, width)
