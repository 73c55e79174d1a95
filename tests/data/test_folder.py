"""The folder dataset kind: layout, reader, classes by name, split making, verify, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.exif import ORIENTATIONS, as_displayed, decoded_as_stored, stored_pattern, write_oriented_jpeg
from zegclip.cli.prepare import main as prepare_main
from zegclip.cli.synthetic import main as synthetic_main
from zegclip.cli.verify import main as verify_main
from zegclip.data import layouts
from zegclip.data.classes import SYNTHETIC_CLASSES, SYNTHETIC_UNSEEN
from zegclip.data.datasets import DatasetError, build_dataset, get_dataset_info
from zegclip.data.folder import (
    FolderError,
    FolderInfo,
    FolderSeg,
    class_synonyms,
    folder_info,
    make_split,
    read_index_label,
    verify_folder,
)
from zegclip.data.synthetic import write_synthetic_folder, write_synthetic_voc
from zegclip.data.verify import verify_dataset

CLASSES_TXT = "# my classes\n\nroad\ncar, automobile   # synonyms\n\nperson, pedestrian\ntree\n"
NAMES = ("road", "car", "person", "tree")


@pytest.fixture
def synthetic_folder(tmp_path: Path) -> Path:
    return write_synthetic_folder(tmp_path / "my_folder", num_train=6, num_val=3, size=64)


def _write_label(path: Path, values: np.ndarray, bits: int = 8, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        Image.fromarray(values.astype(np.uint16)).save(path)  # mode I;16
        return
    png = Image.fromarray(values.astype(np.uint8))
    if palette:
        png.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    png.save(path)


def _write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _hand_folder(root: Path, ignore: int, bits: int = 8, palette: bool = False) -> dict[str, np.ndarray]:
    """Four classes, images in several formats (one in a subfolder); returns the expected reduced labels."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text(CLASSES_TXT)
    offset = 1 if ignore == 0 else 0
    expected = {}
    for n, (sample_id, suffix) in enumerate([("a", ".png"), ("b", ".JPG"), ("sub/c", ".jpeg"), ("d", ".bmp")]):
        classes = np.arange(12 * 10).reshape(12, 10) % 4  # class ids 0..3
        classes[0, :] = -1  # one unlabelled row
        raw = np.where(classes < 0, ignore, classes + offset)
        _write_image(root / "images" / f"{sample_id}{suffix}", 12, 10, seed=n)
        _write_label(root / "labels" / f"{sample_id}.png", raw, bits, palette)
        expected[sample_id] = np.where(classes < 0, 255, classes).astype(np.uint8)
    (root / "train.txt").write_text("a\nb\nsub/c\n")
    (root / "val.txt").write_text("d\n")
    return expected


# --------------------------------------------------------------------------- layout and reader


def test_layout_paths() -> None:
    root = Path("/data/mine")
    assert layouts.label_path("folder", root, "x") == root / "labels/x.png"
    assert layouts.split_file("folder", root, "val") == root / "val.txt"
    assert layouts.classes_file("folder", root) == root / "classes.txt"
    assert layouts.image_path("folder", root, "x") == root / "images/x.jpg"  # the name of a missing image
    with pytest.raises(ValueError, match="fixed classes"):
        layouts.classes_file("voc", root)


