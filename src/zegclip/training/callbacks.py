"""Lightning callbacks: W&B validation images and IoU tables, clean stops on signals."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zegclip.errors import ZegCLIPError
from zegclip.model.zegclip import PIXEL_MEAN, PIXEL_STD
from zegclip.training.checkpoint_io import CheckpointWriteError
from zegclip.training.cluster import requeue_job, requeue_signals


class LogValidationImages(L.Callback):
    """W&B at each validation: examples with segmentation overlays, the per-class IoU table, the best score.

    - ``val/examples``: a few validation images with W&B's own mask overlays for the
      prediction and the ground truth, each labelled with the class names (toggle them in the
      dashboard);
    - ``val/IoU_per_class``: class, IoU, seen/unseen, share of labelled pixels;
    - the run summary's ``best/<monitor>`` and ``best/step``.

    Does nothing unless a ``WandbLogger`` is attached.
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images
        self.samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.best: float | None = None

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
        self.samples.append((image[0].permute(1, 2, 0).clamp(0, 255).byte().numpy(), preds, labels))

    @staticmethod
    def class_labels(module: L.LightningModule) -> dict[int, str]:
        """Mask value -> name for W&B, the ignored value included."""
        names = {i: name for i, name in enumerate(module.class_names)}
        return names | {int(module.val_metrics.ignore_index): "ignored"}

    # on_validation_end: after the module's on_validation_epoch_end has computed this validation's scores
    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        wandb = self._wandb(trainer)
        if wandb is None or not trainer.is_global_zero:
            return
        step = trainer.global_step
        if self.samples:
            names = self.class_labels(module)
            masks = [
                {
                    "predictions": {"mask_data": pred, "class_labels": names},
                    "ground_truth": {"mask_data": truth, "class_labels": names},
                }
                for _, pred, truth in self.samples
            ]
            wandb.log_image("val/examples", [image for image, _, _ in self.samples], step=step, masks=masks)
        result = getattr(module, "last_eval", None)
        if result is not None:
            self._log_table(wandb, module, result, step)
            self._update_best(wandb, trainer, step)
        self.samples = []

    @staticmethod
    def _log_table(wandb: WandbLogger, module: L.LightningModule, result: dict[str, Any], step: int) -> None:
        unseen = set(module.val_metrics.unseen_ids)
        iou, share = result["IoU_per_class"].tolist(), result["pixel_share_per_class"].tolist()
        rows = [
            [name, value, "unseen" if c in unseen else "seen", pixels]
            for c, (name, value, pixels) in enumerate(zip(module.class_names, iou, share, strict=True))
        ]
        columns = ["class", "IoU", "split", "pixel share (%)"]
        wandb.log_table("val/IoU_per_class", columns=columns, data=rows, step=step)

    def _update_best(self, wandb: WandbLogger, trainer: L.Trainer, step: int) -> None:
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None) or "val/hIoU"
        value = trainer.callback_metrics.get(monitor)
        if value is None or not bool(torch.isfinite(value)):
            return
        if self.best is None or float(value) > self.best:
            self.best = float(value)
            wandb.experiment.summary[f"best/{monitor}"] = self.best
            wandb.experiment.summary["best/step"] = step


class ProgressLog(L.Callback):
    """One plain line every ``every`` optimizer steps, for logs that are not a terminal.

    Lightning's progress bar redraws in place on a terminal but writes a new line at
    every refresh into a file (thousands of lines per run); this replaces it there.
    """

    def __init__(self, every: int = 50) -> None:
        self.every = max(1, int(every))
        self._last: tuple[int, float] | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = (trainer.global_step, time.perf_counter())

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self._last is None or step == self._last[0] or (step % self.every and step != trainer.max_steps):
            return
        now = time.perf_counter()
        seconds = (now - self._last[1]) / (step - self._last[0])
        self._last = (step, now)
        metrics = trainer.callback_metrics
        shown = [f"{k.split('/')[-1]} {float(metrics[k]):.4g}" for k in ("train/loss", "train/lr") if k in metrics]
        rank_zero_info(f"step {step}/{trainer.max_steps}  {'  '.join(shown)}  {seconds:.2f} s/step")


class RunInterrupted(ZegCLIPError):
    """Training stopped on request (SIGTERM, Ctrl-C, SLURM's requeue signal) after writing ``last.ckpt``."""

    exit_code = 128 + signal.SIGTERM  # 143, as a process killed by SIGTERM reports
    prefix = "interrupted"

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)  # 130 after Ctrl-C, 143 after SIGTERM or a requeue


