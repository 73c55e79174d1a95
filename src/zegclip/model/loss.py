"""Focal + dice loss over per-class binary masks, and transductive pseudo labels (SPEC sec. 5)."""

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


def global_num_masks(local: torch.Tensor) -> torch.Tensor:
    """Masks in the global batch: all-reduced sum / world size, clamped at 1."""
    num = local.detach().float()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return num.clamp(min=1.0)


class ZegCLIPCriterion(nn.Module):
    """100 x focal (all classes, all pixels) + 1 x dice (classes present), / num_masks.

    Called with mask logits B x C x h x w and labels B x H x W (class ids 0..C-1,
    ``ignore_index`` for ignored pixels), returns ``loss_focal``, ``loss_dice`` (both
    weighted) and ``loss``. Ignored pixels have an all-zero target: they still count
    as negatives in the focal term, as in the released code.
    """

    def __init__(
        self,
        *,
        focal_weight: float = 100.0,
        dice_weight: float = 1.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.alpha = alpha
        self.gamma = gamma
        self.ignore_index = ignore_index

    def forward(self, mask_logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        B, C = mask_logits.shape[:2]
        bad = (labels >= C) & (labels != self.ignore_index)
        if bad.any():
            raise ValueError(
                f"labels hold values {labels[bad].unique().tolist()} outside 0..{C - 1} "
                f"and the ignore index {self.ignore_index}"
            )
        logits = upsample(mask_logits, labels.shape[-2:]).float().flatten(2)  # B x C x HW
        classes = torch.arange(C, device=labels.device).view(1, C, 1)
        target = labels.flatten(1).unsqueeze(1) == classes  # B x C x HW, bool one-hot
        num_pixels = logits.shape[-1]
        positives = target.sum(-1).float()  # B x C: |t|
        present = positives > 0  # the class is in the image
        num_masks = global_num_masks(present.sum())

        # s is the logit of the wrong answer, so BCE = softplus(s) and 1 - p_t = sigmoid(s):
        # the focal term is alpha_t * sigmoid(s) ** gamma * softplus(s), in few passes over memory
        s = torch.where(target, -logits, logits)
        wrong = torch.sigmoid(s)  # 1 - p_t
        focal = F.softplus(s) * (wrong.square() if self.gamma == 2 else wrong.pow(self.gamma))
        focal_pos = torch.where(target, focal, 0.0).sum(-1)  # B x C
        focal_neg = focal.sum(-1) - focal_pos
        focal = (self.alpha * focal_pos + (1 - self.alpha) * focal_neg) / num_pixels  # mean over pixels
        loss_focal = focal.sum() / num_masks

        # dice with p = sigmoid(logit): sum(p*t) = |t| - sum_t(wrong), sum(p) = sum(wrong) + |t| - 2 sum_t(wrong)
        wrong_pos = torch.where(target, wrong, 0.0).sum(-1)
        intersection = positives - wrong_pos
        prob_sum = wrong.sum(-1) + positives - 2 * wrong_pos
        dice = 1 - (2 * intersection + 1) / (prob_sum + positives + 1)
        loss_dice = (dice * present).sum() / num_masks

        loss_focal = self.focal_weight * loss_focal
        loss_dice = self.dice_weight * loss_dice
        return {"loss_focal": loss_focal, "loss_dice": loss_dice, "loss": loss_focal + loss_dice}


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
    unseen = torch.as_tensor(unseen_ids, device=labels.device, dtype=torch.long)
    if unseen.numel() == 0:
        raise ValueError("transductive pseudo labels need at least one unseen class")
    scores = upsample(mask_logits.detach()[:, unseen], labels.shape[-2:]).float().sigmoid()
    guess = unseen[scores.argmax(dim=1)]  # B x H x W
    return torch.where(labels == hidden_index, guess.to(labels.dtype), labels)
