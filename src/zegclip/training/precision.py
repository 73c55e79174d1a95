"""A run's numeric precision beyond what the Trainer sets: float32 matmuls, and what is refused.

``trainer.precision`` goes to Lightning; ``float32_matmul_precision`` (set by each ``hardware``
config) goes to ``torch.set_float32_matmul_precision``, process-wide, before anything is built.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from zegclip.training.config import ConfigError

FLOAT32_MATMUL_PRECISIONS = ("highest", "high", "medium")
"""``highest``: IEEE fp32; ``high``: TF32 tensor cores on NVIDIA GPUs from Ampere on (and oneDNN's
TF32 on the few CPUs that have it); ``medium``: also bf16 inside fp32 matmuls (GPUs, bf16 CPUs)."""


REFUSED_PRECISIONS = {
    "bf16-true": "it stores every weight in bf16, while the prompt norm, CLIP's output projection "
    "and the decoder run in fp32; use trainer.precision=bf16-mixed (bf16 matmuls, fp32 weights)",
    "64-true": "the prompt norm, CLIP's output projection and the decoder run in fp32; use trainer.precision=32-true",
}
"""Lightning precisions the model cannot run, with the reason and what to use instead."""


def apply_precision(cfg: DictConfig) -> str:
    """Check ``trainer.precision`` (refused ones, bf16 on the GPU) and apply ``float32_matmul_precision``.

    Returns the float32 matmul precision set. Called by ``zegclip train`` and ``zegclip eval``
    before any weights or data are read.
    """
    precision = str(cfg.trainer.get("precision", "32-true"))
    if precision in REFUSED_PRECISIONS:
        raise ConfigError(f"trainer.precision={precision} is not supported: {REFUSED_PRECISIONS[precision]}")
    matmul = str(cfg.get("float32_matmul_precision", "highest"))
    if matmul not in FLOAT32_MATMUL_PRECISIONS:
        raise ConfigError(
            f"float32_matmul_precision={matmul!r} is not valid: expected one of {list(FLOAT32_MATMUL_PRECISIONS)}"
        )
    if (
        precision == "bf16-mixed"
        and cfg.trainer.get("accelerator") in ("gpu", "cuda")
        and torch.cuda.is_available()
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise ConfigError(
            f"trainer.precision=bf16-mixed: this GPU ({torch.cuda.get_device_name()}) has no bf16; "
            "use trainer.precision=16-mixed (or 32-true)"
        )
    torch.set_float32_matmul_precision(matmul)
    return matmul
