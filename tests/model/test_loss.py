"""Focal + dice loss on a hand-worked example, num_masks across processes, pseudo labels."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from zegclip.constants import HIDDEN_INDEX
from zegclip.model import loss as loss_module
from zegclip.model.loss import (
    CPU_CHUNK_ELEMENTS,
    ZegCLIPCriterion,
    chunk_elements_for,
    global_num_masks,
    pseudo_labels,
)


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


@pytest.mark.slow  # two gloo processes
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


class _Ops(TorchDispatchMode):
    """Counts the operators that launch a kernel on a GPU (views and allocations do not), and
    the host reads of device values (``.item()``, ``bool()``, data-dependent shapes)."""

    HOST_READS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::masked_select")
    NO_KERNEL = ("aten::empty", "aten::empty_like", "aten::new_empty", "aten::empty_strided", "aten::lift_fresh")

    def __init__(self) -> None:
        super().__init__()
        self.kernels, self.host_reads, self.copies = 0, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in self.HOST_READS:
            self.host_reads.append(name)
        if name == "aten::_to_copy":
            self.copies.append((args[0].device.type, kwargs.get("device"), kwargs.get("non_blocking", False)))
        if not func.is_view and name not in self.NO_KERNEL:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def _voc_micro_batch(device="cpu"):
    """A VOC training micro-batch: 4 crops of 512 x 512, 15 seen classes, logits at 1/16 (ViT-B/16)."""
    torch.manual_seed(0)
    logits = torch.randn(4, 15, 32, 32, device=device).requires_grad_()
    labels = torch.randint(0, 15, (4, 512, 512), device=device)
    return logits, labels


def _step(criterion, logits, labels):
    with _Ops() as ops:
        loss = criterion(logits, labels)["loss"]
        (grad,) = torch.autograd.grad(loss, logits)
    return ops, loss, grad


def _gpu(monkeypatch, total_gib: float, free_gib: float) -> torch.device:
    """``torch.cuda``'s memory queries answer as a GPU with ``free_gib`` of ``total_gib`` free would."""
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free_gib * gib), int(total_gib * gib)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    return torch.device("cuda")


def test_gpu_sizing_runs_a_voc_micro_batch_in_one_pass(monkeypatch):
    """The op count of the loss, forward and backward, with the chunk the GPU sizing picks for an
    80 GB card against the CPU's cache-sized chunk: the same loss from about a hundred kernels
    instead of thousands."""
    gpu_chunk = chunk_elements_for(_gpu(monkeypatch, total_gib=80, free_gib=60))
    logits, labels = _voc_micro_batch()
    assert gpu_chunk >= logits.shape[0] * logits.shape[1] * 512 * 512  # the whole micro-batch
    gpu_ops, gpu_loss, gpu_grad = _step(ZegCLIPCriterion(chunk_elements=gpu_chunk), logits, labels)
    cpu_ops, cpu_loss, cpu_grad = _step(ZegCLIPCriterion(), logits, labels)  # sized for this CPU
    assert gpu_ops.kernels < 150 < 1500 < cpu_ops.kernels  # about 100 against 2,000
    assert gpu_loss.item() == pytest.approx(cpu_loss.item(), rel=1e-5)
    assert torch.allclose(gpu_grad, cpu_grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize(("total_gib", "free_gib"), [(24, 6), (80, 60), (16, 0.05)])
def test_gpu_chunk_takes_a_quarter_of_the_free_memory(monkeypatch, total_gib, free_gib):
    """A COCO-Stuff micro-batch (4 x 156 classes x 512 x 512 = 164 M elements) is cut into passes
    whose peak (48 bytes per element, forward and backward) fits a quarter of the free memory."""
    chunk = chunk_elements_for(_gpu(monkeypatch, total_gib, free_gib))
    assert chunk * 48 <= free_gib * (1 << 30) / 4 or chunk == CPU_CHUNK_ELEMENTS
    assert chunk >= CPU_CHUNK_ELEMENTS
    passes = -(-4 * 156 * 512 * 512 // chunk)
    assert passes == {(24, 6): 5, (80, 60): 1, (16, 0.05): 312}[(total_gib, free_gib)]


def test_no_host_reads_while_a_step_is_queued():
    """On an accelerator nothing in the loss reads a device value back (the meta device stands
    in for it: any read raises there); labels are checked by a flag read every 100 calls, and
    pseudo labels copy their class list without a blocking copy."""
    criterion = ZegCLIPCriterion()
    logits, labels = _voc_micro_batch(device="meta")
    for _ in range(3):
        ops, loss, _ = _step(criterion, logits, labels)
        assert ops.host_reads == [] and loss.device.type == "meta"
    with _Ops() as ops:
        out = pseudo_labels(logits.detach(), labels, [12, 13, 14])
    assert out.shape == labels.shape and ops.host_reads == []
    assert ops.copies == [("cpu", torch.device("meta"), True)]  # the class list, non_blocking


def test_labels_outside_vocabulary_on_an_accelerator_are_reported_within_n_calls(monkeypatch):
    """Where reading back is not free the check is deferred: a bad batch is reported at the next
    read, ``label_check_every`` calls apart, and good batches never are."""
    monkeypatch.setattr(loss_module, "_reads_are_free", lambda device: False)
    criterion = ZegCLIPCriterion(label_check_every=3)
    good, bad = torch.tensor([[[0, 1], [1, 255]]]), torch.tensor([[[0, 5], [1, 255]]])
    logits = torch.zeros(1, 2, 2, 2)
    for _ in range(6):
        criterion(logits, good)
    criterion(logits, bad)  # not read back yet
    criterion(logits, good)
    with pytest.raises(ValueError, match=r"in one of the last 3 batches outside 0..1 and the ignore index 255"):
        criterion(logits, good)
    criterion(logits, good)  # the flag starts again after each read
