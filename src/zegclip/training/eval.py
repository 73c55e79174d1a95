"""Evaluate a checkpoint: ``python -m zegclip.eval experiment=voc_inductive checkpoint=PATH``.

PATH may be a zegclip training ``.ckpt``, a file written by ``ZegCLIP.save`` or a
checkpoint released by the ZegCLIP authors (``.pth``).
"""

from __future__ import annotations

import hydra
import lightning as L
from omegaconf import DictConfig

from zegclip.model import ZegCLIP, load_model
from zegclip.training.config import CONFIG_DIR, build_trainer, run_cli, save_resolved, validate_config, write_metrics
from zegclip.training.loggers import finish_loggers


def evaluate(cfg: DictConfig, network: ZegCLIP | None = None) -> dict[str, float]:
    """Metrics of ``cfg.checkpoint`` (or of an already loaded ``network``) on ``cfg.split``."""
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    save_resolved(cfg, cfg.paths.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.check_root()
    network = network if network is not None else load_model(cfg.checkpoint)
    # the module is configured by this config (dataset, setting, inference); the network
    # architecture and weights come from the checkpoint, built once
    module = hydra.utils.instantiate(cfg.module, model=network.config, network=network, init_from=None, _convert_="all")
    trainer = build_trainer(cfg)
    run = trainer.validate if cfg.split == "val" else trainer.test
    try:
        run(module, datamodule=datamodule)
        return write_metrics(trainer, cfg.paths.output_dir)
    finally:
        finish_loggers(trainer)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    main()