class NonFiniteError(ZegCLIPError, RuntimeError):
    """A non-finite loss, gradient or trainable weight: the run stops, nothing is saved."""

    exit_code = 1


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every value of every tensor is finite, read back once (one device sync)."""
    flags = [t.isfinite().all() for t in tensors]
    return not flags or bool(torch.stack(flags).all())


def trainable_weights_finite(module: L.LightningModule) -> bool:
    return all_finite(p for p in module.parameters() if p.requires_grad)


def interrupted(trainer: L.Trainer) -> RunInterrupted:
    """The error that tells a user where a run stopped by a signal left its checkpoint."""
    stopper = next((c for c in trainer.callbacks if isinstance(c, CheckpointOnInterrupt)), None)
    signum = stopper.received if stopper is not None and stopper.received is not None else signal.SIGTERM
    if stopper is not None and stopper.saved is not None:
        then = (
            "the job was requeued: SLURM restarts it and it resumes this run"
            if stopper.requeued
            else "resume with ckpt_path=last and the same run_name"
        )
        return RunInterrupted(
            f"stopped at step {trainer.global_step} on {signal.Signals(signum).name}; saved {stopper.saved}; {then}",
            signum,
        )
    return RunInterrupted(f"stopped at step {trainer.global_step} by a signal; no checkpoint was written", signum)


class CheckpointOnInterrupt(L.Callback):
    """Stop on SIGTERM (a scheduler's pre-emption), Ctrl-C or SLURM's requeue signal at an
    optimizer-step boundary, write ``last.ckpt`` there and raise :class:`RunInterrupted`,
    so ``ckpt_path=last`` continues bit for bit, with gradient accumulation too.

    The signal only sets a flag; the run stops at the end of the batch that completes an
    optimizer step (never inside an accumulation window, whose gradients a checkpoint
    cannot hold). Under DDP the processes agree at every step boundary whether any of
    them was signalled, so they stop together and save together; nothing is forwarded
    (a terminal's Ctrl-C reaches every process, a scheduler's SIGTERM one or all, and the
    agreement covers both). Under SLURM the requeue signal (``--signal=USR1@90``) also
    requeues the job once ``last.ckpt`` is written. A second Ctrl-C stops at once.
    After a crash, ``last.ckpt`` is written only in a single process, at a step boundary,
    with finite weights; under DDP a failure on one rank leaves the checkpoints as they
    were (the ranks are out of step and cannot save together); after a
    :class:`NonFiniteError` or a failed checkpoint write never.
    """

    def __init__(self) -> None:
        self.received: int | None = None  # the signal that asked for the stop (a Ctrl-C wins over the others)
        self._handlers: dict[int, Any] = {}
        self._window_open = False  # micro-batches run since the last optimizer step
        self._step_at_start = 0
        self.stopping = False  # Lightning was asked to stop at this step boundary
        self.requeue = False  # the stop was SLURM's requeue signal (on some rank)
        self.saved: Path | None = None  # last.ckpt written on that stop
        self.requeued = False

    @staticmethod
    def signals() -> tuple[int, ...]:
        return (signal.SIGTERM, signal.SIGINT, *requeue_signals())

    # --- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        if self.received is None or signum == signal.SIGINT:
            self.received = signum
        rank_zero_info(f"{signal.Signals(signum).name} received: stopping at the next step boundary")

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.received, self._window_open, self.stopping, self.requeue = None, False, False, False
        self.saved, self.requeued = None, False
        if threading.current_thread() is threading.main_thread():
            self._handlers = {s: signal.signal(s, self._on_signal) for s in self.signals()}

    def _restore(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        self._handlers = {}

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._restore()

    # --- step boundaries --------------------------------------------------------------------
    def last_path(self, trainer: L.Trainer) -> Path | None:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or checkpoint.dirpath is None:
            return None
        return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_at_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        self._window_open = trainer.global_step == self._step_at_start  # no optimizer step yet
        if self._window_open:
            return
        if trainer.global_step >= (trainer.max_steps or 0) > 0:
            trainer.should_stop = True  # the last step is validated (and so checkpointed) like any eval_every step
        strategy = trainer.strategy
        if strategy.reduce_boolean_decision(self.received is not None, all=False):  # any process signalled
            self.requeue = strategy.reduce_boolean_decision(self.received in requeue_signals(), all=False)
            # Lightning's own stop: it raises once this batch (and any validation due) is done,
            # and on_exception writes last.ckpt from that completed state
            request_lightning_stop(trainer)
            self.stopping = True

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        try:  # the handlers stay until the end: SLURM answers the requeue with a SIGTERM
            self._save_on_exception(trainer, module, exception)
        finally:
            self._restore()

    def _save_on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, NonFiniteError | CheckpointWriteError) or trainer.global_step == 0:
            return
        path = self.last_path(trainer)
        if self.stopping and isinstance(exception, SIGTERMException) and path is not None:
            # every process stops at this same boundary: they save together
            trainer.save_checkpoint(path, weights_only=False)
            self.saved = path
            if self.requeue and trainer.is_global_zero:
                self.requeued = requeue_job()
            return
        if path is None or trainer.state.fn != "fit":
            return
        if trainer.world_size > 1:  # one process failed on its own: the others are elsewhere, no collective save
            rank_zero_info(f"stopped by {type(exception).__name__} under DDP; {path} left as it was")
            return
        if self._window_open or not trainable_weights_finite(module):
            reason = "inside an accumulation window" if self._window_open else "with non-finite weights"
            rank_zero_info(f"stopped {reason} at step {trainer.global_step}; {path} left as it was")
            return
        trainer.save_checkpoint(path, weights_only=False)
        rank_zero_info(f"interrupted at step {trainer.global_step} ({type(exception).__name__}); saved {path}")


def request_lightning_stop(trainer: L.Trainer) -> None:
    """Make Lightning raise its ``SIGTERMException`` after the current batch, as on its own SIGTERM.

    Lightning has no public call for this: its signal connector's flag is the one place it
    reads (its one use here; pinned by tests/test_private_apis.py and the pre-emption tests of
    tests/training/test_train.py).
    """
    trainer._signal_connector.received_sigterm = True
