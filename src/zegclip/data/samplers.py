"""Samplers for iteration-based training and sharded evaluation (pure torch).

Training is a stream of samples, as in mmseg's iteration-based runner: epoch after
epoch of seeded permutations, each process taking every ``world``-th sample. Every
sample also carries its own augmentation seed, so the stream is a pure function of
(seed, position): the same with any number of workers, and exact after a resume.
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
    permutation; process ``rank`` takes positions rank, rank + world, ... and starts
    at its ``start``-th sample (samples it already consumed before a resume).
    """

    def __init__(self, size: int, *, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        if size <= 0:
            raise ValueError("the training set is empty")
        self.size, self.seed, self.rank, self.world, self.start = size, seed, rank, world, start
        self._perm: tuple[int, torch.Tensor] | None = None

    def permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.size, generator=generator))
        return self._perm[1]

    def sample(self, local: int) -> tuple[int, int]:
        """The (index, augmentation seed) of this process's ``local``-th sample."""
        position = local * self.world + self.rank
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
