"""Focal + dice loss on a hand-worked example, num_masks across processes, pseudo labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zegclip.constants import HIDDEN_INDEX
from zegclip.model.loss import ZegCLIPCriterion, global_num_masks, pseudo_labels


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _focal(x, t, alpha=0.25, gamma=2.0):
    p = _sig(x)
    ce = -math.log(p) if t else -math.log(1 - p)
    p_t = p if t else 1 - p
    return (alpha if t else 1 - alpha) * ce * (1 - p_t) ** gamma


def test_focal_and_dice_hand_worked_2x2():
    # one image, two classes, 2x2 pixels; labels [[0, 1], [255, 0]]
    x = [[[2.0, -1.0], [0.5, 1.0]], [[-2.0, 3.0], [0.0, -0.5]]]
    labels = torch.tensor([[[0, 1], [255, 0]]])
    t = [[[1, 0], [0, 1]], [[0, 1], [0, 0]]]  # 255 pixel: all-zero target
    num_masks = 2  # classes 0 and 1 both present
    focal = (
        sum(sum(_focal(x[c][i][j], t[c][i][j]) for i in range(2) for j in range(2)) / 4 for c in range(2)) / num_masks
    )
    dice = 0.0
    for c in range(2):
        p = [_sig(x[c][i][j]) for i in range(2) for j in range(2)]
        tt = [t[c][i][j] for i in range(2) for j in range(2)]
        dice += 1 - (2 * sum(a * b for a, b in zip(p, tt, strict=True)) + 1) / (sum(p) + sum(tt) + 1)
    dice /= num_masks
    out = ZegCLIPCriterion()(torch.tensor([x]), labels)
    assert out["loss_focal"].item() == pytest.approx(100 * focal, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out["loss"].item() == pytest.approx(100 * focal + dice, rel=1e-5)


def test_dice_only_on_present_classes_and_upsampling():
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    labels = torch.zeros(1, 4, 4, dtype=torch.long)  # only class 0 present, 4x4 > 2x2 logits
    out = ZegCLIPCriterion()(logits, labels)
    # p = 0.5 everywhere: dice of class 0 = 1 - (2*8 + 1) / (8 + 16 + 1); classes 1, 2 absent
    assert out["loss_dice"].item() == pytest.approx(1 - 17 / 25, rel=1e-6)
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0


def test_labels_outside_vocabulary_rejected():
    with pytest.raises(ValueError, match="outside 0..1"):
        ZegCLIPCriterion()(torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 5], [1, 255]]]))


def _num_masks_worker(rank, path, results):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    value = global_num_masks(torch.tensor(3.0 if rank == 0 else 6.0))
    results[rank] = value.item()
    dist.destroy_process_group()


def test_num_masks_all_reduced_and_averaged(tmp_path):
    results = mp.Manager().dict()
    mp.start_processes(_num_masks_worker, args=(str(tmp_path / "rendezvous"), results), nprocs=2, start_method="spawn")
    assert dict(results) == {0: 4.5, 1: 4.5}  # (3 + 6) / 2 on every process
    assert global_num_masks(torch.tensor(0.0)).item() == 1.0  # clamped


def test_pseudo_labels_fill_hidden_with_best_unseen():
    logits = torch.full((1, 4, 2, 2), -5.0)
    logits[0, 0] = 10.0  # a seen class scores highest everywhere: must not be chosen
    logits[0, 2, 0, :] = 2.0
    logits[0, 3, 1, :] = 2.0
    labels = torch.tensor([[[HIDDEN_INDEX, 1], [HIDDEN_INDEX, 255]]])
    out = pseudo_labels(logits, labels, [2, 3])
    assert out.tolist() == [[[2, 1], [3, 255]]]


def _reference_loss(logits, labels, num_classes):
    """The loss written the plain way (one-hot targets, BCE, focal, dice) for autograd."""
    up = torch.nn.functional.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    x = up.flatten(2)
    t = torch.nn.functional.one_hot(labels.clamp(max=num_classes), num_classes + 1)[..., :num_classes]
    t = t.flatten(1, 2).transpose(1, 2).to(x.dtype)  # B x C x HW, ignored pixels all zero
    p = x.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).mean(-1)
    present = t.sum(-1) > 0
    dice = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    num_masks = present.sum().clamp(min=1)
    return 100 * focal.sum() / num_masks + (dice * present).sum() / num_masks


@pytest.mark.parametrize("chunk_elements", [1 << 19, 37])  # one chunk; chunks cutting across images
def test_loss_and_gradient_match_plain_autograd(chunk_elements):
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 3, 4, 5)).requires_grad_()
    labels = torch.randint(0, 3, (2, 8, 10))
    labels[0, :2] = 255
    labels[1][labels[1] == 2] = 0  # class 2 absent from image 1
    ours = ZegCLIPCriterion(chunk_elements=chunk_elements)(logits, labels)["loss"]
    (grad,) = torch.autograd.grad(ours, logits)
    reference = _reference_loss(logits, labels, 3)
    (expected,) = torch.autograd.grad(reference, logits)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(grad, expected, rtol=1e-4, atol=1e-7)
