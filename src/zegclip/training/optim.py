"""Optimiser and learning-rate schedule of the released ZegCLIP configs (docs/method.md §7); pure torch.

AdamW at lr 2e-4 and weight decay 0.01 for every trainable tensor, with mmcv's poly schedule
(power 0.9, floor 1e-6) and a linear warm-up over the first 1,500 iterations, stepped once
per iteration.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = [
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "describe_param_groups",
    "poly_warmup_factor",
]


def build_param_groups(model: nn.Module, lr: float = 2e-4, weight_decay: float = 0.01) -> list[dict]:
    """Parameter groups for the optimiser: every trainable tensor, same lr and weight decay.

    Why there is no no-decay group: the released config sets ``lr_mult=10`` on the
    ``backbone`` and ``head`` keys (base lr 2e-5, so 2e-4 effective) and ``decay_mult=0``
    on norm keys, but mmcv tries the custom keys longest first and stops at the first one the
    parameter name contains; every trainable name contains ``backbone`` or ``head``, which
    are tried before the norm keys, so the no-decay rule never reaches a trainable tensor and
    norms and biases are decayed like everything else. We reproduce that (docs/method.md §7).

    Frozen parameters (``requires_grad=False``, e.g. the CLIP towers) are left out, so the
    optimiser holds no state for them. Tensors are grouped by the model's top-level child
    (``image_encoder``, ``relationship``, ``decoder``, ...) only so that logs can tell the
    parts apart; all groups share the same hyper-parameters.

    Args:
        model: the network; shared parameters are listed once.
        lr: learning rate of every group.
        weight_decay: decoupled weight decay of every group.

    Returns:
        A list of ``{"name", "params", "lr", "weight_decay"}`` dicts, in parameter order.

    Raises:
        ValueError: when the model has no trainable parameter.
    """
    groups: dict[str, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        top = name.split(".", 1)[0] if "." in name else "model"
        group = groups.setdefault(top, {"name": top, "params": [], "lr": lr, "weight_decay": weight_decay})
        group["params"].append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return list(groups.values())


def describe_param_groups(groups: list[dict]) -> str:
    """One line per group with its tensor and parameter counts and hyper-parameters, then a total."""
    lines = []
    total_tensors = total_params = 0
    for group in groups:
        n_tensors = len(group["params"])
        n_params = sum(p.numel() for p in group["params"])
        total_tensors += n_tensors
        total_params += n_params
        lines.append(
            f"{group.get('name', '?')}: {n_tensors} tensors, {n_params:,} parameters, "
            f"lr {group.get('lr', float('nan')):g}, weight decay {group.get('weight_decay', float('nan')):g}"
        )
    lines.append(f"total: {total_tensors} trainable tensors, {total_params:,} parameters")
    return "\n".join(lines)


def build_optimizer(
    model: nn.Module,
    lr: float = 2e-4,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`build_param_groups` (docs/method.md §7 defaults)."""
    groups = build_param_groups(model, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def poly_warmup_factor(
    step: int,
    *,
    max_steps: int,
    base_lr: float,
    warmup_steps: int = 1500,
    warmup_ratio: float = 1e-6,
    power: float = 0.9,
    min_lr: float = 1e-6,
) -> float:
    """Multiplier of ``base_lr`` giving mmcv's poly + linear warm-up lr for iteration ``step``.

    With i the 0-based iteration (the lr set before optimiser step i), clamped to
    0..``max_steps``::

        poly(i) = (base_lr - min_lr) * (1 - i / max_steps) ** power + min_lr
        lr(i)   = poly(i) * (1 - (1 - i / warmup_steps) * (1 - warmup_ratio))   if i < warmup_steps
        lr(i)   = poly(i)                                                        otherwise

    and the function returns ``lr(i) / base_lr``. A group with ``base_lr == 0`` stays at 0
    (mmcv would give it ``min_lr``; frozen parts never reach the optimiser anyway).
    """
    if max_steps <= 0:
        raise ValueError(f"max_steps must be positive, got {max_steps}")
    if base_lr == 0:
        return 0.0
    i = min(max(int(step), 0), max_steps)
    lr = (base_lr - min_lr) * (1 - i / max_steps) ** power + min_lr
    if i < warmup_steps:
        lr *= 1 - (1 - i / warmup_steps) * (1 - warmup_ratio)
    return lr / base_lr


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    max_steps: int,
    warmup_steps: int = 1500,
    warmup_ratio: float = 1e-6,
    power: float = 0.9,
    min_lr: float = 1e-6,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration warm-up + poly schedule; step it once after every optimiser step.

    Each group's lambda uses that group's initial lr as ``base_lr``, so groups with different
    learning rates each follow their own mmcv curve (the floor ``min_lr`` is absolute).
    """
    lambdas = [
        functools.partial(
            poly_warmup_factor,
            max_steps=max_steps,
            base_lr=group.get("initial_lr", group["lr"]),
            warmup_steps=warmup_steps,
            warmup_ratio=warmup_ratio,
            power=power,
            min_lr=min_lr,
        )
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambdas)
