"""SegMetrics against a confusion matrix worked out by hand, accumulation, and 2-process DDP sync."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zegclip.metrics import SegMetrics, format_table

# Hand example: 5 classes, seen {0, 1, 2}, unseen {3, 4}; 12 pixels, 3 of them ignored (255).
#   target: 0 0 0 0 | 1 1 | 3 3 3 | 255 255 255
#   preds:  0 0 0 1 | 1 1 | 3 0 4 |   2   4   0   (predictions on ignored pixels must not count)
# Confusion matrix (rows truth, columns prediction), ignored pixels dropped:
#          p0 p1 p2 p3 p4 |  G
#     t0    3  1  0  0  0 |  4
#     t1    0  2  0  0  0 |  2
#     t2    0  0  0  0  0 |  0
#     t3    1  0  0  1  1 |  3
#     t4    0  0  0  0  0 |  0
#      P    4  3  0  1  1
# I = (3, 2, 0, 1, 0); U = P + G - I = (5, 3, 0, 3, 1)
# IoU % = (60, 66.667, NaN (absent from both), 33.333, 0 (predicted but absent: counts))
# pAcc = 6 / 9 = 66.667 %; mIoU = (60 + 66.667 + 33.333 + 0) / 4 = 40
# mIoU_seen = (60 + 66.667) / 2 = 63.333 (class 2 NaN, left out); mIoU_unseen = (33.333 + 0) / 2 = 16.667
# hIoU = 2 * 63.333 * 16.667 / (63.333 + 16.667) = 2 * (190/3) * (50/3) / 80 = 26.389
TARGET = torch.tensor([0, 0, 0, 0, 1, 1, 3, 3, 3, 255, 255, 255]).view(2, 2, 3)
PREDS = torch.tensor([0, 0, 0, 1, 1, 1, 3, 0, 4, 2, 4, 0]).view(2, 2, 3)
SEEN, UNSEEN = [0, 1, 2], [3, 4]
EXPECTED = {
    "pAcc": 66.666667,
    "mIoU": 40.0,
    "mIoU_seen": 63.333333,
    "mIoU_unseen": 16.666667,
    "hIoU": 26.388889,
}
EXPECTED_IOU = [60.0, 66.666667, math.nan, 33.333333, 0.0]


def _check_hand_result(result: dict[str, torch.Tensor]) -> None:
    assert set(result) == {*EXPECTED, "IoU_per_class", "pixel_share_per_class"}
    for key, value in EXPECTED.items():
        assert result[key].item() == pytest.approx(value, rel=1e-6), key
    assert result["IoU_per_class"].tolist() == pytest.approx(EXPECTED_IOU, rel=1e-6, nan_ok=True)


def test_hand_worked_confusion_matrix():
    metric = SegMetrics(5, SEEN, UNSEEN)
    metric.update(PREDS, TARGET)
    assert metric.confmat.tolist() == [
        [3, 1, 0, 0, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [1, 0, 0, 1, 1],
        [0, 0, 0, 0, 0],
    ]
    _check_hand_result(metric.compute())


def test_one_image_per_update_gives_the_same_hand_result():
    metric = SegMetrics(5, SEEN, UNSEEN)
    for preds, target in zip(PREDS, TARGET, strict=True):
        metric.update(preds[None], target[None])
    _check_hand_result(metric.compute())
    metric.reset()
    metric.update(PREDS[:1], TARGET[:1])  # after reset only this image counts: classes 0 and 1
    assert metric.confmat.sum().item() == 6


def test_accumulation_over_updates_equals_one_big_update():
    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 7, (6, 9, 11), generator=gen)
    target = torch.randint(0, 7, (6, 9, 11), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.2] = 255
    target[target == 5] = 6  # class 5 only ever predicted: IoU 0
    preds[preds == 2] = 3
    target[target == 2] = 3  # class 2 absent from both: NaN
    many, one = SegMetrics(7, [0, 1, 2, 3], [4, 5, 6]), SegMetrics(7, [0, 1, 2, 3], [4, 5, 6])
    for i in range(0, 6, 2):
        many.update(preds[i : i + 2], target[i : i + 2])
    one.update(preds, target)
    a, b = many.compute(), one.compute()
    assert torch.equal(many.confmat, one.confmat)
    for key in a:
        torch.testing.assert_close(a[key], b[key], equal_nan=True)
    assert math.isnan(a["IoU_per_class"][2].item())
    assert a["IoU_per_class"][5].item() == 0.0
    # brute force pAcc over the non-ignored pixels
    valid = target != 255
    assert a["pAcc"].item() == pytest.approx(100 * (preds[valid] == target[valid]).double().mean().item(), rel=1e-6)


def test_no_unseen_classes_gives_nan_unseen_and_hiou():
    metric = SegMetrics(5, [0, 1, 2, 3, 4], [])
    metric.update(PREDS, TARGET)
    result = metric.compute()
    assert math.isnan(result["mIoU_unseen"].item())
    assert math.isnan(result["hIoU"].item())
    assert result["mIoU_seen"].item() == pytest.approx(40.0, rel=1e-6)  # all four valid classes


def test_hiou_is_zero_when_both_means_are_zero():
    metric = SegMetrics(2, [0], [1])
    metric.update(torch.tensor([[[1, 0]]]), torch.tensor([[[0, 1]]]))
    result = metric.compute()
    assert result["hIoU"].item() == 0.0
    assert result["pAcc"].item() == 0.0


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match="both seen and unseen"):
        SegMetrics(5, [0, 1], [1, 2])
    with pytest.raises(ValueError, match="outside"):
        SegMetrics(5, [0, 1], [5])
    metric = SegMetrics(5, SEEN, UNSEEN)
    with pytest.raises(ValueError, match="shape"):
        metric.update(PREDS[:1], TARGET)
    with pytest.raises(ValueError, match="integer"):
        metric.update(PREDS.float(), TARGET)
    with pytest.raises(ValueError, match="preds hold ids outside"):
        metric.update(torch.full_like(PREDS, 7), TARGET)  # a constant id outside the vocabulary
    with pytest.raises(ValueError, match="target holds ids outside"):
        metric.update(PREDS, torch.where(TARGET == 3, 254, TARGET))
    assert metric.confmat.sum().item() == 0  # nothing was added by the rejected batches


def test_format_table_marks_splits_and_nan():
    metric = SegMetrics(5, SEEN, UNSEEN)
    metric.update(PREDS, TARGET)
    text = metric.table(metric.compute(), ["road", "car", "sky", "cat", "dog"])
    lines = text.splitlines()
    assert "sky" in lines[4] and "seen" in lines[4] and "nan" in lines[4]
    assert "dog" in lines[6] and "unseen" in lines[6] and "0.00" in lines[6]
    assert "hIoU 26.39" in lines[-1]
    with pytest.raises(ValueError, match="class names"):
        format_table(metric.compute(), ["road"])


def _ddp_worker(rank: int, path: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}/rendezvous", rank=rank, world_size=2)
    metric = SegMetrics(5, SEEN, UNSEEN)
    metric.update(PREDS[rank : rank + 1], TARGET[rank : rank + 1])  # each rank sees a different image
    result = metric.compute()  # synced: summed confusion matrices
    torch.save({"result": result, "local": metric.confmat.sum().item()}, f"{path}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes
def test_ddp_two_processes_equal_single_process(tmp_path):
    # spawn, not fork: a child forked after OpenMP threads ran can deadlock
    mp.start_processes(_ddp_worker, args=(str(tmp_path),), nprocs=2, start_method="spawn")
    out = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    for rank in (0, 1):
        _check_hand_result(out[rank]["result"])
    assert [o["local"] for o in out] == [6, 3]  # local states restored after compute: 6 and 3 valid pixels


def test_a_reset_under_inference_mode_then_updates_outside_it():
    """trainer.validate resets the state under torch.inference_mode; fit's validation updates it under no_grad."""
    metric = SegMetrics(5, seen_ids=[0, 1, 2], unseen_ids=[3, 4])
    with torch.inference_mode():
        metric.update(PREDS, TARGET)
        metric.reset()
    with torch.no_grad():
        metric.update(PREDS, TARGET)
    assert metric.compute()["pAcc"].item() == pytest.approx(100 * 6 / 9)
