"""Speed and memory of the ViT-B/16-size ZegCLIP (random weights), fp32 and bf16 autocast.

Prints one JSON object: the CPU model and its bf16-relevant instruction sets, seconds per
512x512 forward (no grad), per sliding-window prediction of a 512x683 image (eager, and
compiled with ``compile_for_inference``), per training step at batch 2 (in bf16 on CPU with
both attention backwards: ``compiled``, the headline figure, and PyTorch's ``flash``), and
the process's peak memory per phase (setup, inference, training, compiling; Linux).

Seconds only compare runs on the same machine. Every timed figure therefore also comes as
machine-relative numbers: its FLOPs (matmuls, convolutions and attention, counted once in
eager mode), the achieved GFLOP/s, and that rate as a fraction of a large (2048^3) matmul's
rate at the same precision measured in the same run. No figure is compared to timings taken
on another machine.

The OpenVINO backend (``zegclip.openvino``, the ``openvino`` extra) is a third variant: its
forward and sliding windows timed in the same interleaved rounds as PyTorch's (speed-ups and
shares of the same rounds' matmul rate), its own process for conversion time, start from the
cached IR and peak memory, its scores against PyTorch fp32. Then each backend runs the real
commands, each in its own process: ``zegclip predict`` (wall time and peak memory, OpenVINO
converting, then starting from its cache) and ``zegclip eval`` on the synthetic set (the
images/s it logs, two interleaved rounds). A precision OpenVINO cannot run on this CPU (bf16
without AVX-512 BF16 or AMX) is reported as not run. Load averages are printed beside the
figures: the machine may be shared.

    python scripts/benchmark.py [--threads 2] [--repeats 3] [--device cpu] [--no-compile]
        [--precision fp32|bf16|both] [--variant zegclip|plain|openvino|both|all] [--no-commands]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from zegclip import build_zegclip
from zegclip.efficiency import EXTRA_FORMULAS, synchronize
from zegclip.errors import ZegCLIPError
from zegclip.model import ZegCLIPCriterion, clip_encoder

LOGIT_SPREAD = 300.0
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""CPU flags that decide bf16 speed: AVX-512, its bf16 dot products, and AMX tiles with bf16."""
TIMED = {  # timed figure -> the FLOP count it runs (compiling and the attention backward change no FLOPs)
    "forward_s": "forward",
    "forward_compiled_s": "forward",
    "slide_512x683_s": "slide_512x683",
    "slide_512x683_compiled_s": "slide_512x683",
    "train_step_b2_s": "train_step_b2",
    "train_step_b2_flash_backward_s": "train_step_b2",
}


def _attention_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """dV, dP, dQ and dK of the CPU flash-attention backward: twice the forward's Q K^T and A V."""
    B, heads, Lq, E = query_shape
    return 4 * B * heads * Lq * key_shape[-2] * (E + value_shape[-1])


def count_flops(fn) -> int:
    """FLOPs of the matmuls, convolutions and attention ``fn`` runs, the CPU attention backward included.

    ``zegclip.efficiency.count_flops`` plus a formula for the CPU attention backward, which
    torch's counter does not know either.
    """
    mapping = dict(EXTRA_FORMULAS)
    name = "_scaled_dot_product_flash_attention_for_cpu_backward"
    if hasattr(torch.ops.aten, name):
        mapping[getattr(torch.ops.aten, name)] = _attention_backward_flops
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def openvino():
    """``zegclip.openvino`` (its own import of openvino fails with a one-line error naming the extra)."""
    import zegclip.openvino as zov

    return zov


def openvino_missing(precision: str) -> str | None:
    """Why the OpenVINO backend cannot run at ``precision`` on this machine, or None."""
    try:
        available = openvino().cpu_precisions()
    except ZegCLIPError as err:
        return str(err)
    if precision not in available:
        return f"OpenVINO runs {', '.join(available)} on this CPU, not {precision} (no AVX-512 BF16 or AMX)"
    return None


def cpu_info() -> dict:
    """CPU model ("model name" of /proc/cpuinfo, else platform.processor()) and its bf16 flags.

    A flag is True/False when /proc/cpuinfo lists the CPU's flags, None where it cannot be read.
    """
    model, flags = None, None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and flags is None:
                flags = set(value.split())
    return {
        "cpu": model or platform.processor() or platform.machine() or "unknown",
        "cpu_bf16_features": {flag: None if flags is None else flag in flags for flag in BF16_FLAGS},
    }


