"""Lightning callbacks: W&B validation images and IoU tables, checkpoint on interruption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger

from zegclip.data.classes import voc_colours
from zegclip.model.zegclip import PIXEL_MEAN, PIXEL_STD


def _palette(num_classes: int) -> np.ndarray:
    """VOC colours for the classes, then black for ignored pixels."""
    return np.concatenate([voc_colours(num_classes + 1)[1:], np.zeros((1, 3), np.uint8)])


def _colour(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    index = np.where(labels == 255, len(palette) - 1, np.minimum(labels, len(palette) - 2))
    return palette[index]


class LogValidationImages(L.Callback):
    """At each validation, log a few images with predicted and true masks and the IoU table.

    Does nothing unless a ``WandbLogger`` is attached.
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images
        self.samples: list[np.ndarray] = []

    @staticmethod
    def _wandb(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_validation_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if self._wandb(trainer) is None or not trainer.is_global_zero or len(self.samples) >= self.num_images:
            return
        labels = batch["label"][0].cpu().numpy()  # H x W, original size
        preds = outputs[0].cpu().numpy()
        image = batch["image"][:1].float().cpu()
        image = image * torch.tensor(PIXEL_STD).view(1, 3, 1, 1) + torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        image = torch.nn.functional.interpolate(image, size=labels.shape, mode="bilinear", align_corners=False)
        image = image[0].permute(1, 2, 0).clamp(0, 255).byte().numpy()
        palette = _palette(len(module.class_names))
        row = [image, (0.5 * image + 0.5 * _colour(preds, palette)), (0.5 * image + 0.5 * _colour(labels, palette))]
        self.samples.append(np.concatenate(row, axis=1).astype(np.uint8))

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or not trainer.is_global_zero:
            return
        if self.samples:
            captions = ["image | prediction | ground truth"] * len(self.samples)
            wandb.log_image("val/examples", self.samples, step=trainer.global_step, caption=captions)
        result = getattr(module, "last_eval", None)
        if result is not None:
            iou = result["IoU_per_class"].tolist()
            rows = [[name, value] for name, value in zip(module.class_names, iou, strict=True)]
            wandb.log_table("val/IoU_per_class", columns=["class", "IoU"], data=rows, step=trainer.global_step)
        self.samples = []


class CheckpointOnInterrupt(L.Callback):
    """Write ``last.ckpt`` when training stops early: SIGTERM (a scheduler's pre-emption),
    Ctrl-C or an error, so ``ckpt_path=last`` continues from that step."""

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None or trainer.global_step == 0:
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            print(f"interrupted at step {trainer.global_step} ({type(exception).__name__}); saved {path}")
