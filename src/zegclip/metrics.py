"""Segmentation scores for zero-shot evaluation: pAcc, mIoU, mIoU(seen), mIoU(unseen), hIoU (docs/method.md §10).

One C x C confusion matrix (rows = ground truth, columns = prediction) is accumulated over
the whole split with torchmetrics' ``multiclass_confusion_matrix``; every score is derived
from it at :meth:`SegMetrics.compute`. The matrix is a sum-reduced metric state, so under
DDP the per-process matrices are added before any score is computed, which is exact.

Distributed evaluation: the sum is only exact if every image is scored on exactly one
process. A ``DistributedSampler`` pads the dataset so that every process gets the same
number of samples, and the padded (repeated) images would be counted twice. The
``SegDataModule`` loaders shard without padding (``Trainer(use_distributed_sampler=False)``),
and give a process left without an image a stand-in whose pixels are all ``ignore_index``,
so that it still takes part in the sum while adding nothing to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from zegclip.constants import IGNORE_INDEX

__all__ = ["SegMetrics", "format_table", "scores_from_confmat"]


def _check_ids(ids: Sequence[int], num_classes: int, what: str) -> list[int]:
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"{what} ids {bad} outside 0..{num_classes - 1}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what} ids contain duplicates: {ids}")
    return ids


def scores_from_confmat(confmat: Tensor, seen_ids: Sequence[int], unseen_ids: Sequence[int]) -> dict[str, Tensor]:
    """All scores of docs/method.md §10 from an accumulated confusion matrix (ignored pixels already dropped).

    Args:
        confmat: C x C integer counts, ``confmat[t, p]`` = pixels of true class t predicted as p.
        seen_ids: classes averaged into ``mIoU_seen``.
        unseen_ids: classes averaged into ``mIoU_unseen``.

    Returns:
        ``pAcc``, ``mIoU``, ``mIoU_seen``, ``mIoU_unseen``, ``hIoU`` (scalars), ``IoU_per_class``
        and ``pixel_share_per_class`` (each class's share of the labelled pixels) (C), all float32
        in percent. A class with empty union has IoU NaN and is left out of every
        mean; a mean over no valid class is NaN, and hIoU is NaN when either mean is NaN
        (in particular when ``unseen_ids`` is empty). hIoU is 0 when both means are 0.
    """
    counts = confmat.double()  # float64: exact for counts up to 2**53
    intersection = counts.diagonal()  # I_c
    pred_area = counts.sum(dim=0)  # P_c
    gt_area = counts.sum(dim=1)  # G_c
    union = pred_area + gt_area - intersection  # U_c
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, math.nan))

    total = gt_area.sum()
    pacc = intersection.sum() / total if total > 0 else counts.new_tensor(math.nan)
    seen = torch.nanmean(iou[list(seen_ids)])
    unseen = torch.nanmean(iou[list(unseen_ids)])
    denom = seen + unseen  # torch.nanmean: NaN for no class at all (empty or all NaN)
    # NaN + anything = NaN, so a NaN mean propagates; 0/0 is defined as 0 (docs/method.md §10)
    hiou = torch.where(denom == 0, torch.zeros_like(denom), 2 * seen * unseen / denom)
    result = {
        "pAcc": pacc,
        "mIoU": torch.nanmean(iou),
        "mIoU_seen": seen,
        "mIoU_unseen": unseen,
        "hIoU": hiou,
        "IoU_per_class": iou,
        "pixel_share_per_class": gt_area / total if total > 0 else torch.full_like(gt_area, math.nan),
    }
    return {key: (100 * value).float() for key, value in result.items()}


class SegMetrics(Metric):
    """Accumulates a confusion matrix over a split and reports the zero-shot scores in percent.

    Args:
        num_classes: C, the number of classes scored (the dataset's full vocabulary).
        seen_ids: class ids of the seen split (averaged into ``mIoU_seen``).
        unseen_ids: class ids of the unseen split (``mIoU_unseen``); may be empty, in which case
            ``mIoU_unseen`` and ``hIoU`` are NaN.
        ignore_index: target value whose pixels are dropped, whatever is predicted there.
        validate_args: check that preds and target ids are in range on every update (a min/max
            per batch; a GPU sync).
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).

    ``update(preds, target)`` takes B x H x W int64 class ids (preds in 0..C-1, target in
    0..C-1 or ``ignore_index``). ``compute()`` returns the dict of :func:`scores_from_confmat`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(
        self,
        num_classes: int,
        seen_ids: Sequence[int],
        unseen_ids: Sequence[int],
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.seen_ids = _check_ids(seen_ids, self.num_classes, "seen")
        self.unseen_ids = _check_ids(unseen_ids, self.num_classes, "unseen")
        if set(self.seen_ids) & set(self.unseen_ids):
            raise ValueError(f"classes both seen and unseen: {sorted(set(self.seen_ids) & set(self.unseen_ids))}")
        self.ignore_index = int(ignore_index)
        self.validate_args = validate_args
        # rows: ground truth, columns: prediction; summed over processes before compute()
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` and ``target`` are B x H x W (any equal shape) integer class ids."""
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        if preds.is_floating_point() or target.is_floating_point():
            raise ValueError("preds and target must be integer class ids (take the argmax of scores first)")
        preds, target = preds.long(), target.long()
        if self.validate_args and preds.numel():
            # torchmetrics' own check counts distinct values only, so a constant out-of-range
            # prediction would slip through and land in a wrong cell; check the ranges here
            valid = target[target != self.ignore_index]
            if preds.min() < 0 or preds.max() >= self.num_classes:
                raise ValueError(f"preds hold ids outside 0..{self.num_classes - 1}")
            if valid.numel() and (valid.min() < 0 or valid.max() >= self.num_classes):
                raise ValueError(f"target holds ids outside 0..{self.num_classes - 1} and {self.ignore_index}")
        # a new tensor, not +=: a state reset under torch.inference_mode (trainer.validate/test) is
        # an inference tensor, which a later update outside it (fit's validation) cannot change in place
        self.confmat = self.confmat + multiclass_confusion_matrix(
            preds, target, self.num_classes, ignore_index=self.ignore_index, validate_args=False
        )

    def compute(self) -> dict[str, Tensor]:
        """Scores over everything accumulated so far (all processes), in percent."""
        return scores_from_confmat(self.confmat, self.seen_ids, self.unseen_ids)

    def table(self, result: Mapping[str, Tensor], class_names: Sequence[str]) -> str:
        """:func:`format_table` with this metric's seen/unseen split."""
        return format_table(result, class_names, seen_ids=self.seen_ids, unseen_ids=self.unseen_ids)


def format_table(
    result: Mapping[str, Tensor],
    class_names: Sequence[str],
    *,
    seen_ids: Sequence[int] = (),
    unseen_ids: Sequence[int] = (),
) -> str:
    """A plain-text table of per-class IoU (percent) followed by the summary scores, for logs.

    Args:
        result: the dict returned by :meth:`SegMetrics.compute`.
        class_names: C names, in class-id order.
        seen_ids: classes marked ``seen`` in the split column.
        unseen_ids: classes marked ``unseen``.

    Returns:
        The table; NaN IoUs (class absent from prediction and ground truth) print as ``nan``.
    """
    iou = result["IoU_per_class"].detach().cpu().tolist()
    if len(iou) != len(class_names):
        raise ValueError(f"{len(class_names)} class names for {len(iou)} classes")
    split = {int(i): "seen" for i in seen_ids} | {int(i): "unseen" for i in unseen_ids}
    width = max([len("class"), *(len(name) for name in class_names)])
    lines = [f"{'id':>4}  {'class':<{width}}  {'split':<6}  {'IoU':>6}", "-" * (width + 24)]
    for idx, (name, value) in enumerate(zip(class_names, iou, strict=True)):
        lines.append(f"{idx:>4}  {name:<{width}}  {split.get(idx, ''):<6}  {value:>6.2f}")
    lines.append("-" * (width + 24))
    summary = [key for key in ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU") if key in result]
    lines.append("  ".join(f"{key} {float(result[key]):.2f}" for key in summary))
    return "\n".join(lines)
