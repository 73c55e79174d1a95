"""The encoder's attention: the compiled CPU backward (and its unfused forward) against PyTorch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zegclip.model import attention as attention_module
from zegclip.model.attention import attention
from zegclip.model.loss import ZegCLIPCriterion


def _grads(fn, q, k, v, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


@pytest.fixture
def heads_calls(monkeypatch):
    """Counts the head groups the compiled backward processes."""
    calls = []
    original = attention_module._run_heads_backward

    def spy(*args):
        calls.append(args[0].shape[0])
        return original(*args)

    monkeypatch.setattr(attention_module, "_run_heads_backward", spy)
    return calls


def test_compiled_backward_matches_flash(heads_calls):
    torch.manual_seed(0)
    q, k, v, grad_out = (torch.randn(2, 3, 37, 16, dtype=torch.bfloat16) for _ in range(4))
    ref_out, ref = _grads(F.scaled_dot_product_attention, q, k, v, grad_out)
    out, got = _grads(lambda *t: attention(*t, cpu_backward="compiled"), q, k, v, grad_out)
    assert sum(heads_calls) == 6  # every (image, head) once, a few heads per call
    # forward and backward round as autocast on the unfused attention does (bf16 scores and
    # dP, fp32 softmax), as the released code runs under autocast
    unfused_out, unfused = _grads(_autocast_unfused, q, k, v, grad_out)
    exact_out, exact = _grads(F.scaled_dot_product_attention, *(t.float() for t in (q, k, v, grad_out)))
    assert out.dtype == torch.bfloat16 and _rel(out, unfused_out) < 1e-2
    assert _rel(out, exact_out) < 2e-2 and _rel(ref_out, exact_out) < 2e-2
    for name, a, b, u, e in zip("qkv", got, ref, unfused, exact, strict=True):
        assert a.dtype == torch.bfloat16
        assert _rel(a, u) < 1e-2, f"d{name}: {_rel(a, u):.2e} from autocast's unfused attention"
        assert _rel(a, e) < 3e-2 and _rel(b, e) < 3e-2, f"d{name}: {_rel(a, e):.2e} from fp32"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _autocast_unfused(q, k, v):
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # bf16
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype) @ v


def test_eager_fallback_when_compiling_fails(monkeypatch):
    def broken():
        raise RuntimeError("no compiler")

    monkeypatch.setattr(attention_module, "_compiled_heads_backward", broken)
    monkeypatch.setattr(attention_module, "_compile_failed", False)
    q, k, v, grad_out = (torch.randn(1, 2, 11, 8, dtype=torch.bfloat16) for _ in range(4))
    _, ref = _grads(F.scaled_dot_product_attention, q, k, v, grad_out)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        _, got = _grads(lambda *t: attention(*t, cpu_backward="compiled"), q, k, v, grad_out)
    for a, b in zip(got, ref, strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_fp32_keeps_pytorch_backward(monkeypatch):
    monkeypatch.setattr(attention_module._CompiledBackwardAttention, "apply", None)  # would fail if called
    q = torch.randn(1, 2, 5, 8, requires_grad=True)
    attention(q, q, q, cpu_backward="compiled").sum().backward()
    assert q.grad is not None


def test_unknown_backward_named(tiny_model):
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="cpu_attention_backward"):
        attention(q, q, q, cpu_backward="fast")
    with pytest.raises(ValueError, match="cpu_attention_backward"):  # refused when set, not at the first step
        tiny_model.image_encoder.cpu_attention_backward = "fast"
    assert tiny_model.image_encoder.cpu_attention_backward == "flash"


def test_prompt_gradients_equal_with_compiled_backward(make_tiny_model, heads_calls):
    """Wired through the encoder: a bf16 step's gradients are as close to fp32's with it as without."""
    images, labels = torch.randn(2, 3, 64, 48), torch.randint(0, 3, (2, 64, 48))
    grads = {}
    for run in ("fp32", "flash", "compiled"):
        model = make_tiny_model(prompt_dropout=0.0, dropout=0.0).train()
        model.image_encoder.cpu_attention_backward = "flash" if run == "fp32" else run
        embeds = model.encode_text(["cat", "dog", "sky"], ["a photo of a {}."])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run != "fp32"):
            loss = ZegCLIPCriterion()(model(images, embeds).logits, labels)["loss"]
        loss.backward()
        grads[run] = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert sum(heads_calls) == 2 * 2  # 2 blocks x 2 images x 1 head of the tiny ViT, all compiled
    assert grads["fp32"].keys() == grads["flash"].keys() == grads["compiled"].keys()
    scale = max(g.norm().item() for g in grads["fp32"].values())
    for name, ref in grads["fp32"].items():
        # a key bias shifts every key's score alike, which the softmax cancels: its gradient is
        # zero up to rounding, so it is compared against the largest gradient, not its own size
        norm = max(ref.norm().item(), 1e-3 * scale)
        flash, compiled = ((grads[run][name] - ref).norm().item() / norm for run in ("flash", "compiled"))
        assert compiled < 2e-2 and compiled < 2 * flash + 5e-3, f"{name}: {compiled:.2e} (flash: {flash:.2e})"