def timed_call(fn: Callable[[], object], device: str) -> float:
    """Wall seconds of one call of ``fn``; on a GPU the queued work is waited for before and after."""
    synchronize(torch.device(device))
    start = time.perf_counter()
    fn()
    synchronize(torch.device(device))
    return time.perf_counter() - start


def best_time(fn, repeats: int, device: str) -> float:
    """Best wall time of ``fn`` after a warm-up; on a GPU the queued work is waited for (CUDA runs
    asynchronously: without waiting the clock would time the kernel launches only)."""
    fn()  # warm-up
    return min(timed_call(fn, device) for _ in range(repeats))


def matmul_gflops(dtype: torch.dtype, device: str, repeats: int) -> float:
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    seconds = best_time(lambda: a @ b, repeats + 2, device)
    return 2 * 2048**3 / seconds / 1e9


def peak_rss_gib() -> float:
    """The process's peak resident memory since start, or since the last reset_peak_rss()."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_rss() -> bool:
    """Start a new peak (Linux: clear_refs 5 resets VmHWM); False where that is not possible.

    Memory the allocator freed but kept is handed back first (glibc ``malloc_trim``), so the
    next phase's peak does not start from what the previous phase left behind.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def plain_block(block: torch.nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    """One CLIP block as the released code computes it: one PyTorch op per step, no fusing.

    open_clip's ``block(x)`` itself is not used: under autocast with a batch of two, its
    batch-first nn.MultiheadAttention sends the transposed input through a ``matmul`` that
    copies the in-projection weight once per token (30x slower on torch 2.14), which the
    released code never meets.
    """
    attn = block.attn
    B, T, W = x.shape
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # B x T x 3W
    q, k, v = qkv.view(B, T, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)  # B x heads x T x d
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, W)
    x = x + F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
    return x + block.mlp(block.ln_2(x))  # c_fc, QuickGELU (x * sigmoid(1.702 x)), c_proj


_PLAIN_BLOCKS: set[int] = set()  # ids of the blocks that run as plain_block
_OWN_RUN_BLOCK = clip_encoder.run_block


def _run_block(block: torch.nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    return plain_block(block, x) if id(block) in _PLAIN_BLOCKS else _OWN_RUN_BLOCK(block, x, *args)


clip_encoder.run_block = _run_block  # the encoder's loop calls it for every block


def random_model(device: str = "cpu") -> torch.nn.Module:
    """The ViT-B/16-size ZegCLIP with random weights (seed 0), in eval mode, its logits spread.

    Random weights give near-identical scores for every class (top-two margins ~1e-4), which
    would make the bf16 agreement check vacuous; a larger last-layer query map spreads the
    logits like a trained model's, so many pixels have margins >= 0.01.
    """
    torch.manual_seed(0)
    model = build_zegclip("ViT-B-16", None, 10, quick_gelu=True).to(device).eval()
    with torch.no_grad():
        model.decoder.last.q.weight.mul_(LOGIT_SPREAD)
        model.decoder.last.q.bias.mul_(LOGIT_SPREAD)
    return model


def set_variant(model: torch.nn.Module, precision: str, device: str, variant: str, cast: bool) -> None:
    """Make ``model`` run as ``variant`` (see workload); OpenVINO converts the fp32 model as it is."""
    if variant == "plain":
        _PLAIN_BLOCKS.update(id(block) for block in model.image_encoder.visual.transformer.resblocks)
    elif variant == "openvino":  # the fp32 model converted; OpenVINO runs it in `precision`
        pass
    else:
        if precision == "bf16" and cast:
            model.image_encoder.cast_frozen_matmuls(torch.bfloat16)  # frozen weights cast once, not per call
        if precision == "bf16" and device == "cpu":
            model.image_encoder.cpu_attention_backward = "compiled"


def autocast_context(precision: str, device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``, or no autocast for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def torch_closures(model, autocast, image: torch.Tensor, wide: torch.Tensor, embeds: torch.Tensor) -> tuple:
    """PyTorch's forward (logits of ``image``, no grad) and sliding-window prediction of ``wide``."""

    def forward():
        with torch.no_grad(), autocast:
            return model(image, embeds).logits

    def slide():
        with autocast:
            return model.predict(wide, embeds, mode="slide")

    return forward, slide


