"""Focal + dice loss over per-class binary masks, and transductive pseudo labels (docs/method.md §5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from zegclip.constants import HIDDEN_INDEX, IGNORE_INDEX


def upsample(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize B x C x h x w -> B x C x H x W (align_corners False)."""
    if tuple(mask_logits.shape[-2:]) == tuple(size):
        return mask_logits
    return F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)


CPU_CHUNK_ELEMENTS = 1 << 19
"""Logit elements per pass of the loss on a CPU: a few MB, so each pass stays in cache."""
_BYTES_PER_ELEMENT = 48  # peak bytes per logit element, forward and backward of one pass (measured on CPU)
_OTHER_DEVICES_FREE = 1 << 30  # bytes assumed free on accelerators that cannot be asked (MPS, XPU, ...)


def device_free_bytes(device: torch.device) -> int:
    """Memory a new tensor on ``device`` can take now: free on the GPU plus what PyTorch holds unused."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)  # a driver query; no stream is synchronised
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return _OTHER_DEVICES_FREE


def chunk_elements_for(device: torch.device) -> int:
    """Logit elements (mask rows x pixels) the loss takes per pass on ``device``.

    On a CPU a cache-sized chunk (`CPU_CHUNK_ELEMENTS`: 2 mask rows of a 512 x 512 crop) is
    fastest. On a GPU every pass issues about 20 kernels, forward and backward, whatever its size:
    cache-sized chunks would make a VOC micro-batch (4 images x 15 classes) some 1,800 tiny
    kernels and a COCO-Stuff one 18,000, more than the whole ViT-B/16 step. There a pass takes
    as many elements as a quarter of the free memory holds: a whole micro-batch where it fits.
    """
    if device.type == "cpu":
        return CPU_CHUNK_ELEMENTS
    return max(CPU_CHUNK_ELEMENTS, device_free_bytes(device) // (4 * _BYTES_PER_ELEMENT))


def _reads_are_free(device: torch.device) -> bool:
    """Whether reading a value back to Python costs nothing: on a CPU, where nothing runs ahead."""
    return device.type == "cpu"


def global_num_masks(local: torch.Tensor) -> torch.Tensor:
    """Masks in the global batch: all-reduced sum / world size, clamped at 1."""
    num = local.detach().float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return num.clamp(min=1.0)


class _FocalDice(torch.autograd.Function):
    """Per-mask focal mean and dice of B*C binary masks, computed chunk by chunk.

    Every mask (one image, one class) is a row of the upsampled logits. Rows are
    processed a few at a time so each pass stays in cache, nothing pixel-sized is kept
    for backward (the gradient is recomputed analytically per chunk), and the one-hot
    targets are never built for the whole batch.

    With s the logit of the wrong answer (s = -x where t = 1, x where t = 0):
    BCE = softplus(s), 1 - p_t = q = sigmoid(s), focal = alpha_t q^gamma softplus(s),
    d focal / dx = (1 - 2t) alpha_t q^gamma (gamma (1 - q) softplus(s) + q);
    dice uses p = sigmoid(x) with dp / dx = q (1 - q).
    """

    @staticmethod
    def _chunk(logits: torch.Tensor, labels: torch.Tensor, rows: slice, num_classes: int):
        index = torch.arange(rows.start, rows.stop, device=logits.device)
        target = labels[index // num_classes] == (index % num_classes).unsqueeze(1)  # R x HW bool
        x = logits[rows]
        s = torch.where(target, -x, x)
        return target, torch.sigmoid(s), F.softplus(s)

    @staticmethod
    def forward(ctx, logits, labels, num_classes: int, alpha: float, gamma: float, chunk_rows: int):
        N, P = logits.shape  # (B*C) x HW
        focal, stats = logits.new_empty(N), logits.new_empty(3, N)  # |t|, sum_t q, sum q
        for start in range(0, N, chunk_rows):
            rows = slice(start, min(start + chunk_rows, N))
            target, q, softplus = _FocalDice._chunk(logits, labels, rows, num_classes)
            elementwise = softplus * (q * q if gamma == 2 else q.pow(gamma))
            pos = torch.where(target, elementwise, 0.0).sum(1)
            focal[rows] = (alpha * pos + (1 - alpha) * (elementwise.sum(1) - pos)) / P
            stats[0, rows] = target.sum(1)
            stats[1, rows] = torch.where(target, q, 0.0).sum(1)
            stats[2, rows] = q.sum(1)
        positives, wrong_pos, wrong_all = stats
        intersection = positives - wrong_pos  # sum p t
        denominator = wrong_all - 2 * wrong_pos + 2 * positives + 1  # sum p + sum t + 1
        dice = 1 - (2 * intersection + 1) / denominator
        ctx.save_for_backward(logits, labels, intersection, denominator)
        ctx.options = (num_classes, alpha, gamma, chunk_rows)
        return focal, dice, positives

    @staticmethod
    def backward(ctx, grad_focal, grad_dice, _):
        logits, labels, intersection, denominator = ctx.saved_tensors
        num_classes, alpha, gamma, chunk_rows = ctx.options
        N, P = logits.shape
        grad = torch.empty_like(logits)
        for start in range(0, N, chunk_rows):
            rows = slice(start, min(start + chunk_rows, N))
            target, q, softplus = _FocalDice._chunk(logits, labels, rows, num_classes)
            alpha_t = torch.where(target, alpha, 1 - alpha)
            sign = torch.where(target, -1.0, 1.0)
            focal = sign * alpha_t * (q * q if gamma == 2 else q.pow(gamma)) * (gamma * (1 - q) * softplus + q)
            den = denominator[rows].unsqueeze(1)
            d_dice_dp = (2 * intersection[rows].unsqueeze(1) + 1 - 2 * target * den) / (den * den)
            grad[rows] = focal * (grad_focal[rows] / P).unsqueeze(1) + d_dice_dp * q * (1 - q) * grad_dice[
                rows
            ].unsqueeze(1)
        return grad, None, None, None, None, None


class ZegCLIPCriterion(nn.Module):
    """100 x focal (all classes, all pixels) + 1 x dice (classes present), / num_masks.

    Called with mask logits B x C x h x w and labels B x H x W (class ids 0..C-1,
    ``ignore_index`` for ignored pixels), returns ``loss_focal``, ``loss_dice`` (both
    weighted) and ``loss``, and ``masks``: this batch's (image, present class) pairs.
    Ignored pixels have an all-zero target: they still count as negatives in the focal
    term, as in the released code.

    ``num_masks`` (a call argument): the divisor to use instead of the global batch's mask
    count; training passes a constant and rescales the gradients once per optimizer step, so
    the divisor covers the whole global batch however it is split into processes and
    accumulated micro-batches (docs/method.md, the loss).

    ``chunk_elements``: logit elements per pass (None: `chunk_elements_for` the logits' device).
    Labels outside the vocabulary are an error. On a CPU they are checked at every call; on
    other devices reading the check back would stop the host until the forward pass has run, so
    a flag gathers on the device and is read every ``label_check_every`` calls (`check_labels`).
    """

    def __init__(
        self,
        *,
        focal_weight: float = 100.0,
        dice_weight: float = 1.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
        chunk_elements: int | None = None,
        label_check_every: int = 100,
    ) -> None:
        super().__init__()
        self.chunk_elements = chunk_elements
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.alpha = alpha
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.label_check_every = label_check_every
        self._bad_labels: torch.Tensor | None = None  # on the device: a batch not yet read back held one
        self._unchecked = 0
        self._num_classes = 0

    def _labels_error(self, num_classes: int, where: str) -> ValueError:
        return ValueError(
            f"labels hold values {where}outside 0..{num_classes - 1} and the ignore index {self.ignore_index}"
        )

    def _watch_labels(self, labels: torch.Tensor, num_classes: int) -> None:
        bad = (labels >= num_classes) & (labels != self.ignore_index)
        if _reads_are_free(labels.device):
            if bad.any():
                raise self._labels_error(num_classes, f"{labels[bad].unique().tolist()} ")
            return
        flag = bad.any()
        self._bad_labels = flag if self._bad_labels is None else self._bad_labels | flag
        self._unchecked, self._num_classes = self._unchecked + 1, num_classes
        if self._unchecked >= self.label_check_every:
            self.check_labels()

    def check_labels(self) -> None:
        """Raise if a batch since the last check held labels outside the vocabulary (one read back)."""
        flag, calls = self._bad_labels, self._unchecked
        self._bad_labels, self._unchecked = None, 0
        if flag is not None and bool(flag):
            raise self._labels_error(self._num_classes, f"in one of the last {calls} batches ")

    def forward(
        self, mask_logits: torch.Tensor, labels: torch.Tensor, num_masks: float | None = None
    ) -> dict[str, torch.Tensor]:
        B, C = mask_logits.shape[:2]
        self._watch_labels(labels, C)
        logits = upsample(mask_logits, labels.shape[-2:]).float().flatten(0, 1).flatten(1)  # (B*C) x HW
        chunk_elements = self.chunk_elements or chunk_elements_for(logits.device)
        chunk_rows = max(1, chunk_elements // logits.shape[1])
        focal, dice, positives = _FocalDice.apply(
            logits, labels.flatten(1).to(torch.int16), C, self.alpha, self.gamma, chunk_rows
        )  # each (B*C): focal mean over pixels, dice, |t|
        present = positives > 0  # the class is in the image
        masks = present.sum().detach().float()
        divisor = global_num_masks(masks) if num_masks is None else num_masks
        loss_focal = focal.sum() / divisor
        loss_dice = (dice * present).sum() / divisor  # dice only on the classes present

        loss_focal = self.focal_weight * loss_focal
        loss_dice = self.dice_weight * loss_dice
        return {"loss_focal": loss_focal, "loss_dice": loss_dice, "loss": loss_focal + loss_dice, "masks": masks}


@torch.no_grad()
def pseudo_labels(
    mask_logits: torch.Tensor,
    labels: torch.Tensor,
    unseen_ids: Sequence[int] | torch.Tensor,
    *,
    hidden_index: int = HIDDEN_INDEX,
) -> torch.Tensor:
    """Fill hidden pixels with the most likely UNSEEN class (transductive self-training).

    Args:
        mask_logits: B x C x h x w, from the current forward pass.
        labels: B x H x W, ``hidden_index`` where the ground truth is withheld.
        unseen_ids: vocabulary indices of the unseen classes.

    Returns:
        B x H x W labels; hidden pixels get argmax over unseen classes of the sigmoid
        of the logits upsampled to H x W; every other pixel is unchanged.
    """
    unseen = torch.as_tensor(unseen_ids, dtype=torch.long)
    if unseen.device != labels.device:  # a list: copied without stopping the host (a plain copy would wait)
        unseen = unseen.pin_memory() if labels.is_cuda else unseen
        unseen = unseen.to(labels.device, non_blocking=True)
    if unseen.numel() == 0:
        raise ValueError("transductive pseudo labels need at least one unseen class")
    scores = upsample(mask_logits.detach()[:, unseen], labels.shape[-2:]).float().sigmoid()
    guess = unseen[scores.argmax(dim=1)]  # B x H x W
    return torch.where(labels == hidden_index, guess.to(labels.dtype), labels)
