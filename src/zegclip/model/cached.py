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


def unchanged_key(t: torch.Tensor) -> tuple:
    """What identifies a tensor's contents for a cache: address, in-place write counter, dtype, device.

    ``Tensor._version`` is private (torch has no public write counter); this is its one use in
    the package, pinned by tests/test_private_apis.py (tested with torch 2.5 to 2.14).
    """
    return (t.data_ptr(), t._version, t.dtype, t.device)