def openvino_closures(compiled, image: torch.Tensor, wide: torch.Tensor, embeds: torch.Tensor) -> tuple:
    """The same two closures through the compiled OpenVINO model (no autocast: it runs its own precision)."""

    def forward():
        return compiled.decode_logits(compiled.encode_images(image), embeds)

    def slide():
        return compiled.predict(wide, embeds, mode="slide")

    return forward, slide


def workload(
    precision: str,
    device: str,
    num_classes: int,
    variant: str,
    cast: bool = True,
    openvino_cache: str | None = None,
) -> dict:
    """The model of one variant and its timed closures: forward, slide, train_step.

    zegclip in bf16 stores the frozen weights in bf16 (``cast``, as ``zegclip predict
    --precision bf16`` and ``zegclip eval`` do), or keeps them in fp32 and serves their bf16
    copies from its cast cache (``cast=False``, as ``zegclip train`` does, whose checkpoints
    keep the fp32 weights); in bf16 on CPU its training step uses the compiled attention
    backward. OpenVINO compiles into ``openvino_cache`` (``--openvino-cache``: one folder for
    the whole benchmark).
    """
    model = random_model(device)
    set_variant(model, precision, device, variant, cast)
    embeds = torch.nn.functional.normalize(torch.randn(num_classes, 512, device=device), dim=-1)
    autocast = autocast_context(precision, device)
    image = torch.randn(1, 3, 512, 512, device=device)
    wide = torch.randn(1, 3, 512, 683, device=device)
    criterion = ZegCLIPCriterion()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batch = torch.randn(2, 3, 512, 512, device=device)
    labels = torch.randint(0, num_classes, (2, 512, 512), device=device)
    compiled = None
    if variant == "openvino":
        threads = torch.get_num_threads()
        compiled = openvino().compile_model(model, precision, cache_dir=openvino_cache, threads=threads)
        forward, slide = openvino_closures(compiled, image, wide, embeds)
    else:
        forward, slide = torch_closures(model, autocast, image, wide, embeds)

    def train_step():
        model.train()
        with autocast:
            loss = criterion(model(batch, embeds).logits, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.eval()

    return {
        "model": model,
        "compiled": compiled,
        "optimizer": optimizer,
        "criterion": criterion,
        "autocast": autocast,
        "embeds": embeds,
        "image": image,
        "wide": wide,
        "batch": batch,
        "labels": labels,
        "forward": forward,
        "slide": slide,
        "train_step": train_step,
    }


def interleaved_rounds(
    timed: dict[str, dict], figure: str, rounds: int, device: str, matmul: Callable[[], object]
) -> tuple[dict[str, float], float]:
    """Best seconds of each variant's ``figure`` closure over rounds that run each in turn, then
    ``matmul``; and the best seconds of ``matmul`` in the same rounds. One warm-up call each first
    (for the attention backward: compiling)."""
    for run in timed.values():
        run[figure]()
    matmul()
    best, matmul_best = {}, float("inf")
    for _ in range(rounds):
        for variant, run in timed.items():
            best[variant] = min(best.get(variant, float("inf")), timed_call(run[figure], device))
        start = time.perf_counter()
        matmul()
        matmul_best = min(matmul_best, time.perf_counter() - start)
    return best, matmul_best


def speedups_of(figure: str, best: dict[str, float]) -> dict[str, float]:
    """zegclip's speed-up over plain and OpenVINO's over zegclip, for the variants in ``best``."""
    out = {}
    if "plain" in best:
        out[f"speedup_{figure}"] = best["plain"] / best["zegclip"]
    if "openvino" in best:
        out[f"speedup_{figure}_openvino_over_zegclip"] = best["zegclip"] / best["openvino"]
    return out


def interleaved_speedups(
    precision: str,
    device: str,
    repeats: int,
    num_classes: int,
    variants: list[str],
    openvino_cache: str | None = None,
) -> dict:
    """zegclip against plain (and OpenVINO), all in this process, each timing round running each in turn.

    The machine's speed drifts from minute to minute (up to 10-30 %), so ratios of figures
    taken in separate processes mislead; here every ratio compares the best of the same
    rounds. With bf16 on CPU, zegclip's training step uses the compiled attention backward.
    Each round also times the 2048^3 matmul at the same precision, so that the shares of its
    rate come from the same minutes as the figures; OpenVINO runs no training step.
    """
    runs = {
        variant: workload(precision, device, num_classes, variant, openvino_cache=openvino_cache)
        for variant in variants
    }
    ours = runs["zegclip"]
    predict_with_grad = inspect.unwrap(type(ours["model"]).predict)  # the FLOP counter needs grad
    with ours["autocast"]:
        flops = {
            "forward": count_flops(lambda: ours["model"](ours["image"], ours["embeds"])),
            "slide": count_flops(lambda: predict_with_grad(ours["model"], ours["wide"], ours["embeds"], mode="slide")),
        }
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(2048, 2048, device=device, dtype=dtype) for _ in range(2))
    result = {"load_average_before": os.getloadavg()}
    matmul = float("inf")
    for figure, rounds in (("forward", repeats), ("slide", repeats), ("train_step", max(1, repeats - 1))):
        timed = {k: v for k, v in runs.items() if k != "openvino" or figure != "train_step"}
        if figure == "train_step":  # training keeps the fp32 weights, as zegclip train does
            timed["zegclip"] = workload(precision, device, num_classes, "zegclip", cast=False)
        best, matmul_best = interleaved_rounds(timed, figure, rounds, device, lambda: a @ b)
        matmul = min(matmul, matmul_best)
        result[f"{figure}_s"] = best
        result.update(speedups_of(figure, best))
    result["matmul_gflops_per_s"] = rate = 2 * 2048**3 / matmul / 1e9
    for figure, count in flops.items():  # the achieved rate as a share of the same rounds' matmul rate
        result[f"{figure}_fraction_of_matmul"] = {v: count / t / 1e9 / rate for v, t in result[f"{figure}_s"].items()}
    result["load_average_after"] = os.getloadavg()
    return result


