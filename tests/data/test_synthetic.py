"""Synthetic VOC-layout dataset: layout, label contents, determinism, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zegclip.cli.synthetic import main
from zegclip.data.classes import DATASETS, SYNTHETIC_CLASSES
from zegclip.data.datasets import VOCSeg, build_dataset
from zegclip.data.synthetic import write_synthetic_voc

BASE = Path("VOCdevkit/VOC2012")


def test_writes_the_voc_layout(tmp_path: Path) -> None:
    root = write_synthetic_voc(tmp_path, num_train=6, num_val=3, size=(96, 128), seed=1)
    assert root == tmp_path
    lists = root / BASE / "ImageSets/Segmentation"
    train = lists.joinpath("train.txt").read_text().split()
    aug = lists.joinpath("aug.txt").read_text().split()
    val = lists.joinpath("val.txt").read_text().split()
    assert (len(train), len(aug), len(val)) == (2, 4, 3)
    assert lists.joinpath("trainaug.txt").read_text().split() == train + aug
    for i in train + val:
        assert (root / BASE / "JPEGImages" / f"{i}.jpg").is_file()
        with Image.open(root / BASE / "SegmentationClass" / f"{i}.png") as png:
            assert png.mode == "P" and png.size == (128, 96)
    for i in aug:
        with Image.open(root / BASE / "SegmentationClassAug" / f"{i}.png") as png:
            assert png.mode == "L"
    ds = build_dataset("synthetic", root, "train")
    assert isinstance(ds, VOCSeg) and len(ds) == 6 and ds.info is DATASETS["synthetic"]
    assert ds[0]["image"].shape == (96, 128, 3)


def test_labels_hold_cell_aligned_classes_and_void_borders(tmp_path: Path) -> None:
    write_synthetic_voc(tmp_path, num_train=3, num_val=4, size=160, seed=0)
    seen = set()
    for i in range(4):
        with Image.open(tmp_path / BASE / f"SegmentationClass/syn_val_{i:05d}.png") as png:
            raw = np.array(png)
        values = set(np.unique(raw).tolist())
        assert values <= set(range(len(SYNTHETIC_CLASSES) + 1)) | {255}
        assert 255 in values and 0 in values
        seen |= values
        # away from the void bands, labels are constant on 16-px cells' inner 8 x 8
        inner = raw.reshape(10, 16, 10, 16)[:, 4:12, :, 4:12]
        flat = inner.reshape(10, 8, 10, 8).transpose(0, 2, 1, 3).reshape(100, 64)
        assert (flat == flat[:, :1]).all()
    assert len(seen - {0, 255}) >= 3
    assert DATASETS["synthetic"].seen_ids == (0, 1, 2, 3)


def test_deterministic_given_the_seed(tmp_path: Path) -> None:
    def files(seed: int, out: str) -> dict[str, bytes]:
        root = write_synthetic_voc(tmp_path / out, num_train=3, num_val=1, size=64, seed=seed)
        return {p.name: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    a, b, c = files(0, "a"), files(0, "b"), files(1, "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_cli(tmp_path: Path, capsys) -> None:
    main(["--out", str(tmp_path / "syn"), "--num-train", "2", "--num-val", "1", "--size", "64"])
    assert "wrote" in capsys.readouterr().out
    assert len(build_dataset("synthetic", tmp_path / "syn", "val")) == 1
