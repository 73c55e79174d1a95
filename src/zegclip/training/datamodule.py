"""`SegDataModule`: datasets, training vocabulary and loaders for Lightning."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from zegclip.data.classes import DATASETS, FOLDER, DatasetInfo
from zegclip.data.datasets import (
    SETTINGS,
    DatasetError,
    SegDataset,
    build_dataset,
    get_dataset_info,
    setting_label_lut,
    train_class_ids,
)
from zegclip.data.layouts import split_file, split_source
from zegclip.data.samplers import SampleSeeded, ShardSampler, TrainStream
from zegclip.data.synthetic import write_synthetic_voc
from zegclip.data.transforms import eval_transform, seed_pipeline, train_transform

__all__ = ["DEFAULT_SPLITS", "SegDataModule"]

DEFAULT_SPLITS: dict[str, tuple[str, str]] = {
    "voc": ("train", "val"),  # train = train.txt + aug.txt (10,582)
    "coco_stuff": ("train2017", "val2017"),
    "context": ("train", "val"),
    "context60": ("train", "val"),
    "ade150": ("training", "validation"),
    "synthetic": ("train", "val"),
    FOLDER: ("train", "val"),  # your own images: train.txt, val.txt
}
"""(train split, validation split) per dataset."""


def init_worker(worker_id: int, rank: int = 0) -> None:
    """Every DataLoader worker: OpenCV without its own thread pool, then Lightning's worker seeding.

    OpenCV sizes its pool to the machine, so N workers (4 per GPU by default) would each start one
    as large as the CPU while the main process feeds the GPU; PyTorch already runs torch single-
    threaded in workers. Lightning adds its seeding only to loaders without a ``worker_init_fn``,
    so it is called here when ``seed_everything(workers=True)`` asked for it.
    """
    cv2.setNumThreads(0)  # 0: OpenCV runs its functions on the calling thread
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


class _Uncounted(Dataset):
    """A dataset's samples with every label pixel ignored: they run but add nothing to the metrics."""

    def __init__(self, dataset: SegDataset, ignore_index: int) -> None:
        self.dataset, self.ignore_index = dataset, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["label"] = torch.full_like(torch.as_tensor(sample["label"]), self.ignore_index)
        return sample


