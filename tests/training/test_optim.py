"""Optimiser groups and the warm-up + poly schedule against hand-computed values (docs/method.md §7)."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch
from torch import nn

from zegclip.model.build import zegclip_tiny
from zegclip.training.optim import (
    build_optimizer,
    build_param_groups,
    build_scheduler,
    describe_param_groups,
    poly_warmup_factor,
)

MAX_STEPS = 20_000
BASE_LR = 2e-4

# lr(i) for max 20,000, base 2e-4, min 1e-6, warm-up 1,500, ratio 1e-6, power 0.9, worked out
# with a 40-digit calculator (x ** 0.9 = exp(0.9 ln x)):
#   i = 0:     poly = 1.99e-4 * 1 + 1e-6 = 2e-4; warm = 1 - 1 * (1 - 1e-6) = 1e-6          -> 2e-10
#   i = 1:     0.99995 ** 0.9 = 0.99995499988750; poly = 1.99991044977612e-4
#              warm = 1 - (1499 / 1500) * 0.999999 = 6.67666e-4                            -> 1.33527221036022e-7
#   i = 1499:  0.92505 ** 0.9 = 0.93228497861498; poly = 1.86524710744380e-4
#              warm = 1 - (1 / 1500) * 0.999999 = 0.999333334                              -> 1.86400361061567e-4
#   i = 1500:  no warm-up; 0.925 ** 0.9 = 0.93223962653950                                 -> 1.86515685681360e-4
#   i = 10000: 0.5 ** 0.9 = 0.53588673126815; 1.99e-4 * that + 1e-6                        -> 1.07641459522361e-4
#   i = 19999: 5e-5 ** 0.9 = 1.34608660909848e-4; 1.99e-4 * that + 1e-6                    -> 1.02678712352106e-6
EXPECTED_LR = {
    0: 2e-10,
    1: 1.33527221036022e-7,
    1499: 1.86400361061567e-4,
    1500: 1.86515685681360e-4,
    10000: 1.07641459522361e-4,
    19999: 1.02678712352106e-6,
}


@pytest.mark.parametrize("step", sorted(EXPECTED_LR))
def test_poly_warmup_factor_matches_hand_values(step):
    factor = poly_warmup_factor(step, max_steps=MAX_STEPS, base_lr=BASE_LR)
    assert BASE_LR * factor == pytest.approx(EXPECTED_LR[step], rel=1e-12)


def test_poly_warmup_factor_clamps_and_ends_at_min_lr():
    factor = functools.partial(poly_warmup_factor, max_steps=MAX_STEPS, base_lr=BASE_LR)
    assert BASE_LR * factor(MAX_STEPS) == pytest.approx(1e-6, rel=1e-12)  # poly(max) = min_lr
    assert factor(MAX_STEPS + 500) == factor(MAX_STEPS)  # no negative base for the power
    assert factor(-3) == factor(0)
    assert poly_warmup_factor(10, max_steps=100, base_lr=0.0) == 0.0
    with pytest.raises(ValueError, match="max_steps"):
        poly_warmup_factor(0, max_steps=0, base_lr=BASE_LR)


def test_scheduler_drives_adamw_through_the_hand_values():
    model = nn.Linear(2, 1)
    optimizer = build_optimizer(model)
    scheduler = build_scheduler(optimizer, max_steps=MAX_STEPS)
    seen = {}
    for i in range(max(EXPECTED_LR) + 1):
        if i in EXPECTED_LR:
            seen[i] = optimizer.param_groups[0]["lr"]  # the lr step i will use
        optimizer.step()  # no grads: parameters untouched, but the schedule advances as in training
        scheduler.step()
    assert seen == pytest.approx(EXPECTED_LR, rel=1e-12)


def test_scheduler_uses_each_groups_own_base_lr():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [a], "lr": 2e-4}, {"params": [b], "lr": 1e-3}])
    scheduler = build_scheduler(optimizer, max_steps=100, warmup_steps=0)
    for _ in range(50):
        optimizer.step()
        scheduler.step()
    # i = 50: poly = (lr0 - 1e-6) * 0.5 ** 0.9 + 1e-6, 0.5 ** 0.9 = 0.53588673126815
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.99e-4 * 0.53588673126815 + 1e-6, rel=1e-12)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.999e-3 * 0.53588673126815 + 1e-6, rel=1e-12)
    state = pickle.loads(pickle.dumps(scheduler.state_dict()))  # checkpointable
    assert state["last_epoch"] == 50


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.head = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
        self.scale = nn.Parameter(torch.ones(1))


def test_param_groups_exclude_frozen_and_decay_biases_and_norms():
    model = _Tiny()
    groups = build_param_groups(model, lr=2e-4, weight_decay=0.01)
    assert [g["name"] for g in groups] == ["model", "head"]  # root's own parameters come first
    assert all(g["lr"] == 2e-4 and g["weight_decay"] == 0.01 for g in groups)
    head = model.head
    assert groups[0]["params"] == [model.scale]
    assert groups[1]["params"] == [head[0].weight, head[0].bias, head[1].weight, head[1].bias]
    listed = {id(p) for g in groups for p in g["params"]}
    assert not listed & {id(p) for p in model.frozen.parameters()}

    text = describe_param_groups(groups)
    assert "head: 4 tensors, 24 parameters" in text  # 3*4 + 4 + 4 + 4
    assert "total: 5 trainable tensors, 25 parameters" in text

    optimizer = build_optimizer(model)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (2e-4, 0.01, (0.9, 0.999), 1e-8)

    with pytest.raises(ValueError, match="no trainable"):
        build_param_groups(nn.Linear(2, 2).requires_grad_(False))


def test_param_groups_cover_exactly_the_trainable_set_of_tiny_zegclip():
    model = zegclip_tiny()
    groups = build_param_groups(model)
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len({id(p) for p in grouped})  # no tensor twice
    assert {id(p) for p in grouped} == {id(p) for p in trainable}
    assert {g["name"] for g in groups} == {"image_encoder", "relationship", "decoder"}  # text tower frozen
    assert any(p.requires_grad is False for p in model.image_encoder.parameters())  # CLIP itself frozen
    assert all(g["weight_decay"] == 0.01 and g["lr"] == 2e-4 for g in groups)