def run(precision: str, device: str, repeats: int, num_classes: int, compile_encoder: bool, variant: str) -> dict:
    """One variant at one precision. Phases, each with its own memory peak: setup (building,
    FLOP counts with autograd on), training steps (frozen weights kept in fp32, as zegclip
    train keeps them), inference (zegclip in bf16: frozen weights then stored in bf16, as
    predict and eval store them; trainable weights back to their values before training, so
    the bf16 agreement check compares the same weights), compiling and compiled inference.
    """
    if variant == "openvino":
        return run_openvino(precision, device, repeats, num_classes)
    plain = variant == "plain"
    compile_encoder = compile_encoder and not plain
    w = workload(precision, device, num_classes, variant, cast=False)
    model, optimizer, criterion, autocast = w["model"], w["optimizer"], w["criterion"], w["autocast"]
    embeds, image, wide, batch, labels = w["embeds"], w["image"], w["wide"], w["batch"], w["labels"]
    forward, slide, train_step = w["forward"], w["slide"], w["train_step"]

    model.eval()
    predict_with_grad = inspect.unwrap(type(model).predict)  # predict is no_grad; the FLOP counter needs grad
    encoder = model.image_encoder
    backward = encoder.cpu_attention_backward
    encoder.cpu_attention_backward = "flash"  # the FLOP counter knows its backward's formula
    with autocast:
        flops = {
            "forward": count_flops(lambda: model(image, embeds)),
            "slide_512x683": count_flops(lambda: predict_with_grad(model, wide, embeds, mode="slide")),
        }
        model.train()
        flops["train_step_b2"] = count_flops(  # forward and backward; the optimizer's element-wise work is not counted
            lambda: criterion(model(batch, embeds).logits, labels)["loss"].backward()
        )
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    before_training = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    setup_peak = peak_rss_gib()
    phases = reset_peak_rss()  # then one peak per phase
    result = {"precision": precision, "variant": variant}
    if backward == "compiled":  # also timed with PyTorch's attention backward
        result["train_step_b2_flash_backward_s"] = best_time(train_step, max(1, repeats - 1), device)
        encoder.cpu_attention_backward = "compiled"  # the first (warm-up) step compiles it
    result["train_step_b2_s"] = best_time(train_step, max(1, repeats - 1), device)
    result["cpu_attention_backward"] = encoder.cpu_attention_backward
    if phases:
        result["peak_rss_setup_gib"] = setup_peak
        result["peak_rss_train_gib"] = peak_rss_gib()
    optimizer.zero_grad(set_to_none=True)
    model.load_weights(before_training, trainable_only=True)
    if precision == "bf16" and not plain:
        encoder.cast_frozen_matmuls(torch.bfloat16)  # frozen weights stored in bf16 once, not cast per call
    gc.collect()
    reset_peak_rss()
    with torch.no_grad():  # scores for the bf16 agreement check
        scores = {"eager": slide().float().cpu()}
        logit_std = forward().float().std().item()
    result["forward_s"] = best_time(forward, repeats, device)
    result["slide_512x683_s"] = best_time(slide, repeats, device)
    result["peak_rss_inference_gib" if phases else "peak_rss_gib"] = peak_rss_gib()
    if compile_encoder:  # first calls compile (and autotune) per input shape; timed separately
        reset_peak_rss()
        encoder.compile_for_inference()
        start = time.perf_counter()
        with torch.no_grad():
            scores["compiled"] = slide().float().cpu()
            forward()
        synchronize(torch.device(device))
        result["compile_s"] = time.perf_counter() - start
        result["forward_compiled_s"] = best_time(forward, repeats, device)
        result["slide_512x683_compiled_s"] = best_time(slide, repeats, device)
        result["peak_rss_compiling_and_compiled_inference_gib"] = peak_rss_gib()
    result["logit_std"] = logit_std
    matmul = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32, device, repeats)
    result["matmul_gflops_per_s"] = matmul
    for name, count in flops.items():
        result[f"{name}_gflop"] = count / 1e9
    for key, name in TIMED.items():  # machine-relative: the achieved rate, and as a share of the matmul rate
        if key in result:
            figure = key.removesuffix("_s")
            result[f"{figure}_gflops_per_s"] = flops[name] / result[key] / 1e9
            result[f"{figure}_fraction_of_matmul"] = flops[name] / result[key] / 1e9 / matmul
    result["_slide_scores"] = scores
    return result


