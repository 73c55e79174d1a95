"""Train ZegCLIP: ``python -m zegclip.train experiment=voc_inductive [key=value ...]``.

Multirun: ``python -m zegclip.train -m experiment=voc_inductive model.num_prompts=5,10,20``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from zegclip.model.build import load_model, torch_load
from zegclip.training.callbacks import interrupted
from zegclip.training.config import (
    CONFIG_DIR,
    build_trainer,
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


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) as the config says; returns the last logged metrics."""
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    save_resolved(cfg, cfg.paths.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.check_root()
    module = hydra.utils.instantiate(cfg.module, _convert_="all")
    if cfg.get("compile") and str(cfg.trainer.get("precision")) in REDUCED_PRECISIONS:
        # validation only (calls without gradients); the graph reads the weights as inputs,
        # so it follows every training step instead of freezing the weights it was built with
        module.model.image_encoder.compile_for_inference(freeze=False)
    trainer = build_trainer(cfg)
    for logger in trainer.loggers:  # the whole resolved config: W&B's config panel, CSV's hparams.yaml
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        return _fit_and_test(cfg, trainer, module, datamodule)
    finally:
        finish_loggers(trainer)


def _fit_and_test(cfg: DictConfig, trainer: L.Trainer, module: ZegCLIPModule, datamodule: L.LightningDataModule):
    ckpt_path = resolve_ckpt_path(cfg, trainer)
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
    metrics = write_metrics(trainer, cfg.paths.output_dir)
    if cfg.train and trainer.is_global_zero:
        export_best(trainer, module, cfg, metrics)
    return metrics


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
def hydra_app(cfg: DictConfig) -> None:
    run_cli(train, cfg)


def main() -> None:
    """``zegclip train`` / ``python -m zegclip.train``: Hydra overrides from the command line."""
    run_hydra(hydra_app)


if __name__ == "__main__":
    main()
