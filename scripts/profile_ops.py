"""Where the time of one bf16 (or fp32) forward / training step goes, per operator group.

Runs the ViT-B/16-size ZegCLIP (random weights) under ``torch.profiler`` and prints a table:
for each group of operators (GEMMs, attention, elementwise, norms, the rest) its share of
the time and, where its FLOPs are known, its GFLOP/s as a fraction of a large (2048^3)
matmul's rate measured in the same run. That fraction is how far each part is from its limit.

    python scripts/profile_ops.py [--precision bf16] [--what forward|compiled|train] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from zegclip import build_zegclip
from zegclip.model import ZegCLIPCriterion

RANGES = {  # an operator run inside one of these (by name fragment) belongs to its group
    "unfused attention forward": "attention forward (unfused)",
    "CompiledBackwardAttentionBackward": "attention backward (compiled)",
}
GROUPS = {  # operator name fragment -> group, first match wins
    "flash_attention_for_cpu_backward": "attention backward (PyTorch flash)",
    "flash_attention": "attention forward (flash)",
    "aten::bmm": "bmm (decoder)",
    "linear_pointwise": "GEMM: linear layers",
    "_mkl_linear": "GEMM: linear layers",
    "aten::addmm": "GEMM: linear layers",
    "aten::mm": "GEMM: linear layers",
    "convolution": "patch embedding (conv)",
    "layer_norm": "layer norms",
    "CompiledFxGraph": "compiled kernels",
    "Torch-Compiled Region": "compiled kernels",
    "TorchDynamo": "compiled kernels",
    "softmax": "softmax (decoder)",
    "softplus": "loss (focal, dice)",
    "upsample": "upsampling",
    "copy_": "copies and casts",
    "_to_copy": "copies and casts",
    "sigmoid": "elementwise",
    "silu": "elementwise",
    "add": "elementwise",
    "mul": "elementwise",
    "where": "elementwise",
}
MATMUL_GROUPS = {g for g in [*GROUPS.values(), *RANGES.values()] if "GEMM" in g or "attention" in g or "bmm" in g}
TOKENS = 1 + 10 + 32 * 32  # class token, 10 prompts, 32 x 32 patches of a 512 x 512 image
WIDTH, LAYERS, HEADS = 768, 12, 12
# qkv (W -> 3W), out (W -> W), MLP (W -> 4W -> W): 2 FLOPs per multiply-add
ENCODER_LINEAR_FLOPS = 2 * TOKENS * LAYERS * WIDTH * (3 * WIDTH + WIDTH + 4 * WIDTH + 4 * WIDTH)
ATTENTION_FLOPS = 4 * LAYERS * TOKENS**2 * WIDTH  # QK^T and PV, all heads


def group_of(event) -> str:
    """The group of a profiled operator: that of the range it runs in, else its own name's."""
    parent = event
    while parent is not None:
        for key, group in RANGES.items():
            if key in parent.name:
                return group
        parent = parent.cpu_parent
    return next((group for key, group in GROUPS.items() if key in event.name), "other")


def _matmul_rate(dtype: torch.dtype) -> float:
    """GFLOP/s of a large (2048^3) matmul in ``dtype`` on this CPU, now."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def _group_totals(prof: profile, what: str, batch: int) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and FLOPs per operator group; FLOPs the profiler does not report are filled in."""
    seconds, flops = defaultdict(float), defaultdict(int)
    for event in prof.events():
        group = group_of(event)
        seconds[group] += event.self_cpu_time_total / 1e6
        flops[group] += event.flops or 0
    if what == "compiled":  # inductor's GEMM calls report no FLOPs: the encoder's linear layers
        flops["GEMM: linear layers"] += batch * ENCODER_LINEAR_FLOPS
    for name in ("attention forward (flash)", "attention forward (unfused)"):
        if seconds.get(name):
            flops[name] = batch * ATTENTION_FLOPS
    for name in ("attention backward (PyTorch flash)", "attention backward (compiled)"):
        if seconds.get(name):  # dV, dP, dQ, dK: twice the forward's matmuls (the recomputed QK^T not counted)
            flops[name] = 2 * batch * ATTENTION_FLOPS
    return seconds, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--what", choices=["forward", "compiled", "train"], default="forward")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = args.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = build_zegclip("ViT-B-16", None, 10, quick_gelu=True)
    if bf16 and args.what != "train":  # training keeps them in fp32 (bf16 copies cached), as zegclip train
        model.image_encoder.cast_frozen_matmuls(torch.bfloat16)
    if bf16:
        model.image_encoder.cpu_attention_backward = "compiled"
    if args.what == "compiled":
        model.image_encoder.compile_for_inference()
    embeds = torch.nn.functional.normalize(torch.randn(20, 512), dim=-1)
    batch = 2 if args.what == "train" else 1
    images = torch.randn(batch, 3, 512, 512)
    labels = torch.randint(0, 20, (batch, 512, 512))
    criterion = ZegCLIPCriterion()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if args.what == "train":
                model.train()
                loss = criterion(model(images, embeds).logits, labels)["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            else:
                model.eval()
                with torch.no_grad():
                    model(images, embeds)

    for _ in range(2):  # warm-up (compiling, where asked)
        step()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        step()
    matmul = _matmul_rate(dtype)
    seconds, flops = _group_totals(prof, args.what, batch)
    total = sum(seconds.values())
    print(f"{args.what}, {args.precision}, batch {batch}, {args.threads} threads: best of 3 = {best:.3f} s")
    print(f"same-run {args.precision} matmul (2048^3): {matmul:.0f} GFLOP/s\n")
    print("| group | seconds | share | GFLOP | GFLOP/s | of matmul rate |\n|---|---|---|---|---|---|")
    for group, sec in sorted(seconds.items(), key=lambda item: -item[1]):
        if sec < 0.002:
            continue
        gflop = flops.get(group, 0) / 1e9 if group in MATMUL_GROUPS else 0
        cells = [f"{gflop:.1f}", f"{gflop / sec:.0f}", f"{gflop / sec / matmul:.0%}"] if gflop else ["", "", ""]
        print("| " + " | ".join([group, f"{sec:.3f}", f"{sec / total:.0%}", *cells]) + " |")


if __name__ == "__main__":
    main()