def run_openvino(precision: str, device: str, repeats: int, num_classes: int) -> dict:
    """The OpenVINO backend at one precision, in its own process. Phases, each with its own memory
    peak: setup (the PyTorch model, FLOP counts), converting (the first compile_model: tracing,
    IR written to an empty cache), inference after starting from the cached IR with the PyTorch
    copies released (as ``zegclip predict --backend openvino`` runs)."""
    zov = openvino()
    model = random_model(device)
    embeds = torch.nn.functional.normalize(torch.randn(num_classes, 512, device=device), dim=-1)
    image = torch.randn(1, 3, 512, 512, device=device)
    wide = torch.randn(1, 3, 512, 683, device=device)
    predict_with_grad = inspect.unwrap(type(model).predict)
    flops = {
        "forward": count_flops(lambda: model(image, embeds)),
        "slide_512x683": count_flops(lambda: predict_with_grad(model, wide, embeds, mode="slide")),
    }
    result = {"precision": precision, "variant": "openvino", "load_average_before": os.getloadavg()}
    result["peak_rss_setup_gib"] = peak_rss_gib()
    phases = reset_peak_rss()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        compiled = zov.compile_model(model, precision, cache_dir=cache, threads=threads)
        result["first_compile_model_s"] = time.perf_counter() - start  # weights hash, tracing, IR, compiling
        result["of_which_converting_s"] = compiled.convert_s
        result["openvino_precision"] = compiled.precision
        if phases:
            result["peak_rss_converting_gib"] = peak_rss_gib()
        del compiled
        zov.forget_compiled(model)  # the next call starts from the IR files
        gc.collect()
        reset_peak_rss()
        start = time.perf_counter()
        compiled = zov.compile_model(model, precision, cache_dir=cache, threads=threads, release_torch_weights=True)
        result["cached_compile_model_s"] = time.perf_counter() - start  # weights hash, reading the IR, compiling
        assert compiled.convert_s is None
    gc.collect()
    if phases:
        result["peak_rss_cached_start_gib"] = peak_rss_gib()
    reset_peak_rss()
    forward, slide = openvino_closures(compiled, image, wide, embeds)
    scores = {"openvino": slide().float().cpu()}
    result["logit_std"] = forward().float().std().item()
    result["forward_s"] = best_time(forward, repeats, device)
    result["slide_512x683_s"] = best_time(slide, repeats, device)
    result["peak_rss_inference_gib" if phases else "peak_rss_gib"] = peak_rss_gib()
    matmul = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32, device, repeats)
    result["matmul_gflops_per_s"] = matmul
    for name, count in flops.items():
        result[f"{name}_gflop"] = count / 1e9
    for key, name in (("forward_s", "forward"), ("slide_512x683_s", "slide_512x683")):
        figure = key.removesuffix("_s")
        result[f"{figure}_gflops_per_s"] = flops[name] / result[key] / 1e9
        result[f"{figure}_fraction_of_matmul"] = flops[name] / result[key] / 1e9 / matmul
    result["load_average_after"] = os.getloadavg()
    result["_slide_scores"] = scores
    return result


