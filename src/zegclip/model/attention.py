"""Attention for the frozen CLIP blocks, with an optional faster training path on CPU.

By default the forward and backward are ``F.scaled_dot_product_attention``'s. On CPU its
flash-attention backward is the slowest part of a training step (about 5x its forward, ~40%
of a bf16 step at 512x512). ``cpu_backward="compiled"`` replaces it, in bf16 and fp16 (in
fp32 it measured slower than PyTorch's), with the textbook backward (recompute the softmax,
then dV, dP, dS, dQ, dK), run a few heads at a time so each head's T x T scores stay in
cache, with its elementwise work fused by ``torch.compile``. Its rounding is that of
autocast on an unfused attention, as the released code runs under autocast (bf16 scores and
dP, fp32 softmax), and the forward under it is that unfused attention too (a few heads at a
time, faster than the flash forward on CPU in bf16), so the backward differentiates the
function the forward computed. Gradients stay about 1% from fp32 maths, as with PyTorch's
kernels. Calls without gradients (validation, inference) keep the flash forward and its fp32
scores: with peaked attention (logits spread ~10) bf16 scores measured 16x its error.
It needs a C++ compiler for inductor; where compiling fails it runs the same maths
eagerly (slower) after one warning.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

CPU_BACKWARDS = ("flash", "compiled")


def _heads_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, grad_out: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of softmax(q k^T * scale) v for G heads: each G x T x d, scores G x T x T."""
    probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)).float() * scale, dim=-1)  # G x T x T (fp32)
    grad_v = torch.bmm(probs.to(grad_out.dtype).transpose(1, 2), grad_out)
    grad_probs = torch.bmm(grad_out, v.transpose(1, 2)).float()  # G x T x T
    row_dot = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # = sum_j P_ij dP_ij, G x T x 1
    grad_scores = (probs * (grad_probs - row_dot) * scale).to(grad_out.dtype)
    return torch.bmm(grad_scores, k), torch.bmm(grad_scores.transpose(1, 2), q), grad_v


@functools.cache
def _compiled_heads_backward():
    return torch.compile(_heads_backward, dynamic=False, fullgraph=True)


_compile_failed = False


def _run_heads_backward(*args):
    global _compile_failed
    if not _compile_failed:
        try:
            return _compiled_heads_backward()(*args)
        except Exception as err:  # no C++ toolchain, unsupported platform, ...
            _compile_failed = True
            warnings.warn(
                f"torch.compile of the CPU attention backward failed ({type(err).__name__}: {err}); "
                "running it eagerly instead",
                RuntimeWarning,
                stacklevel=2,
            )
    return _heads_backward(*args)


def _unfused_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v with the backward's rounding: scores and probabilities in bf16/fp16,
    the softmax itself in fp32 (inside ``torch.softmax``); q, k, v B x heads x T x d.

    A few heads at a time (their T x T scores stay in cache); on CPU in bf16 it measured
    faster than PyTorch's flash forward, which keeps fp32 scores.
    """
    B, H, T, d = q.shape
    flat_q, flat_k, flat_v = (t.reshape(B * H, T, d) for t in (q, k, v))
    out = torch.empty(B * H, T, d, dtype=q.dtype, device=q.device)
    group = max(1, torch.get_num_threads())
    with torch.profiler.record_function("unfused attention forward"):  # a range in profiles
        for start in range(0, B * H, group):
            heads = slice(start, start + group)
            scores = torch.bmm(flat_q[heads], flat_k[heads].transpose(1, 2)).mul_(scale)  # G x T x T
            torch.bmm(torch.softmax(scores, dim=-1), flat_v[heads], out=out[heads])
    return out.view(B, H, T, d)


class _CompiledBackwardAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        out = _unfused_forward(q, k, v, q.shape[-1] ** -0.5)  # B x heads x T x d
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out = ctx.saved_tensors
        B, H, T, d = q.shape
        flat = [t.detach().reshape(B * H, T, d) for t in (q, k, v, out, grad_out.contiguous())]
        grads = [torch.empty_like(t) for t in flat[:3]]
        group = max(1, torch.get_num_threads())  # one head per thread: its scores fit that core's cache
        for start in range(0, B * H, group):
            heads = slice(start, start + group)
            for grad, part in zip(grads, _run_heads_backward(*(t[heads] for t in flat), d**-0.5), strict=True):
                grad[heads] = part
        return tuple(g.view(B, H, T, d) for g in grads)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, cpu_backward: str = "flash") -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q, k, v of shape B x heads x T x d.

    ``cpu_backward``: "flash" (PyTorch's) or "compiled" (see the module docstring); it
    only matters on CPU, in bf16 or fp16, when a gradient is needed.
    """
    if cpu_backward not in CPU_BACKWARDS:
        raise ValueError(f"cpu_attention_backward must be one of {CPU_BACKWARDS}, got {cpu_backward!r}")
    if (
        cpu_backward == "compiled"
        and q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)  # in fp32, PyTorch's backward measured faster
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
        and q.shape == k.shape == v.shape
    ):
        return _CompiledBackwardAttention.apply(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)
