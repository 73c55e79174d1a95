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

    python scripts/benchmark.py [--threads 2] [--repeats 3] [--device cpu] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from zegclip import build_zegclip
from zegclip.efficiency import _EXTRA_FORMULAS
from zegclip.model import ZegCLIPCriterion

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
    mapping = dict(_EXTRA_FORMULAS)
    name = "_scaled_dot_product_flash_attention_for_cpu_backward"
    if hasattr(torch.ops.aten, name):
        mapping[getattr(torch.ops.aten, name)] = _attention_backward_flops
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


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


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(dtype: torch.dtype, device: str, repeats: int) -> float:
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    seconds = best_time(lambda: a @ b, repeats + 2)
    return 2 * 2048**3 / seconds / 1e9


def peak_rss_gib() -> float:
    """The process's peak resident memory since start, or since the last reset_peak_rss()."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 2**20
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_rss() -> bool:
    """Start a new peak (Linux: clear_refs 5 resets VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def run(precision: str, device: str, repeats: int, num_classes: int, compile_encoder: bool) -> dict:
    torch.manual_seed(0)
    model = build_zegclip("ViT-B-16", None, 10, quick_gelu=True).to(device)
    # Random weights give near-identical scores for every class (top-two margins ~1e-4), which
    # would make the bf16 agreement check vacuous; a larger last-layer query map spreads the
    # logits like a trained model's, so many pixels have margins >= 0.01.
    with torch.no_grad():
        model.decoder.last.q.weight.mul_(LOGIT_SPREAD)
        model.decoder.last.q.bias.mul_(LOGIT_SPREAD)
    if precision == "bf16":
        model.image_encoder.cast_frozen_matmuls(torch.bfloat16)  # frozen weights cast once, not per call
    embeds = torch.nn.functional.normalize(torch.randn(num_classes, 512, device=device), dim=-1)
    autocast = (
        torch.autocast(device_type=device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    )
    image = torch.randn(1, 3, 512, 512, device=device)
    wide = torch.randn(1, 3, 512, 683, device=device)
    criterion = ZegCLIPCriterion()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batch = torch.randn(2, 3, 512, 512, device=device)
    labels = torch.randint(0, num_classes, (2, 512, 512), device=device)

    def forward():
        with torch.no_grad(), autocast:
            return model(image, embeds).logits

    def slide():
        with autocast:
            return model.predict(wide, embeds, mode="slide")

    def train_step():
        model.train()
        with autocast:
            loss = criterion(model(batch, embeds).logits, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.eval()

    model.eval()
    predict_with_grad = inspect.unwrap(type(model).predict)  # predict is no_grad; the FLOP counter needs grad
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
    # scores for the bf16 agreement check, before training steps change the weights
    model.eval()
    with torch.no_grad():
        scores = {"eager": slide().float().cpu()}
        logit_std = forward().float().std().item()
    setup_peak = peak_rss_gib()  # building, FLOP counts (autograd on), agreement scores
    phases = reset_peak_rss()  # then one peak per phase
    result = {
        "precision": precision,
        "forward_s": best_time(forward, repeats),
        "slide_512x683_s": best_time(slide, repeats),
    }
    if phases:
        result["peak_rss_setup_gib"] = setup_peak
        result["peak_rss_inference_gib"] = peak_rss_gib()
        reset_peak_rss()
    encoder = model.image_encoder
    before_training = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    # the attention backward only differs on CPU in bf16 (model.attention)
    if device == "cpu" and precision == "bf16":
        result["train_step_b2_flash_backward_s"] = best_time(train_step, max(1, repeats - 1))
        encoder.cpu_attention_backward = "compiled"  # the first (warm-up) step compiles it
    result["train_step_b2_s"] = best_time(train_step, max(1, repeats - 1))
    result["cpu_attention_backward"] = encoder.cpu_attention_backward
    result["peak_rss_train_gib" if phases else "peak_rss_gib"] = peak_rss_gib()
    if compile_encoder:  # first calls compile (and autotune) per input shape; timed separately
        model.load_weights(before_training, trainable_only=True)  # the weights the eager scores had
        encoder.compile_for_inference()
        start = time.perf_counter()
        with torch.no_grad():
            scores["compiled"] = slide().float().cpu()
            forward()
        result["compile_s"] = time.perf_counter() - start
        result["forward_compiled_s"] = best_time(forward, repeats)
        result["slide_512x683_compiled_s"] = best_time(slide, repeats)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the compiled-encoder figures (they take ~2 min to compile)"
    )
    parser.add_argument("--scores-out", help=argparse.SUPPRESS)  # internal: one precision per process
    args = parser.parse_args()
    if args.precision == "both":  # each precision in its own process, so peak memory is its own
        runs, scores = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for precision in ("fp32", "bf16"):
                out = os.path.join(tmp, precision + ".pt")
                cmd = [sys.executable, __file__, "--precision", precision, "--scores-out", out]
                cmd += ["--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
                cmd += ["--classes", str(args.classes)] + (["--no-compile"] if args.no_compile else [])
                runs[precision] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                scores[precision] = torch.load(out)
        for result in runs.values():  # the machine is reported once, at the top
            for key in cpu_info():
                result.pop(key, None)
        report = {
            **cpu_info(),
            "threads": runs["fp32"]["threads"],
            "fp32": runs["fp32"],
            "bf16": runs["bf16"],
            "bf16_speedup_forward": runs["fp32"]["forward_s"] / runs["bf16"]["forward_s"],
            "bf16_speedup_slide": runs["fp32"]["slide_512x683_s"] / runs["bf16"]["slide_512x683_s"],
            "bf16_speedup_train_step": runs["fp32"]["train_step_b2_s"] / runs["bf16"]["train_step_b2_s"],
            "bf16_speedup_matmul": runs["bf16"]["matmul_gflops_per_s"] / runs["fp32"]["matmul_gflops_per_s"],
        }
        ref = scores["fp32"]["eager"]
        top2 = ref.topk(2, dim=1).values
        confident = (top2[:, 0] - top2[:, 1]) >= 0.01
        for name, low in scores["bf16"].items():  # eager and compiled bf16 against eager fp32
            same = ref.argmax(1) == low.argmax(1)
            report[f"bf16_{name}_vs_fp32"] = {
                "max_score_diff": (ref - low).abs().max().item(),
                "argmax_agreement_where_margin_ge_0.01": same[confident].float().mean().item(),
                "argmax_agreement_all_pixels": same.float().mean().item(),
                "pixels_with_margin_ge_0.01": confident.float().mean().item(),
            }
        print(json.dumps(report, indent=2))
        return
    torch.set_num_threads(args.threads)
    result = run(args.precision, args.device, args.repeats, args.classes, not args.no_compile)
    scores = result.pop("_slide_scores")
    result.update(device=args.device, threads=torch.get_num_threads(), torch=torch.__version__, **cpu_info())
    if args.device == "cuda":
        result["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["cuda_device"] = torch.cuda.get_device_name()
    if args.scores_out:
        torch.save(scores, args.scores_out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