def agreement(ref: torch.Tensor, low: torch.Tensor) -> dict:
    """How far bf16 scores (C x H x W per image, stacked) are from fp32's, and where the argmax holds."""
    top2 = ref.topk(2, dim=1).values
    confident = (top2[:, 0] - top2[:, 1]) >= 0.01
    same = ref.argmax(1) == low.argmax(1)
    return {
        "max_score_diff": (ref - low).abs().max().item(),
        "argmax_agreement_where_margin_ge_0.01": same[confident].float().mean().item(),
        "argmax_agreement_all_pixels": same.float().mean().item(),
        "pixels_with_margin_ge_0.01": confident.float().mean().item(),
    }


def memory_against_plain(ours: dict, plain: dict) -> dict:
    """zegclip's peak memory per phase over plain's, each from its own process (< 1: smaller)."""
    out = {}
    for key in ("peak_rss_setup_gib", "peak_rss_inference_gib", "peak_rss_train_gib", "peak_rss_gib"):
        if key in ours and key in plain:
            out[key.removeprefix("peak_rss_").removesuffix("_gib")] = ours[key] / plain[key]
    return out


def _run_measured(cmd: list[str], env: dict) -> dict:
    """Run a command to its end: wall seconds, peak resident memory (its own, from wait4), the
    ``backend:`` line it printed, and the 1-minute load average before and after it."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    backend = [line for line in stderr.splitlines() if line.startswith("backend:")]
    return {
        "wall_s": time.perf_counter() - start,
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # kB on Linux
        **({"backend": backend[0].removeprefix("backend: ")} if backend else {}),
        "load_1min_before_after": [load, os.getloadavg()[0]],
    }


def command_figures() -> dict:
    """``zegclip predict`` and ``zegclip eval`` per backend, each run its own process: wall time and
    peak memory of predict (one 512 x 683 image, VOC vocabulary, sliding windows; OpenVINO first
    converting into an empty cache, then starting from it), and the images/s that eval logs on
    the 12 validation images of the synthetic set at the paper's test scale (one 512 x 512 window
    each). The ViT-B/16 model has random weights (logits spread as above), saved as a checkpoint."""
    import numpy as np
    from PIL import Image

    from zegclip.data.synthetic import make_sample, write_synthetic_voc

    out = {"load_average_before": os.getloadavg()}
    precisions = ["fp32"] + (["bf16"] if any(cpu_info()["cpu_bf16_features"].values()) else [])
    if len(precisions) == 1:
        out["note"] = "no bf16 instructions on this CPU: bf16 runs (PyTorch emulates them) are left out"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": os.path.join(tmp, "cache")}
        model = random_model()
        checkpoint = os.path.join(tmp, "vitb16.pt")
        model.save(checkpoint)
        del model
        image = os.path.join(tmp, "street.png")
        Image.fromarray(make_sample(np.random.default_rng(0), 512, 683)[0]).save(image)
        write_synthetic_voc(os.path.join(tmp, "data", "synthetic"), num_train=1, num_val=12)
        predict = [sys.executable, "-m", "zegclip", "predict", image, "--checkpoint", checkpoint, "--classes", "voc"]
        runs = [("torch", "fp32", ""), ("openvino", "fp32", " (converting)"), ("openvino", "fp32", " (cached)")]
        runs += [r for p in precisions[1:] for r in (("torch", p, ""), ("openvino", p, " (cached)"))]
        figures = {}
        for backend, precision, when in runs:
            cmd = [*predict, "--backend", backend, "--precision", precision, "-o", os.path.join(tmp, "pred")]
            figures[f"predict {backend} {precision}{when}"] = _run_measured(cmd, env)
        out["predict"] = figures
        evaluate = [sys.executable, "-m", "zegclip.eval", "experiment=demo", f"checkpoint={checkpoint}"]
        evaluate += ["data.eval_short_side=512", "module.crop=512", "module.stride=426", "logger=none"]
        evaluate += [f"paths.data_dir={os.path.join(tmp, 'data')}", f"hydra.run.dir={os.path.join(tmp, 'hydra')}"]
        figures = {}
        for round_ in (1, 2):  # interleaved: the machine's speed drifts
            for precision in precisions:
                trainer = "32-true" if precision == "fp32" else "bf16-mixed"
                for backend in ("torch", "openvino"):
                    folder = os.path.join(tmp, f"eval_{backend}_{precision}_{round_}")
                    cmd = [
                        *evaluate,
                        f"backend={backend}",
                        f"trainer.precision={trainer}",
                        f"paths.output_dir={folder}",
                    ]
                    measured = _run_measured(cmd, env)
                    with open(os.path.join(folder, "metrics.json")) as f:
                        metrics = json.load(f)
                    name = f"eval {backend} {precision}"
                    figures.setdefault(name, []).append(
                        {"images_per_s": metrics["eval/images_per_s"], "val/mIoU": metrics["val/mIoU"],
                         "wall_s": measured["wall_s"], "load_1min_before_after": measured["load_1min_before_after"]}
                    )  # fmt: skip
        for precision in precisions:
            torch_best = max(r["images_per_s"] for r in figures[f"eval torch {precision}"])
            ov_best = max(r["images_per_s"] for r in figures[f"eval openvino {precision}"])
            figures[f"eval speedup openvino over torch {precision} (best of each)"] = ov_best / torch_best
        out["eval"] = figures
    out["load_average_after"] = os.getloadavg()
    return out


VARIANT_SETS = {"both": ["zegclip", "plain"], "all": ["zegclip", "plain", "openvino"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (the hidden options are how the benchmark starts its own child processes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument(
        "--variant",
        choices=["zegclip", "plain", "openvino", "both", "all"],
        default="all",
        help="zegclip's own fast paths, the plain reference (see above), the OpenVINO backend; "
        "both: zegclip and plain; all: the three",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled-encoder figures (they take ~2 min to compile)"
    )
    parser.add_argument(
        "--no-commands", action="store_true", help="skip zegclip predict / eval per backend (about 5 min on 2 cores)"
    )
    parser.add_argument("--scores-out", help=argparse.SUPPRESS)  # internal: one run per process
    parser.add_argument("--speedups", help=argparse.SUPPRESS)  # internal: interleaved, these variants
    parser.add_argument("--openvino-cache", help=argparse.SUPPRESS)  # internal: the IR cache
    return parser.parse_args(argv)


def selected_variants(variant: str, device: str) -> list[str]:
    """The variants ``--variant`` names; OpenVINO (a CPU backend) only on the CPU."""
    variants = list(VARIANT_SETS.get(variant, [variant]))
    if device != "cpu" and "openvino" in variants:
        variants.remove("openvino")
    return variants


def run_child(options: list[str]) -> dict:
    """Run this script with ``options`` in its own process; the JSON object it printed."""
    done = subprocess.run([sys.executable, __file__, *options], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def run_variant(args: argparse.Namespace, precision: str, variant: str, common: list[str], tmp: str) -> tuple:
    """One variant at one precision in its own process (so its peak memory is its own): its report
    and its slide scores, or ``{"not_run": why}`` and None where OpenVINO cannot run ``precision``."""
    missing = openvino_missing(precision) if variant == "openvino" else None
    if missing:
        return {"not_run": missing}, None
    out = os.path.join(tmp, f"{precision}_{variant}.pt")
    options = ["--precision", precision, "--variant", variant, "--scores-out", out, *common]
    report = run_child([*options, *(["--no-compile"] if args.no_compile else [])])
    return report, torch.load(out)


def run_children(args: argparse.Namespace, precisions: list[str], variants: list[str]) -> tuple[dict, dict, dict]:
    """Each precision and variant in its own process, then per precision the interleaved speed-ups of
    those that ran (where zegclip and another did): the runs' reports and scores by
    ``<precision>_<variant>``, and the speed-ups by precision."""
    runs, scores, speedups = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
        common += ["--classes", str(args.classes), "--openvino-cache", os.path.join(tmp, "openvino")]
        for precision in precisions:
            ran = []
            for variant in variants:
                name = f"{precision}_{variant}"
                runs[name], score = run_variant(args, precision, variant, common, tmp)
                if score is not None:
                    scores[name] = score
                    ran.append(variant)
            if len(ran) > 1 and "zegclip" in ran:
                speedups[precision] = run_child(["--speedups", ",".join(ran), "--precision", precision, *common])
    return runs, scores, speedups


def machine_report(args: argparse.Namespace, runs: dict) -> dict:
    """The machine, torch and OpenVINO versions and the date, reported once at the top: taken out of
    each run's report."""
    machine = {**cpu_info(), "threads": args.threads, "torch": torch.__version__, "device": args.device}
    for result in runs.values():
        for key in machine:
            result.pop(key, None)
    report = {**machine, "date": time.strftime("%Y-%m-%d")}
    with contextlib.suppress(ZegCLIPError):
        report["openvino"] = openvino().openvino_version()
    return report


