"""The endless training stream and the evaluation shards."""

from __future__ import annotations

import itertools

from zegclip.data.samplers import ShardSampler, TrainStream


def test_stream_epochs_are_permutations_and_ranks_interleave():
    single = [i for i, _ in itertools.islice(TrainStream(5, seed=1), 15)]
    for epoch in range(3):
        assert sorted(single[epoch * 5 : (epoch + 1) * 5]) == [0, 1, 2, 3, 4]
    assert single[:5] != single[5:10]  # a new permutation every epoch
    rank0 = list(itertools.islice(TrainStream(5, seed=1, rank=0, world=2), 7))
    rank1 = list(itertools.islice(TrainStream(5, seed=1, rank=1, world=2), 7))
    full = list(itertools.islice(TrainStream(5, seed=1), 14))
    assert rank0 == full[0::2] and rank1 == full[1::2]  # same global stream, split by rank
    assert len({seed for _, seed in full}) == 14  # every sample its own augmentation seed


def test_stream_start_skips_consumed_samples():
    full = list(itertools.islice(TrainStream(7, seed=4), 20))
    assert list(itertools.islice(TrainStream(7, seed=4, start=9), 11)) == full[9:]


def test_shards_cover_once_without_padding():
    shards = [list(ShardSampler(5, rank=r, world=2)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3]]
    assert len(ShardSampler(5, rank=1, world=2)) == 2