class SegDataModule(L.LightningDataModule):
    """Datasets, augmentation and loaders of one benchmark in one setting.

    Training labels use the setting's vocabulary (`setting_label_lut`): inductive keeps
    the seen classes as 0..S-1 and ignores unseen pixels (255); transductive keeps all
    classes and marks unseen pixels HIDDEN_INDEX (254); fully keeps all classes.
    Validation and test always use all classes with 255 ignored.

    Batches are dicts: train ``image`` B x 3 x crop x crop float32, ``label`` B x crop x
    crop int64, ``id`` list[str]; val/test (batch 1) ``image`` 1 x 3 x H' x W' at short
    side ``eval_short_side``, ``label`` 1 x H x W at the original size.

    Args:
        dataset: "voc", "coco_stuff", "context", "synthetic" or "folder" (your own images,
            `zegclip.data.folder`).
        root: dataset root (the folder holding ``VOCdevkit/`` or ``coco_stuff164k/``; folder:
            the folder itself).
        setting: "inductive", "transductive" or "fully".
        batch_size: training images per device.
        num_workers: DataLoader workers per device.
        pin_memory: pin host memory of batches.
        persistent_workers: keep workers between epochs (only with ``num_workers > 0``).
        crop_size: training crop side.
        scale: rescale target scale (long, short) before the ratio.
        ratio_range: range of the random rescale ratio.
        cat_max_ratio: largest-class limit of the crop rule.
        train_split: training split; default per dataset (`DEFAULT_SPLITS`).
        val_split: validation split; default per dataset.
        test_split: test split; defaults to the validation split.
        eval_short_side: short side of validation/test images.
        synthetic: keyword arguments of `write_synthetic_voc` (``num_train``, ``num_val``,
            ``size``, ``seed``, ``border``), used when ``dataset == "synthetic"`` and
            ``root`` holds no data yet.
        seed: seed of the training stream (sample order and every sample's augmentation).
        unseen: folder only: the unseen classes, by name.
        ignore_index: folder only: the label value of unlabelled pixels (default 255).

    Training is an endless stream (`TrainStream`): the order and augmentation of every
    sample are a function of ``seed`` and its global position alone, each process taking
    its contiguous part of every global batch, so every optimizer step sees the same
    images whatever the number of processes, accumulation steps or workers, and a resumed
    run continues exactly where it stopped
    (the stream starts after the samples already consumed, ``global_step`` x
    ``accumulate_grad_batches`` x ``batch_size`` per process). Validation and test are
    sharded over processes without padding (`ShardSampler`), so every image is counted
    exactly once and the summed confusion matrix equals a single process's. A process
    left without an image (fewer images than processes) evaluates image 0 with every
    label pixel ignored: Lightning needs a batch on every process, and that one adds
    nothing to the metrics. Lightning must not insert its own samplers: build the
    Trainer with ``use_distributed_sampler=False``.
    """

    def __init__(
        self,
        dataset: str = "voc",
        root: str = "data",
        setting: str = "inductive",
        batch_size: int = 4,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        crop_size: int = 512,
        scale: tuple[int, int] | list[int] = (2048, 512),
        ratio_range: tuple[float, float] | list[float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
        eval_short_side: int = 512,
        synthetic: dict[str, Any] | None = None,
        seed: int = 0,
        unseen: list[str] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        known = [*DEFAULT_SPLITS, *(name for name, info in DATASETS.items() if info.eval_only)]
        if dataset not in known:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {known}")
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
        self.save_hyperparameters()
        self.dataset = dataset
        self.root = root
        self.setting = setting
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.crop_size = crop_size
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.cat_max_ratio = cat_max_ratio
        # evaluation-only benchmarks (ADE20K-150/847, Context-459) have a validation split alone
        default_train, default_val = DEFAULT_SPLITS.get(dataset, ("val", "val"))
        self.train_split = train_split or default_train
        self.val_split = val_split or default_val
        self.test_split = test_split or self.val_split
        self.eval_short_side = eval_short_side
        self.synthetic = dict(synthetic or {})
        self.seed = seed
        self.unseen = unseen
        self.ignore_index = ignore_index
        self._info: DatasetInfo | None = None
        self.train_set: SegDataset | None = None
        self.val_set: SegDataset | None = None
        self.test_set: SegDataset | None = None

    # --- vocabulary -------------------------------------------------------------------
    @property
    def info(self) -> DatasetInfo:
        """Class names and seen/unseen split of the dataset (a folder's read once, on first use)."""
        if self._info is None:
            self._info = get_dataset_info(self.dataset, self.root, self.unseen, self.ignore_index)
        return self._info

    @property
    def class_names(self) -> tuple[str, ...]:
        """All class names, in id order (the validation/test vocabulary)."""
        return self.info.class_names

    @property
    def seen_ids(self) -> tuple[int, ...]:
        return self.info.seen_ids

    @property
    def unseen_ids(self) -> tuple[int, ...]:
        return self.info.unseen_ids

    @property
    def train_class_ids(self) -> tuple[int, ...]:
        """Dataset class ids of the training vocabulary: training label j is class ids[j]."""
        return train_class_ids(self.info, self.setting)

    def check_root(self) -> None:
        """Fail fast (before weights are loaded) when the dataset folder is missing (or a folder's classes)."""
        if self.dataset == FOLDER:
            self.info  # noqa: B018 (reads classes.txt, checks the unseen names and the ignore value)
            return
        if self.dataset != "synthetic" and not Path(self.root).is_dir():
            raise DatasetError(
                f"dataset root {self.root} (data.root) does not exist; write it with "
                f"`python -m zegclip.data.prepare {self.dataset} --raw DOWNLOADS --out {self.root}`"
            )

    # --- Lightning hooks --------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic dataset if asked for and missing (writes files only)."""
        if self.dataset == "synthetic" and not split_file("synthetic", self.root, "val").is_file():
            write_synthetic_voc(self.root, **self.synthetic)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        # private: the Trainer keeps its use_distributed_sampler argument only here (one use,
        # pinned by tests/test_private_apis.py)
        if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError("SegDataModule shards its data itself: set trainer.use_distributed_sampler=false")
        return trainer.global_rank, trainer.world_size

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and self.train_set is None:
            if self.info.eval_only:
                raise DatasetError(
                    f"{self.dataset}: {self.info.num_classes} classes can be evaluated, not trained (training "
                    "labels are 8-bit with 254 and 255 reserved: at most 254 classes)"
                    if self.dataset == FOLDER
                    else f"{self.dataset} is for evaluation only: it has no training split here"
                )
            pipeline = train_transform(
                self.crop_size,
                self.scale,
                self.ratio_range,
                self.cat_max_ratio,
                label_lut=setting_label_lut(self.info, self.setting),
            )
            self.train_set = build_dataset(self.dataset, self.root, self.train_split, pipeline, info=self.info)
            if len(self.train_set) < self.batch_size:
                raise DatasetError(
                    f"{split_source(self.dataset, self.root, self.train_split)}: {len(self.train_set)} training "
                    f"image(s), fewer than data.batch_size={self.batch_size}; lower data.batch_size or add images"
                )
        if stage in ("fit", "validate", None) and self.val_set is None:
            self.val_set = build_dataset(
                self.dataset, self.root, self.val_split, eval_transform(self.eval_short_side), info=self.info
            )
            if len(self.val_set) == 0:  # training would validate nothing, so choose and save no best checkpoint
                raise DatasetError(
                    f"{split_file(self.dataset, self.root, self.val_split)}: the validation split "
                    f"({self.val_split}) lists no images; training validates every eval_every steps and at the end"
                )
        if stage in ("test", None) and self.test_set is None:
            self.test_set = build_dataset(
                self.dataset, self.root, self.test_split, eval_transform(self.eval_short_side), info=self.info
            )

    def _loader(self, dataset: SegDataset | None, stage: str, sampler, batch_size: int) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            worker_init_fn=functools.partial(init_worker, rank=self._rank_world()[0]),
            # its own generator: creating an iterator must not draw from the global RNG,
            # or a resumed run's dropout masks would drift from an uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
        )

    def consumed_samples(self) -> int:
        """Training samples this process consumed before now (non-zero after a resume)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return trainer.global_step * trainer.accumulate_grad_batches * self.batch_size

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            raise RuntimeError("call setup('fit') before asking for its dataloader")
        rank, world = self._rank_world()
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        stream = TrainStream(
            len(self.train_set),
            seed=self.seed,
            rank=rank,
            world=world,
            per_process=self.batch_size * accumulate,  # this process's part of each global batch
            start=self.consumed_samples(),
        )
        pipeline = self.train_set.transform
        keyed = SampleSeeded(self.train_set, lambda seed: seed_pipeline(pipeline, seed))
        return self._loader(keyed, "fit", stream, self.batch_size)

    def _eval_loader(self, dataset: SegDataset | None, stage: str) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call setup({stage!r}) before asking for its dataloader")
        rank, world = self._rank_world()
        sampler = ShardSampler(len(dataset), rank=rank, world=world)
        if len(sampler) == 0 and len(dataset) > 0:
            # fewer images than processes: a process with an empty shard would fail Lightning's
            # check (or skip the metric sync the others wait in), so it runs one image that counts nothing
            return self._loader(_Uncounted(dataset, self.info.ignore_index), stage, [0], 1)
        return self._loader(dataset, stage, sampler, 1)  # batch 1: eval images differ in size

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set, "validate")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set, "test")
