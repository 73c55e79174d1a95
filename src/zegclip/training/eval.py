"""Evaluate a checkpoint: ``python -m zegclip.eval experiment=voc_inductive checkpoint=PATH``.

PATH may be a zegclip training ``.ckpt``, a file written by ``ZegCLIP.save`` or a
checkpoint released by the ZegCLIP authors (``.pth``).
"""

from __future__ import annotations

import time

import hydra
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from zegclip.model import ZegCLIP, load_model
from zegclip.openvino import OpenVINOError, check_backend, compile_model
from zegclip.training.config import (
    CONFIG_DIR,
    ConfigError,
    build_trainer,
    run_cli,
    run_hydra,
    save_resolved,
    validate_config,
    write_metrics,
)
from zegclip.training.loggers import finish_loggers
from zegclip.training.precision import apply_precision

SPLITS = ("val", "test")
"""The splits an evaluation runs on: the datamodule's validation split, or its test split."""


def evaluate(cfg: DictConfig, network: ZegCLIP | None = None) -> dict[str, float]:
    """Metrics of ``cfg.checkpoint`` (or of an already loaded ``network``) on ``cfg.split``."""
    if cfg.split not in SPLITS:
        raise ConfigError(f"split={cfg.split!r} is not valid: expected one of {list(SPLITS)}")
    validate_config(cfg)
    apply_precision(cfg)
    check_backend(cfg.get("backend", "torch"), "backend")
    openvino = cfg.get("backend") == "openvino"  # the image side in OpenVINO (zegclip.openvino)
    openvino_fp = openvino_precision(str(cfg.trainer.get("precision", "32-true"))) if openvino else None
    L.seed_everything(cfg.seed, workers=True)
    save_resolved(cfg, cfg.paths.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.check_root()
    network = network if network is not None else load_model(cfg.checkpoint)
    # the module is configured by this config (dataset, setting, inference); the network
    # architecture and weights come from the checkpoint, built once
    module = hydra.utils.instantiate(cfg.module, model=network.config, network=network, init_from=None, _convert_="all")
    trainer = build_trainer(cfg)
    if openvino:
        module.predictor = compile_model(network, openvino_fp)
        precision = module.predictor.describe()
    else:
        precision = fast_inference(network, cfg)
    run = trainer.validate if cfg.split == "val" else trainer.test
    try:
        start = time.perf_counter()
        run(module, datamodule=datamodule)
        seconds = time.perf_counter() - start
        images = len(datamodule.val_set if cfg.split == "val" else datamodule.test_set)
        rank_zero_info(f"evaluated {images} images in {seconds:.1f} s ({images / seconds:.2f} images/s, {precision})")
        return write_metrics(trainer, cfg.paths.output_dir, {"eval/images_per_s": images / seconds})
    finally:
        finish_loggers(trainer)


REDUCED_PRECISIONS = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
OPENVINO_PRECISIONS = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16"}
"""``trainer.precision`` -> the OpenVINO precision of ``backend=openvino``."""


def openvino_precision(trainer_precision: str) -> str:
    """The OpenVINO precision for ``trainer.precision``; one it cannot run is an `OpenVINOError`."""
    if trainer_precision not in OPENVINO_PRECISIONS:
        raise OpenVINOError(
            f"backend=openvino runs trainer.precision=32-true (fp32) or bf16-mixed (bf16), not {trainer_precision}"
        )
    return OPENVINO_PRECISIONS[trainer_precision]


def fast_inference(network: ZegCLIP, cfg: DictConfig) -> str:
    """The fast path of ``zegclip predict --precision bf16 [--compile]`` for an evaluation run.

    Under ``trainer.precision=bf16-mixed`` (or ``16-mixed``) the frozen CLIP matmul weights
    are stored once in that dtype instead of being cast at every call (an evaluation writes no
    checkpoint, so nothing keeps the rounded weights), and with ``compile=true`` the image
    encoder is compiled with its weights frozen into the graph. Both happen once per run, after
    the weights are loaded and before Lightning moves the model to its device: the graph is built,
    and the weights frozen into it taken, at the first evaluation batch, on that device.
    Returns the precision used, for the log.
    """
    dtype = REDUCED_PRECISIONS.get(str(cfg.trainer.get("precision")))
    if dtype is None:
        return str(cfg.trainer.get("precision", "32-true"))
    network.image_encoder.cast_frozen_matmuls(dtype)
    if cfg.get("compile"):
        network.image_encoder.compile_for_inference()
    return f"{cfg.trainer.precision}, frozen weights in {str(dtype).removeprefix('torch.')}" + (
        ", compiled encoder" if cfg.get("compile") else ""
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def hydra_app(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


def main() -> None:
    """``zegclip eval`` / ``python -m zegclip.eval``: Hydra overrides from the command line."""
    run_hydra(hydra_app)


if __name__ == "__main__":
    main()