def openvino_against_zegclip(interleaved: dict, theirs: dict, ours: dict) -> dict:
    """OpenVINO's interleaved speed-ups over zegclip and its peak inference memory over zegclip's."""
    return {
        "interleaved_speedup_forward": interleaved["speedup_forward_openvino_over_zegclip"],
        "interleaved_speedup_slide": interleaved["speedup_slide_openvino_over_zegclip"],
        "interleaved_matmul_gflops_per_s": interleaved["matmul_gflops_per_s"],
        "interleaved_forward_fraction_of_matmul": interleaved["forward_fraction_of_matmul"],
        "interleaved_slide_fraction_of_matmul": interleaved["slide_fraction_of_matmul"],
        "load_average": [interleaved["load_average_before"], interleaved["load_average_after"]],
        "peak_inference_memory_ratio": theirs["peak_rss_inference_gib"] / ours["peak_rss_inference_gib"],
    }


def compare_variants(precisions: list[str], runs: dict, scores: dict, speedups: dict) -> dict:
    """Per precision, zegclip against plain and OpenVINO against zegclip, where both ran."""
    report = {}
    for precision in precisions:
        ours = runs.get(f"{precision}_zegclip", {})
        if f"{precision}_zegclip" not in scores:
            continue
        if f"{precision}_plain" in scores:
            report[f"{precision}_zegclip_vs_plain"] = {
                "interleaved_speed": {k: v for k, v in speedups[precision].items() if "openvino" not in k},
                "peak_memory_ratio": memory_against_plain(ours, runs[f"{precision}_plain"]),
            }
        if f"{precision}_openvino" in scores:
            theirs = runs[f"{precision}_openvino"]
            report[f"{precision}_openvino_vs_zegclip"] = openvino_against_zegclip(speedups[precision], theirs, ours)
    return report


