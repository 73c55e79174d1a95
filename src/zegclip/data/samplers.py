"""Samplers for iteration-based training and sharded evaluation (pure torch).

Training is a stream of samples, as in mmseg's iteration-based runner: epoch after
epoch of seeded permutations, cut into global batches; each process takes its contiguous
part of every global batch. Every sample also carries its own augmentation seed, so the
stream is a pure function of (seed, global position): the same images, augmented the same
way, in every optimizer step with any number of processes, accumulation steps or workers,
and exact after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class TrainStream(Sampler[tuple[int, int]]):
    """Endless (dataset index, sample seed) pairs for one process.

    Global position g lies in epoch g // size at offset g % size of that epoch's
    permutation. The positions are cut into global batches of ``world x per_process``
    samples; process ``rank`` takes positions ``rank * per_process`` to
    ``(rank + 1) * per_process - 1`` of each (``per_process`` = batch size x accumulation),
    so micro-batch j of process r holds the same samples as micro-batch ``r * accumulation + j``
    of one process running the whole global batch. ``start``: samples this process already
    consumed (after a resume).
    """

    def __init__(
        self, size: int, *, seed: int = 0, rank: int = 0, world: int = 1, per_process: int = 1, start: int = 0
    ) -> None:
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self.per_process = max(1, int(per_process))
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.size, generator=generator))
        return self._perm[1]

    def position(self, local: int) -> int:
        """Global position of this process's ``local``-th sample."""
        step, within = divmod(local, self.per_process)
        return (step * self.world + self.rank) * self.per_process + within

    def sample(self, local: int) -> tuple[int, int]:
        """The (index, augmentation seed) of this process's ``local``-th sample."""
        position = self.position(local)
        epoch, offset = divmod(position, self.size)
        seed = int(np.random.SeedSequence([self.seed, position]).generate_state(1)[0])
        return int(self.permutation(epoch)[offset]), seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        local = self.start
        while True:
            yield self.sample(local)
            local += 1


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ... of a dataset, in order, without padding.

    Unlike DistributedSampler nothing is repeated to even out the shards, so metrics
    summed over processes count every image exactly once.
    """

    def __init__(self, size: int, *, rank: int = 0, world: int = 1) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SampleSeeded(Dataset):
    """Reads ``(index, seed)`` keys: seeds the augmentation, then loads the sample."""

    def __init__(self, dataset: Dataset, reseed: Any) -> None:
        self.dataset = dataset
        self.reseed = reseed  # callable(seed) that seeds the dataset's transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        self.reseed(seed)
        return self.dataset[index]
