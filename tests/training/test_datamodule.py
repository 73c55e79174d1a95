"""SegDataModule on the fake VOC data: batches per setting, vocabulary, workers."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.fake_data import write_fake_voc
from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX
from zegclip.data.datasets import DatasetError
from zegclip.training.datamodule import SegDataModule


# fresh tiny datasets per test: several tests break them on purpose
@pytest.fixture
def fake_voc(tmp_path: Path) -> Path:
    return write_fake_voc(tmp_path / "voc")


# fake VOC train labels (reduced): 255 | 0..2 / 16 (sheep, unseen) | 255


def make_dm(root: Path, setting: str, **kwargs) -> SegDataModule:
    options = dict(
        dataset="voc",
        root=str(root),
        setting=setting,
        batch_size=2,
        num_workers=0,
        pin_memory=False,
        crop_size=48,
        scale=(80, 64),
        ratio_range=(1.0, 1.0),
        eval_short_side=32,
    )
    options.update(kwargs)
    return SegDataModule(**options)


def train_labels(dm: SegDataModule) -> set[int]:
    values: set[int] = set()
    for batch in itertools.islice(dm.train_dataloader(), 6):  # the training stream is endless
        values |= set(batch["label"].unique().tolist())
    return values


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("inductive", {0, 1, 2, IGNORE_INDEX}),  # unseen 16 -> 255
        ("transductive", {0, 1, 2, HIDDEN_INDEX, IGNORE_INDEX}),  # unseen 16 -> 254
        ("fully", {0, 1, 2, 16, IGNORE_INDEX}),
    ],
)
def test_train_and_val_batches(fake_voc: Path, setting: str, expected: set[int]) -> None:
    torch.manual_seed(0)
    dm = make_dm(fake_voc, setting)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 48, 48) and batch["label"].dtype == torch.int64
    assert len(batch["id"]) == 2 and all(i.startswith("2007_") for i in batch["id"])
    values = set()
    for _ in range(4):  # a few epochs so every quadrant shows up in some crop
        values |= train_labels(dm)
    assert values == expected

    val = next(iter(dm.val_dataloader()))  # image 4: 64 x 64, short side -> 32
    assert val["image"].shape == (1, 3, 32, 32) and val["label"].shape == (1, 64, 64)
    assert set(val["label"].unique().tolist()) == {1, 16, IGNORE_INDEX}  # all classes


def test_vocabulary_properties(fake_voc: Path) -> None:
    dm = make_dm(fake_voc, "inductive")
    assert dm.class_names[0] == "aeroplane" and len(dm.class_names) == 20
    assert dm.seen_ids == tuple(range(15)) and dm.unseen_ids == (15, 16, 17, 18, 19)
    assert dm.train_class_ids == tuple(range(15))
    assert make_dm(fake_voc, "transductive").train_class_ids == tuple(range(20))
    assert dm.info.name == "voc"
    with pytest.raises(ValueError, match="unknown setting"):
        make_dm(fake_voc, "open")


def test_val_images_keep_their_own_sizes(fake_voc: Path) -> None:
    dm = make_dm(fake_voc, "fully", eval_short_side=48)
    dm.setup("validate")
    shapes = [(b["image"].shape[2:], b["label"].shape[1:]) for b in dm.val_dataloader()]
    # image 4 is 64 x 64, image 5 is 48 x 96: short side 48 -> 48 x 48 and 48 x 96
    assert shapes == [((48, 48), (64, 64)), ((48, 96), (48, 96))]


def test_too_few_images_for_a_batch(fake_voc: Path) -> None:
    dm = make_dm(fake_voc, "fully", batch_size=8)
    train_list = fake_voc / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt"
    with pytest.raises(DatasetError) as caught:  # a ZegCLIPError: one error line, exit 2
        dm.setup("fit")
    assert str(caught.value) == (
        f"{train_list}: 4 training image(s), fewer than data.batch_size=8; lower data.batch_size or add images"
    )


def test_synthetic_is_generated_in_prepare_data(tmp_path: Path) -> None:
    dm = SegDataModule(
        dataset="synthetic",
        root=str(tmp_path / "syn"),
        setting="inductive",
        batch_size=2,
        num_workers=0,
        pin_memory=False,
        crop_size=64,
        scale=(128, 96),
        eval_short_side=64,
        synthetic={"num_train": 4, "num_val": 2, "size": 96},
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2
    assert dm.train_class_ids == (0, 1, 2, 3)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2, 3, IGNORE_INDEX}


def _stream_labels(dm: SegDataModule, count: int) -> list[np.ndarray]:
    return [b["label"][0].numpy() for b in itertools.islice(dm.train_dataloader(), count)]


def test_stream_is_independent_of_workers_and_resumes_exactly(fake_voc: Path) -> None:
    """Every sample's order and augmentation depend on (seed, position) only."""
    serial = make_dm(fake_voc, "fully", batch_size=1, ratio_range=(0.5, 2.0), seed=3)
    serial.setup("fit")
    serial.train_set.samples = serial.train_set.samples[:1] * 8  # the same image 8 times
    reference = _stream_labels(serial, 8)
    assert not all(np.array_equal(reference[0], other) for other in reference[1:])  # augmentations differ

    workers = make_dm(fake_voc, "fully", batch_size=1, ratio_range=(0.5, 2.0), seed=3, num_workers=2)
    workers.setup("fit")
    workers.train_set.samples = workers.train_set.samples[:1] * 8
    for a, b in zip(_stream_labels(workers, 8), reference, strict=True):
        assert np.array_equal(a, b)

    serial.consumed_samples = lambda: 5  # as after a resume at sample 5
    for a, b in zip(_stream_labels(serial, 3), reference[5:], strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_eval_shards_count_each_image_once_and_no_rank_is_empty(fake_voc: Path, world: int) -> None:
    """2 val images on 2-4 processes: each image counted on one rank; a rank without one gets an uncounted batch."""
    from types import SimpleNamespace

    counted: list[str] = []
    for rank in range(world):
        dm = make_dm(fake_voc, "fully")
        dm.trainer = SimpleNamespace(
            global_rank=rank, world_size=world, _accelerator_connector=SimpleNamespace(use_distributed_sampler=False)
        )
        dm.setup("validate")
        batches = list(dm.val_dataloader())
        assert batches, rank  # Lightning refuses a rank with an empty loader
        for batch in batches:
            if (batch["label"] != IGNORE_INDEX).any():
                counted += batch["id"]
            else:  # the stand-in of an empty shard: image 0, nothing to count
                assert rank >= 2 and len(batches) == 1 and batch["id"] == ["2007_000004"]
    assert sorted(counted) == ["2007_000004", "2007_000005"]


class _WorkerProbe(torch.utils.data.Dataset):
    """What each DataLoader worker reports: its OpenCV thread count and a draw from numpy's global RNG."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        import cv2

        worker = torch.utils.data.get_worker_info()
        return {"worker": worker.id, "cv2_threads": cv2.getNumThreads(), "draw": np.random.random()}


def test_workers_run_opencv_on_one_thread_and_keep_lightnings_seeding(fake_voc: Path, monkeypatch) -> None:
    import cv2

    monkeypatch.setenv("PL_SEED_WORKERS", "1")  # what seed_everything(workers=True) sets, as zegclip train does
    threads_here = cv2.getNumThreads()
    dm = make_dm(fake_voc, "fully", num_workers=2)
    dm.val_set = _WorkerProbe()
    runs = [[{k: v.item() for k, v in batch.items()} for batch in dm.val_dataloader()] for _ in range(2)]
    assert {row["worker"] for row in runs[0]} == {0, 1}
    assert all(row["cv2_threads"] == 1 for row in runs[0])
    assert cv2.getNumThreads() == threads_here  # the main process keeps its own pool
    draws = {row["worker"]: row["draw"] for row in runs[0]}
    assert draws[0] != draws[1]  # seeded per worker (forked workers would otherwise share numpy's state)
    assert runs[0] == runs[1]  # and reproducibly