def score_agreements(precisions: list[str], scores: dict) -> dict:
    """bf16 zegclip (eager and compiled) and OpenVINO at each precision against eager fp32 zegclip."""
    if "fp32_zegclip" not in scores:
        return {}
    ref = scores["fp32_zegclip"]["eager"]
    report = {f"bf16_{name}_vs_fp32": agreement(ref, low) for name, low in scores.get("bf16_zegclip", {}).items()}
    for precision in precisions:
        if f"{precision}_openvino" in scores:
            report[f"openvino_{precision}_vs_fp32"] = agreement(ref, scores[f"{precision}_openvino"]["openvino"])
    return report


def multi_run(args: argparse.Namespace, precisions: list[str], variants: list[str]) -> dict:
    """The whole benchmark: every run in its own process, their comparisons, then the commands."""
    runs, scores, speedups = run_children(args, precisions, variants)
    report = machine_report(args, runs)
    report.update(runs)
    report.update(compare_variants(precisions, runs, scores, speedups))
    report.update(score_agreements(precisions, scores))
    if not args.no_commands and args.device == "cpu" and "openvino" in variants:
        report["commands"] = command_figures()
    return report


def speedups_run(args: argparse.Namespace) -> dict:
    """``--speedups``: the interleaved speed-ups of these variants, in this process."""
    torch.set_num_threads(args.threads)
    variants = args.speedups.split(",")
    return interleaved_speedups(args.precision, args.device, args.repeats, args.classes, variants, args.openvino_cache)


def single_run(args: argparse.Namespace) -> dict:
    """One precision and variant in this process; its slide scores saved to ``--scores-out``."""
    torch.set_num_threads(args.threads)
    result = run(args.precision, args.device, args.repeats, args.classes, not args.no_compile, args.variant)
    scores = result.pop("_slide_scores")
    result.update(device=args.device, threads=torch.get_num_threads(), torch=torch.__version__, **cpu_info())
    if args.device == "cuda":
        result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["cuda_device"] = torch.cuda.get_device_name()
    if args.scores_out:
        torch.save(scores, args.scores_out)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    variants = selected_variants(args.variant, args.device)
    if args.speedups:
        report = speedups_run(args)
    elif len(precisions) > 1 or len(variants) > 1:  # each run in its own process, so peak memory is its own
        report = multi_run(args, precisions, variants)
    else:
        report = single_run(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