def test_image_files_any_suffix_any_case_and_subfolders(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for name in ("a.PNG", "b.jpg", "b.png", "sub/c.webp", ".hidden.jpg", "notes.txt", ".cache/d.jpg"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        (images / name).write_bytes(b"")
    found = layouts.image_files("folder", tmp_path)
    assert sorted(found) == ["a", "b", "sub/c"]
    assert found["b"] == [images / "b.jpg", images / "b.png"]
    assert layouts.image_files("folder", tmp_path, ids=["sub/c"]) == {"sub/c": [images / "sub/c.webp"]}
    rows = layouts.split_items("folder", tmp_path, "train", ["a", "sub/c", "missing"])
    assert [row[1] for row in rows] == [images / "a.PNG", images / "sub/c.webp", images / "missing.jpg"]


def test_synthetic_writer_folder_layout(synthetic_folder: Path) -> None:
    root = synthetic_folder
    assert sorted(p.name for p in root.iterdir()) == ["classes.txt", "images", "labels", "train.txt", "val.txt"]
    assert len(list((root / "images").glob("*.jpg"))) == 9 and len(list((root / "labels").glob("*.png"))) == 9
    info = get_dataset_info("folder", root, ["magenta stripes", "cyan checkerboard"])
    assert info.class_names == SYNTHETIC_CLASSES and info.unseen_ids == SYNTHETIC_UNSEEN
    train = build_dataset("folder", root, "train", info=info)
    assert isinstance(train, FolderSeg) and len(train) == 6 and len(build_dataset("folder", root, "val")) == 3
    with Image.open(train.samples[0][2]) as im:
        assert im.mode == "L"


def test_synthetic_folder_equals_the_voc_layout(tmp_path: Path) -> None:
    folder = write_synthetic_folder(tmp_path / "folder", num_train=3, num_val=1, size=64, seed=3)
    voc = write_synthetic_voc(tmp_path / "voc", num_train=3, num_val=1, size=64, seed=3)
    for split in ("train", "val"):
        a, b = build_dataset("folder", folder, split), build_dataset("synthetic", voc, split)
        assert len(a) == len(b)
        for i in range(len(a)):
            x, y = a.load(i), b.load(i)
            np.testing.assert_array_equal(x["image"], y["image"])
            np.testing.assert_array_equal(x["label"], y["label"])
            assert x["label"].dtype == np.uint8


def test_synthetic_cli_layout_option(tmp_path: Path, capsys) -> None:
    args = ["--num-train", "2", "--num-val", "1", "--size", "48"]
    assert synthetic_main(["--layout", "folder", "--out", str(tmp_path / "f"), *args]) == 0
    assert "folder-layout" in capsys.readouterr().out
    assert len(build_dataset("folder", tmp_path / "f", "val")) == 1
    assert synthetic_main(["--out", str(tmp_path / "v"), *args]) == 0  # default: VOC
    assert (tmp_path / "v" / "VOCdevkit").is_dir()


@pytest.mark.parametrize(
    ("ignore", "bits", "palette"),
    [(255, 8, False), (255, 8, True), (0, 8, False), (0, 16, False), (65535, 16, False), (300, 16, False)],
    ids=["255-L", "255-P", "0-L", "0-16bit", "65535-16bit", "300-16bit"],
)
def test_hand_written_folder_is_read_and_mapped(tmp_path: Path, ignore: int, bits: int, palette: bool) -> None:
    expected = _hand_folder(tmp_path, ignore, bits, palette)
    info = get_dataset_info("folder", tmp_path, ignore_index=ignore)
    assert info.class_names == NAMES and info.ignore_index == 255 and info.label_ignore == ignore
    assert info.reduce_zero_label == (ignore == 0) and not info.eval_only
    train, val = (
        build_dataset("folder", tmp_path, "train", info=info),
        build_dataset("folder", tmp_path, "val", info=info),
    )
    assert train.ids == ["a", "b", "sub/c"] and val.ids == ["d"]
    assert [p.name for _i, p, _l in train.samples] == ["a.png", "b.JPG", "c.jpeg"]
    for ds in (train, val):
        for i, sample_id in enumerate(ds.ids):
            label = ds.load(i)["label"]
            assert label.dtype == np.uint8
            np.testing.assert_array_equal(label, expected[sample_id])
    assert verify_folder(tmp_path, ignore_index=ignore).problems == []


def test_read_index_label_keeps_16_bit_values(tmp_path: Path) -> None:
    values = np.array([[0, 1, 300], [65535, 2, 40000]])
    _write_label(tmp_path / "x.png", values, bits=16)
    label = read_index_label(tmp_path / "x.png")
    assert label.dtype == np.uint16
    np.testing.assert_array_equal(label, values)


def test_more_than_254_classes_read_as_16_bit_for_evaluation(tmp_path: Path) -> None:
    names = [f"class {k}" for k in range(300)]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    raw = np.arange(300 * 2).reshape(20, 30) % 300
    raw[0, 0] = 65535
    _write_image(tmp_path / "images" / "x.png", 20, 30)
    _write_label(tmp_path / "labels" / "x.png", raw, bits=16)
    (tmp_path / "val.txt").write_text("x\n")
    info = folder_info(tmp_path, ["class 299"], ignore_index=65535)
    assert info.eval_only and info.ignore_index == 65535 and info.unseen_ids == (299,)
    label = build_dataset("folder", tmp_path, "val", info=info).load(0)["label"]
    assert label.dtype == np.uint16 and label[0, 0] == 65535
    np.testing.assert_array_equal(label.ravel()[1:], raw.ravel()[1:])


def test_reader_refuses_bad_labels(tmp_path: Path) -> None:
    _hand_folder(tmp_path, 255)
    _write_label(tmp_path / "labels" / "a.png", np.full((12, 10), 7))  # 7: no such class
    ds = build_dataset("folder", tmp_path, "train")
    with pytest.raises(DatasetError, match=r"label values \[7\].*expected 0\.\.3 or 255"):
        ds.load(0)
    Image.new("RGB", (10, 12)).save(tmp_path / "labels" / "b.png")
    with pytest.raises(FolderError, match="COLOUR"):
        ds.load(1)
    _write_label(tmp_path / "labels" / "sub" / "c.png", np.zeros((5, 5)))
    with pytest.raises(DatasetError, match="expected equal sizes"):
        ds.load(2)


def test_missing_lists_and_files_are_named(tmp_path: Path) -> None:
    _hand_folder(tmp_path, 255)
    (tmp_path / "labels" / "d.png").unlink()
    with pytest.raises(DatasetError, match=r"labels/d\.png: label not found"):
        build_dataset("folder", tmp_path, "val")
    (tmp_path / "train.txt").unlink()
    with pytest.raises(FolderError, match="zegclip prepare folder --root"):
        build_dataset("folder", tmp_path, "train")


# --------------------------------------------------------------------------- classes and unseen


def test_classes_file_comments_blank_lines_and_synonyms(tmp_path: Path) -> None:
    _hand_folder(tmp_path, 255)
    info = folder_info(tmp_path)
    assert info.class_names == NAMES
    assert class_synonyms(info) == (("road",), ("car", "automobile"), ("person", "pedestrian"), ("tree",))
    assert class_synonyms(get_dataset_info("voc"))[0] == ("aeroplane",)


def test_unseen_by_name_any_synonym_any_case(tmp_path: Path) -> None:
    _hand_folder(tmp_path, 255)
    info = get_dataset_info("folder", tmp_path, ["Tree", "pedestrian", "tree"])
    assert isinstance(info, FolderInfo)
    assert info.unseen_ids == (2, 3) and info.seen_ids == (0, 1)


def test_unknown_unseen_name_lists_the_known_ones(tmp_path: Path) -> None:
    _hand_folder(tmp_path, 255)
    with pytest.raises(FolderError, match="data.unseen: bicycle not in .*classes.txt; known: road, car, person, tree"):
        get_dataset_info("folder", tmp_path, ["bicycle", "car"])
    with pytest.raises(FolderError, match="every class"):
        folder_info(tmp_path, NAMES)


def test_unseen_and_ignore_are_for_folders_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fixed unseen classes"):
        get_dataset_info("voc", unseen=["cat"])
    with pytest.raises(ValueError, match="ignore_index"):
        get_dataset_info("voc", ignore_index=0)
    assert get_dataset_info("voc", tmp_path, None, 255) is get_dataset_info("voc")
    with pytest.raises(KeyError, match="folder"):
        get_dataset_info("cityscapes")


@pytest.mark.parametrize(
    ("classes", "match"),
    [(None, "class list not found"), ("# nothing\n\n", "empty"), ("cat\ndog, Cat\n", "duplicate class names")],
)
def test_bad_classes_file(tmp_path: Path, classes: str | None, match: str) -> None:
    if classes is not None:
        (tmp_path / "classes.txt").write_text(classes)
    with pytest.raises(FolderError, match=match):
        folder_info(tmp_path)


def test_bad_root_and_ignore_value(tmp_path: Path) -> None:
    with pytest.raises(FolderError, match="set data.root"):
        get_dataset_info("folder")
    with pytest.raises(FolderError, match="is not a folder"):
        folder_info(tmp_path / "nowhere")
    _hand_folder(tmp_path, 255)
    with pytest.raises(FolderError, match=r"ignore_index=2 is a class value"):
        folder_info(tmp_path, ignore_index=2)
    with pytest.raises(FolderError, match="0..65535"):
        folder_info(tmp_path, ignore_index=70000)
    assert folder_info(tmp_path, ignore_index=4).ignore_index == 255  # just above the classes


# --------------------------------------------------------------------------- split lists


def _lists(root: Path) -> tuple[str, str]:
    return (root / "train.txt").read_text(), (root / "val.txt").read_text()


def test_make_split_reproducible_written_and_kept(tmp_path: Path) -> None:
    roots = [write_synthetic_folder(tmp_path / name, num_train=8, num_val=2, size=48) for name in ("a", "b")]
    for root in roots:
        for name in ("train.txt", "val.txt"):
            (root / name).unlink()
    (roots[0] / "images" / "unlabelled.jpg").write_bytes((roots[0] / "images" / "syn_val_00000.jpg").read_bytes())
    split = make_split(roots[0], val_fraction=0.3)
    assert make_split(roots[1], val_fraction=0.3) == split  # same files, same seed: same lists
    assert len(split["val"]) == 3 and len(split["train"]) == 7 and not set(split["val"]) & set(split["train"])
    assert "unlabelled" not in split["train"] + split["val"]
    assert _lists(roots[0]) == ("".join(f"{i}\n" for i in split["train"]), "".join(f"{i}\n" for i in split["val"]))
    written = _lists(roots[0])
    with pytest.raises(FolderError, match="the split is kept"):
        make_split(roots[0], val_fraction=0.5, seed=1)
    assert _lists(roots[0]) == written
    other = make_split(roots[0], val_fraction=0.3, seed=1, force=True)
    assert other != split and _lists(roots[0]) != written
    with pytest.raises(FolderError, match="between 0 and 1"):
        make_split(roots[1], val_fraction=1.0, force=True)


def test_make_split_refuses_ambiguous_ids_and_tiny_folders(tmp_path: Path) -> None:
    root = write_synthetic_folder(tmp_path / "f", num_train=1, num_val=1, size=48)
    (root / "train.txt").unlink()
    (root / "val.txt").unlink()
    (root / "images" / "syn_train_00000.png").write_bytes(b"")
    with pytest.raises(FolderError, match="several images"):
        make_split(root)
    (root / "images" / "syn_train_00000.png").unlink()
    (root / "labels" / "syn_val_00000.png").unlink()
    with pytest.raises(FolderError, match="at least 2"):
        make_split(root)


def test_prepare_folder_cli(tmp_path: Path, capsys) -> None:
    root = write_synthetic_folder(tmp_path / "f", num_train=4, num_val=1, size=48)
    (root / "train.txt").unlink()
    (root / "val.txt").unlink()
    assert prepare_main(["folder", "--root", str(root), "--val-fraction", "0.4", "--seed", "3"]) == 0
    assert "train 3, val 2" in capsys.readouterr().out
    written = _lists(root)
    assert prepare_main(["folder", "--root", str(root)]) == 2
    assert "--force" in capsys.readouterr().err and _lists(root) == written
    assert prepare_main(["folder", "--root", str(root), "--seed", "3", "--val-fraction", "0.4", "--force"]) == 0
    assert _lists(root) == written
    assert prepare_main(["folder"]) == 2
    assert "needs --root" in capsys.readouterr().err
    assert prepare_main(["voc", "--root", str(root)]) == 2
    assert "needs --raw" in capsys.readouterr().err


# --------------------------------------------------------------------------- verify


def test_verify_good_folder(synthetic_folder: Path, capsys) -> None:
    assert verify_dataset("folder", synthetic_folder) == []
    assert verify_main(["folder", "--root", str(synthetic_folder)]) == 0
    out = capsys.readouterr().out
    assert "train: 6 ids" in out and "OK" in out


def test_verify_reports_each_problem(tmp_path: Path, capsys) -> None:
    _hand_folder(tmp_path, 255)
    _write_label(tmp_path / "labels" / "a.png", np.full((12, 10), 9))  # out of range
    Image.new("RGB", (10, 12)).save(tmp_path / "labels" / "b.png")  # colour
    _write_label(tmp_path / "labels" / "sub" / "c.png", np.zeros((6, 5)))  # size mismatch
    (tmp_path / "images" / "d.bmp").unlink()  # listed, missing
    problems = verify_folder(tmp_path).problems
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "val: 1 of 1 ids have no image" in text and "d.jpg" in text
    assert "COLOUR" in text and "b.png" in text
    assert "values outside 0..3 or 255" in text and "[9]" in text and "a.png" in text
    assert "differ in size" in text and "c.png 5x6 vs image 10x12" in text
    assert verify_main(["folder", "--root", str(tmp_path)]) == 1
    assert "4 problem(s)" in capsys.readouterr().out


def test_verify_warns_of_classes_absent_from_train(tmp_path: Path, capsys) -> None:
    _hand_folder(tmp_path, 255)
    for sample_id in ("a", "b", "sub/c"):  # no tree (3) in train
        _write_label(tmp_path / "labels" / f"{sample_id}.png", np.arange(120).reshape(12, 10) % 3)
    report = verify_folder(tmp_path)
    assert report.problems == []
    assert report.warnings == ["train: no label holds class(es) tree (nothing to learn them from)"]
    assert verify_main(["folder", "--root", str(tmp_path)]) == 0
    assert "warning: train: no label holds class(es) tree" in capsys.readouterr().out


def test_verify_classes_lists_and_arguments(tmp_path: Path, capsys) -> None:
    _hand_folder(tmp_path, 0)
    assert verify_folder(tmp_path, ignore_index=0).problems == []
    assert any("values outside 0..3 or 255" in p for p in verify_folder(tmp_path).problems)  # 4 = tree + 1
    assert verify_main(["folder", "--root", str(tmp_path), "--ignore-index", "0"]) == 0
    (tmp_path / "classes.txt").write_text("a\nA\n")
    (tmp_path / "val.txt").unlink()
    problems = verify_folder(tmp_path, ignore_index=0).problems
    assert any("duplicate class names" in p for p in problems)
    assert any("no split list" in p and "zegclip prepare folder" in p for p in problems)
    assert verify_main(["folder", "--root", str(tmp_path), "--sample", "0"]) == 2
    assert verify_main(["folder", "--root", str(tmp_path / "nowhere")]) == 1
    capsys.readouterr()


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_tagged_photos_are_read_as_stored_and_named_by_verify(tmp_path: Path, capsys, orientation: int) -> None:
    """One rule: labels match the stored pixels; verify names the tagged images and explains a turned label."""
    _hand_folder(tmp_path, 255)
    (tmp_path / "images" / "b.JPG").unlink()
    path = write_oriented_jpeg(tmp_path / "images" / "b.jpg", stored_pattern(12, 10), orientation)
    sample = FolderSeg(tmp_path, "train")[1]
    assert sample["id"] == "b" and sample["image"].shape == (12, 10, 3)
    assert np.abs(sample["image"].astype(int) - decoded_as_stored(path)).mean() < 2  # two JPEG decoders
    report = verify_folder(tmp_path)
    assert report.problems == []
    (warning,) = report.warnings
    assert warning.startswith("1 image(s) carry an EXIF orientation tag")
    assert f"b.jpg (orientation {orientation}: shown rotated" in warning and "match the stored pixels" in warning
    assert verify_main(["folder", "--root", str(tmp_path)]) == 0
    assert "warning: 1 image(s) carry an EXIF orientation tag" in capsys.readouterr().out
    # a label drawn on the picture as a viewer shows it
    label = as_displayed(np.arange(120).reshape(12, 10) % 4, orientation)
    _write_label(tmp_path / "labels" / "b.png", label)
    problems = verify_folder(tmp_path).problems
    if orientation == 3:  # same size: only the warning can tell
        assert problems == []
    else:
        (problem,) = problems
        hint = f"(the label fits the image as a viewer shows it, EXIF orientation {orientation})"
        assert f"b.png 12x10 vs image 10x12 {hint}" in problem
        with pytest.raises(DatasetError, match="label is 12x10"):
            FolderSeg(tmp_path, "train")[1]


# --------------------------------------------------------------------------- folders as people make them


def test_ids_with_spaces_round_trip(synthetic_folder: Path, capsys) -> None:
    """`prepare folder` writes "my photo syn_train_00000"; the reader reads that id, spaces included."""
    for folder, suffix in (("images", ".jpg"), ("labels", ".png")):
        for path in sorted((synthetic_folder / folder).glob(f"*{suffix}")):
            path.rename(path.with_name(f"my photo {path.name}"))
    assert prepare_main(["folder", "--root", str(synthetic_folder), "--force"]) == 0
    lines = (synthetic_folder / "train.txt").read_text(encoding="utf-8").splitlines()
    assert lines and all(line.startswith("my photo syn_") for line in lines)
    dataset = FolderSeg(synthetic_folder, "train")
    assert dataset.ids == lines
    assert dataset.samples[0][1] == synthetic_folder / "images" / f"{lines[0]}.jpg"
    assert dataset.load(0)["image"].shape == (64, 64, 3)
    assert verify_main(["folder", "--root", str(synthetic_folder)]) == 0
    assert "OK" in capsys.readouterr().out


def test_a_byte_order_mark_is_not_part_of_a_name_or_an_id(synthetic_folder: Path) -> None:
    """Windows editors start UTF-8 files with a BOM (and end lines with CRLF)."""
    classes = (synthetic_folder / "classes.txt").read_text().splitlines()
    (synthetic_folder / "classes.txt").write_bytes("\r\n".join(classes).encode("utf-8-sig") + b"\r\n")
    ids = (synthetic_folder / "train.txt").read_text().splitlines()
    (synthetic_folder / "train.txt").write_bytes("\r\n".join(f"{i}  " for i in ids).encode("utf-8-sig"))
    info = folder_info(synthetic_folder, ["red stripes"])
    assert info.class_names == SYNTHETIC_CLASSES and info.unseen_ids == (0,)
    assert FolderSeg(synthetic_folder, "train", info=info).ids == ids


def test_broken_and_looping_links_are_skipped_with_a_warning(synthetic_folder: Path, caplog) -> None:
    images = synthetic_folder / "images"
    (images / "loop.jpg").symlink_to("loop.jpg")  # a link to itself
    (images / "gone.png").symlink_to("nowhere.png")
    (synthetic_folder / "train.txt").unlink()
    (synthetic_folder / "val.txt").unlink()
    with caplog.at_level("WARNING", logger="zegclip.data"):
        split = make_split(synthetic_folder, 0.25)
    assert len(split["train"]) + len(split["val"]) == 9  # every real image; "0 image(s)" before
    (warning,) = [r.getMessage() for r in caplog.records if "link(s)" in r.getMessage()]
    assert warning.startswith(f"2 link(s) in {images} are broken or loop and are skipped")
    assert str(images / "loop.jpg") in warning and str(images / "gone.png") in warning


@pytest.mark.parametrize("bad_id", ["../outside", "sub/../../outside", "/etc/outside", "C:\\outside", "..\\outside"])
def test_ids_leaving_the_folder_are_refused(synthetic_folder: Path, bad_id: str, capsys) -> None:
    (synthetic_folder.parent / "outside.jpg").write_bytes(
        (synthetic_folder / "images" / "syn_train_00000.jpg").read_bytes()
    )
    ids = (synthetic_folder / "train.txt").read_text().splitlines()
    (synthetic_folder / "train.txt").write_text("\n".join([ids[0], bad_id, *ids[1:]]) + "\n")
    message = f"{synthetic_folder / 'train.txt'}, line 2: id {bad_id!r} points outside the dataset folder"
    with pytest.raises(layouts.IdListError) as caught:
        FolderSeg(synthetic_folder, "train")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert any(p.startswith(message) for p in verify_folder(synthetic_folder).problems)
    assert verify_main(["folder", "--root", str(synthetic_folder)]) == 1
    assert message in capsys.readouterr().out


# --------------------------------------------------------------------------- predict


def test_predict_reads_the_folder_classes(synthetic_folder: Path, tmp_path: Path) -> None:
    from zegclip.cli.predict import main as predict_main
    from zegclip.cli.prediction_files import PREDICTIONS_FILE

    classes = synthetic_folder / "classes.txt"
    images = synthetic_folder / "images"
    out = tmp_path / "out"
    argv = [str(images / "syn_val_00000.jpg"), "--tiny", "--classes", str(classes), "--short-side", "64"]
    assert predict_main([*argv, "--seen", "red stripes, blue dots", "--output", str(out)]) == 0
    record = json.loads((out / PREDICTIONS_FILE).read_text().splitlines()[0])
    assert record["classes"] == list(SYNTHETIC_CLASSES)
    with Image.open(out / record["label_png"]) as im:
        assert int(np.asarray(im).max()) < len(SYNTHETIC_CLASSES)
