"""The endless training stream and the evaluation shards."""

from __future__ import annotations

import itertools

from zegclip.data.samplers import ShardSampler, TrainStream


def test_stream_epochs_are_permutations():
    single = [i for i, _ in itertools.islice(TrainStream(5, seed=1), 15)]
    for epoch in range(3):
        assert sorted(single[epoch * 5 : (epoch + 1) * 5]) == [0, 1, 2, 3, 4]
    assert single[:5] != single[5:10]  # a new permutation every epoch
    full = list(itertools.islice(TrainStream(5, seed=1), 14))
    assert len({seed for _, seed in full}) == 14  # every sample its own augmentation seed


def test_ranks_take_contiguous_parts_of_each_global_batch():
    # global batch 8: one process (batch 4 x accumulation 2) or two (batch 4 x accumulation 1)
    full = list(itertools.islice(TrainStream(7, seed=1, per_process=8), 24))
    ranks = [list(itertools.islice(TrainStream(7, seed=1, rank=r, world=2, per_process=4), 12)) for r in range(2)]
    for step in range(3):
        window = full[step * 8 : (step + 1) * 8]
        assert ranks[0][step * 4 : (step + 1) * 4] == window[:4]  # micro-batch 0 of the single process
        assert ranks[1][step * 4 : (step + 1) * 4] == window[4:]  # micro-batch 1
    # four processes of batch 2: the same samples, in the same micro-batch order
    quarters = [list(itertools.islice(TrainStream(7, seed=1, rank=r, world=4, per_process=2), 6)) for r in range(4)]
    assert [q[:2] for q in quarters] == [full[0:2], full[2:4], full[4:6], full[6:8]]


def test_stream_start_skips_consumed_samples():
    full = list(itertools.islice(TrainStream(7, seed=4), 20))
    assert list(itertools.islice(TrainStream(7, seed=4, start=9), 11)) == full[9:]
    rank1 = list(itertools.islice(TrainStream(7, seed=4, rank=1, world=2, per_process=3), 12))
    assert list(itertools.islice(TrainStream(7, seed=4, rank=1, world=2, per_process=3, start=6), 6)) == rank1[6:]


def test_shards_cover_once_without_padding():
    shards = [list(ShardSampler(5, rank=r, world=2)) for r in range(2)]
    assert shards == [[0, 2, 4], [1, 3]]
    assert len(ShardSampler(5, rank=1, world=2)) == 2
