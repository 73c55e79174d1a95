"""Tensors kept across calls, and the one rule for reusing them whatever grad mode made them."""

from __future__ import annotations

import torch


def reusable(cached: torch.Tensor) -> bool:
    """Whether a tensor cached by an earlier call may be used by this one.

    One made under ``torch.inference_mode`` (Lightning's ``trainer.validate`` and ``trainer.test``,
    or a caller's own) is an inference tensor: autograd refuses to save it for backward, so a
    training forward after such a call must make its copy again. Normal tensors serve every mode.
    """
    return not cached.is_inference() or torch.is_inference_mode_enabled()
