"""Train ZegCLIP: ``python -m zegclip.train experiment=voc_inductive [key=value ...]``.

Multirun: ``python -m zegclip.train -m experiment=voc_inductive model.num_prompts=5,10,20``.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from zegclip.model.build import load_model, torch_load
from zegclip.training.callbacks import interrupted
from zegclip.training.cluster import RUN_NAME_ENV
from zegclip.training.config import (
    CONFIG_DIR,
    build_trainer,
    describe_batch,
    read_training_checkpoint,
    resolve_ckpt_path,
    run_cli,
    run_hydra,
    save_resolved,
    validate_config,
    write_metrics,
)
from zegclip.training.eval import REDUCED_PRECISIONS
from zegclip.training.loggers import finish_loggers
from zegclip.training.module import ZegCLIPModule
from zegclip.training.precision import apply_precision
from zegclip.training.run_folder import check_same_experiment, claim_run_folder


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) as the config says; returns the last logged metrics and ``best/<monitor>``."""
    validate_config(cfg)
    apply_precision(cfg)
    trainer = build_trainer(cfg)  # resolves the processes; refuses a global batch that does not divide
    rank_zero_info(describe_batch(trainer, int(cfg.data.batch_size)))
    ckpt_path = resolve_ckpt_path(cfg, trainer)
    payload = read_training_checkpoint(ckpt_path) if ckpt_path else None
    run_config = OmegaConf.to_container(cfg, resolve=True)
    if payload is not None:
        check_same_experiment(payload.get("run_config"), run_config, ckpt_path)
    claim = (
        claim_run_folder(cfg.paths.output_dir, resuming=ckpt_path is not None, overwrite=bool(cfg.get("overwrite")))
        if trainer.global_rank == 0
        else contextlib.nullcontext()
    )
    with claim, _shared_run_name(cfg, trainer):
        L.seed_everything(cfg.seed, workers=True)
        if trainer.global_rank == 0:
            save_resolved(cfg, cfg.paths.output_dir)
        datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
        datamodule.check_root()
        module = hydra.utils.instantiate(cfg.module, _convert_="all")
        module.run_config = run_config
        if cfg.get("compile") and str(cfg.trainer.get("precision")) in REDUCED_PRECISIONS:
            # validation only (calls without gradients); the graph reads the weights as inputs,
            # so it follows every training step instead of freezing the weights it was built with
            module.model.image_encoder.compile_for_inference(freeze=False)
        for logger in trainer.loggers:  # the whole resolved config: W&B's config panel, CSV's hparams.yaml
            logger.log_hyperparams(run_config)
        try:
            return _fit_and_test(cfg, trainer, module, datamodule, ckpt_path)
        finally:
            finish_loggers(trainer)


@contextlib.contextmanager
def _shared_run_name(cfg: DictConfig, trainer: L.Trainer):
    """Processes this one launches (DDP ranks) inherit its run name instead of resolving their own."""
    if trainer.global_rank != 0 or RUN_NAME_ENV in os.environ:
        yield
        return
    os.environ[RUN_NAME_ENV] = str(cfg.run_name)
    try:
        yield
    finally:
        os.environ.pop(RUN_NAME_ENV, None)


def _fit_and_test(
    cfg: DictConfig,
    trainer: L.Trainer,
    module: ZegCLIPModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
) -> dict[str, float]:
    # every checkpoint is read weights_only: tensors and plain containers, never code
    if cfg.train:
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except SIGTERMException as stop:  # Lightning's stop, asked for by CheckpointOnInterrupt
            raise interrupted(trainer) from stop
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:  # restored from a resumed file: checked like any checkpoint a user names
            torch_load(best, mmap=True)
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    extra = {}
    checkpoint = trainer.checkpoint_callback
    if cfg.train and checkpoint is not None and getattr(checkpoint, "monitor", None):
        best_score = checkpoint.best_model_score
        extra[f"best/{checkpoint.monitor}"] = float(best_score) if best_score is not None else float("nan")
    metrics = write_metrics(trainer, cfg.paths.output_dir, extra)
    if cfg.train and trainer.is_global_zero:
        export_best(trainer, module, cfg, metrics)
    return metrics


def objective(cfg: DictConfig, metrics: dict[str, float]) -> float:
    """What a Hydra sweeper optimises: the best ``monitor`` score of the run (``val/hIoU`` by
    default), else the last ``val/mIoU`` where hIoU is undefined (no unseen classes)."""
    best = metrics.get(f"best/{cfg.monitor}", float("nan"))
    if math.isnan(best):
        best = metrics.get("val/mIoU", float("nan"))
    return best


def export_best(trainer: L.Trainer, module: ZegCLIPModule, cfg: DictConfig, metrics: dict[str, float]) -> Path | None:
    """The run's best checkpoint as a shareable folder ``<output_dir>/model`` (safetensors, config, card)."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        return None
    classes = list(module.class_names)
    info = {
        "dataset": cfg.data.dataset,
        "setting": cfg.setting,
        "class_names": classes,
        "unseen": [classes[i] for i in module.val_metrics.unseen_ids],
        "metrics": metrics,
        "checkpoint": best,
    }
    folder = load_model(best).save_pretrained(Path(cfg.paths.output_dir) / "model", info)
    rank_zero_info(f"best checkpoint ({Path(best).name}) written as a model folder: {folder}")
    return folder


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def hydra_app(cfg: DictConfig) -> float:
    """The Hydra app; returns the objective for Hydra sweepers (Optuna, ...)."""
    results: dict[str, float] = {}

    def run(cfg: DictConfig) -> None:
        results.update(train(cfg))

    run_cli(run, cfg)
    return objective(cfg, results)


def main() -> None:
    """``zegclip train`` / ``python -m zegclip.train``: Hydra overrides from the command line."""
    run_hydra(hydra_app)


if __name__ == "__main__":
    main()
