"""`ZegCLIPModule`: the only place where Lightning meets the model."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from zegclip.data.datasets import SETTINGS, get_dataset_info, train_class_ids
from zegclip.data.folder import class_synonyms
from zegclip.metrics import SegMetrics
from zegclip.model import CheckpointError, ZegCLIP, ZegCLIPCriterion, build_zegclip, pseudo_labels
from zegclip.model.build import read_checkpoint
from zegclip.model.inference import Predictor
from zegclip.segmentation import encode_vocabulary
from zegclip.training.callbacks import NonFiniteError, all_finite, trainable_weights_finite
from zegclip.training.optim import build_optimizer, build_scheduler, describe_param_groups

_NOTHING_SAVED = "stopped without saving; the last good checkpoints are unchanged"
SCALAR_METRICS = ("pAcc", "mIoU", "mIoU_seen", "mIoU_unseen", "hIoU")


class ZegCLIPModule(L.LightningModule):
    """Trains and evaluates ZegCLIP in one of the three settings (docs/method.md §1 and §5, 7, 10).

    Args:
        model: keyword arguments of :func:`zegclip.build_zegclip`; stored in the checkpoint,
            so ``zegclip.load_model(ckpt)`` rebuilds the network without Lightning.
        dataset: the benchmark whose vocabulary is trained and evaluated (``voc``, ...), or
            ``folder`` (your own images, `zegclip.data.folder`), whose classes are read from
            ``dataset_root`` with the ``unseen`` classes by name and its ``ignore_index``
            (the data config's ``root``, ``unseen`` and ``ignore_index``; unused otherwise).
            A class with synonyms is the mean of their text embeddings, as in predict.
        setting: ``inductive`` (seen classes only; calibrated evaluation), ``transductive``
            (all classes; unseen pixels pseudo-labelled) or ``fully`` (all classes).
        templates: ``single``, ``ensemble`` or a list of format strings.
        max_steps: iterations of the poly schedule (the trainer's ``max_steps``).
        optimizer: ``lr``, ``weight_decay``, ``betas``, ``eps`` of AdamW.
        scheduler: ``warmup_steps``, ``warmup_ratio``, ``power``, ``min_lr``.
        loss: keyword arguments of :class:`ZegCLIPCriterion`.
        calibration_shift: subtracted from seen-class scores of inductive models.
        eval_mode, crop, stride, window_batch: test-time inference (docs/method.md §6).
        cross_dataset: evaluation on another dataset's vocabulary: every class is seen and
            nothing is calibrated (docs/method.md §9); hIoU is then undefined (NaN).
        init_from: a checkpoint (ours, a training ``.ckpt`` or the authors' ``.pth``) whose
            trainable weights start this run, e.g. the inductive model for transductive.
        trainable_only_checkpoints: save only the trainable weights (plus the CLIP name and
            tag) instead of self-contained checkpoints; for sweeps.
        cpu_attention_backward: ``flash`` (PyTorch's) or ``compiled`` (a compiled backward
            and the unfused forward it differentiates: about 10% off a bf16 training step on
            CPU; compiles once, needs a C++ compiler); GPUs always use PyTorch's.
        class_chunk: classes scored at once in evaluation (None: as many as fit 64 MB of
            scores at the image's size); bounds memory for 459- and 847-class vocabularies.
        network: an already built ZegCLIP (e.g. loaded by ``zegclip.eval``) used instead of
            building one from ``model``, which must then be its ``config``; not a hyperparameter.
        seed: the run's seed; the dropout masks of each micro-batch are drawn from a generator
            seeded by (seed, the micro-batch's place in the global batch stream), so they do not
            depend on how many processes train, and a resumed run draws what it would have.
        max_skipped_steps: under ``16-mixed``, stop after this many optimizer steps in a row
            skipped by the loss scaler (gradients that stay inf/NaN whatever the scale).

    Loss normalisation: each micro-batch's loss is divided by its image count, and once per
    optimizer step the gradients are rescaled so the divisor is the number of (image, present
    class) pairs of the whole global batch averaged over its micro-batches, exactly as one
    process with the global batch, or the paper's 4 GPUs x 4 images, would compute it
    (docs/method.md, the loss).
    """

    def __init__(
        self,
        model: dict[str, Any],
        dataset: str = "voc",
        setting: str = "inductive",
        templates: str | list[str] = "single",
        max_steps: int = 20_000,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        calibration_shift: float = 0.1,
        eval_mode: str = "slide",
        crop: int = 512,
        stride: int = 426,
        window_batch: int = 8,
        cross_dataset: bool = False,
        init_from: str | None = None,
        trainable_only_checkpoints: bool = False,
        cpu_attention_backward: str = "flash",
        class_chunk: int | None = None,
        network: ZegCLIP | None = None,
        dataset_root: str | None = None,
        unseen: list[str] | None = None,
        ignore_index: int | None = None,
        seed: int = 0,
        max_skipped_steps: int = 25,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"module.setting must be one of {SETTINGS}, got {setting!r}")
        info = get_dataset_info(dataset, dataset_root, unseen, ignore_index)  # before any weights are read
        self.save_hyperparameters(ignore=["network"])
        self.model = network if network is not None else build_zegclip(**model)
        self.model.image_encoder.cpu_attention_backward = cpu_attention_backward  # validated there
        if init_from:  # only the trainable tensors are read: nothing else is built or downloaded
            state = read_checkpoint(init_from).state
            trainable = {k: state[k] for k in self.model.trainable_state_dict() if k in state}
            try:
                self.model.load_weights(trainable, trainable_only=True, source=str(init_from))
            except (KeyError, ValueError) as err:
                raise CheckpointError(err.args[0]) from err
        self.class_names = info.class_names
        self.synonyms = class_synonyms(info)
        self.train_ids = train_class_ids(info, setting)
        seen = tuple(range(info.num_classes)) if cross_dataset else info.seen_ids
        unseen = () if cross_dataset else info.unseen_ids
        # vocabulary position of each unseen class during training (transductive only)
        self.train_unseen = [self.train_ids.index(c) for c in unseen if c in self.train_ids]
        calibrate = setting == "inductive" and not cross_dataset
        self.register_buffer(
            "seen_mask", torch.tensor([calibrate and c in seen for c in range(info.num_classes)]), persistent=False
        )
        self.criterion = ZegCLIPCriterion(**(loss or {}))
        self.val_metrics = SegMetrics(info.num_classes, seen, unseen, ignore_index=info.ignore_index)
        self.test_metrics = SegMetrics(info.num_classes, seen, unseen, ignore_index=info.ignore_index)
        self.strict_loading = not trainable_only_checkpoints
        self._window_masks: torch.Tensor | None = None  # (image, class) pairs of this accumulation window
        self._skipped_in_a_row = 0
        self._last_scale: float | None = None
        self.run_config: dict[str, Any] | None = None  # the resolved run config, saved in checkpoints
        self.predictor: Predictor | None = None
        """Runs ``predict_labels`` in evaluation instead of ``model`` when set (``backend=openvino``)."""

    # --- vocabulary -----------------------------------------------------------------------
    def class_embeddings(self, train: bool) -> torch.Tensor:
        """C x D embeddings of the training vocabulary or of every class (cached by the model)."""
        ids = self.train_ids if train else range(len(self.class_names))
        vocabulary = [list(self.synonyms[i]) for i in ids]
        if any(len(names) > 1 for names in vocabulary):
            return encode_vocabulary(self.model, vocabulary, self.hparams.templates)
        return self.model.encode_text([names[0] for names in vocabulary], self.hparams.templates)

    # --- training -------------------------------------------------------------------------
    def micro_batches_per_step(self) -> int:
        """Micro-batches in one optimizer step over all processes (world size x accumulation)."""
        return self.trainer.world_size * self.trainer.accumulate_grad_batches

    def micro_batch_index(self, batch_idx: int) -> int:
        """This micro-batch's place in the run's stream of micro-batches, the same for any layout:
        optimizer step, then this process's block, then the micro-batch within its window."""
        accumulate = self.trainer.accumulate_grad_batches
        return (
            self.global_step * self.micro_batches_per_step()
            + self.trainer.global_rank * accumulate
            + batch_idx % accumulate
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]  # B x 3 x H x W, B x H x W
        seed = np.random.SeedSequence([int(self.hparams.get("seed", 0)), self.micro_batch_index(batch_idx)])
        torch.manual_seed(int(seed.generate_state(1)[0]))  # dropout masks: a function of the stream position
        out = self.model(images, self.class_embeddings(train=True))
        if self.hparams.setting == "transductive":
            labels = pseudo_labels(out.logits, labels, self.train_unseen)
        # divided by the image count; on_before_optimizer_step turns it into / num_masks of the global batch
        losses = self.criterion(out.logits, labels, num_masks=len(images))
        masks = losses.pop("masks")
        self._micro_batch_size = len(images)
        self._window_masks = masks if self._window_masks is None else self._window_masks + masks
        finite = bool(torch.isfinite(losses["loss"]))
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            where = "" if finite else f" ({losses['loss'].item()})"
            raise NonFiniteError(f"step {self.global_step}: the training loss is not finite{where}; {_NOTHING_SAVED}")
        shown = len(images) / masks.clamp(min=1.0)  # the values of the formula with this micro-batch's num_masks
        self.log_dict({f"train/{k}": v * shown for k, v in losses.items()}, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return losses["loss"]

    def normalise_gradients(self) -> None:
        """Divide the step's gradients by num_masks of the global batch (all processes, all micro-batches).

        Each micro-batch's loss was divided by its ``B`` images, Lightning divides by the
        accumulation and DDP averages over processes, so the gradient holds sum(grad S) / (B M)
        for M micro-batches; the loss of the method is sum(S) / (M n) with n the mean mask count
        per micro-batch (at least 1): the factor is B / n.
        """
        masks = self._window_masks
        self._window_masks = None
        if masks is None:
            return
        masks = self.trainer.strategy.reduce(masks.clone(), reduce_op="sum")
        mean = (masks / self.micro_batches_per_step()).clamp(min=1.0)
        factor = self._micro_batch_size / mean
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, factor.to(grads[0].dtype))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.normalise_gradients()
        # fp16 loss scaling skips steps with inf gradients by design; everything else stops
        if self.trainer.precision == "16-mixed":
            return
        named = [(name, p.grad) for name, p in self.model.named_parameters() if p.grad is not None]
        if not all_finite(grad for _, grad in named):  # one check per step; the name only on failure
            name = next(name for name, grad in named if not bool(grad.isfinite().all()))
            raise NonFiniteError(f"step {self.global_step}: non-finite gradient of {name}; {_NOTHING_SAVED}")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_at_batch_start = self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after an optimizer step (the weights change only then), before any validation or checkpoint
        if self.global_step == self._step_at_batch_start:
            return
        if not trainable_weights_finite(self):
            raise NonFiniteError(f"step {self.global_step}: a trainable weight is not finite; {_NOTHING_SAVED}")
        self.watch_loss_scale()

    def on_train_end(self) -> None:
        self.criterion.check_labels()  # off CPU the label check is read back every N calls: the last ones too

    def watch_loss_scale(self) -> None:
        """Under ``16-mixed``: log the loss scale; stop after ``max_skipped_steps`` skipped steps in a row."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is None:
            return
        scale = float(scaler.get_scale())
        skipped = self._last_scale is not None and scale < self._last_scale  # the scaler halves on inf gradients
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if skipped else 0
        self._last_scale = scale
        self.log("train/loss_scale", scale)
        limit = int(self.hparams.get("max_skipped_steps", 25))
        if self._skipped_in_a_row >= limit:
            raise NonFiniteError(
                f"step {self.global_step}: the fp16 loss scaler skipped {self._skipped_in_a_row} steps in a row "
                f"(scale now {scale:g}): the gradients stay non-finite; try trainer.precision=bf16-mixed; "
                + _NOTHING_SAVED
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, **(self.hparams.optimizer or {}))
        rank_zero_info(describe_param_groups(optimizer.param_groups))
        scheduler = build_scheduler(optimizer, max_steps=self.hparams.max_steps, **(self.hparams.scheduler or {}))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- evaluation -----------------------------------------------------------------------
    def predict_labels(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Sliding-window (or whole) calibrated prediction resized to ``size``: B x H x W."""
        hp = self.hparams
        predictor = self.model if self.predictor is None else self.predictor
        return predictor.predict_labels(  # a chunk of classes at a time: bounded memory for 847 classes
            images,
            self.class_embeddings(train=False),
            seen_mask=self.seen_mask if self.seen_mask.any() else None,
            mode=hp.eval_mode,
            crop=hp.crop,
            stride=hp.stride,
            window_batch=hp.window_batch,
            shift=hp.calibration_shift,
            output_size=size,
            class_chunk=hp.get("class_chunk"),
        )

    def _eval_step(self, batch: dict[str, Any], metrics: SegMetrics) -> torch.Tensor:
        labels = batch["label"]  # B x H x W at the original size
        preds = self.predict_labels(batch["image"], tuple(labels.shape[-2:]))
        metrics.update(preds, labels)
        return preds

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step(batch, self.test_metrics)

    def _log_epoch(self, metrics: SegMetrics, split: str) -> dict[str, torch.Tensor]:
        result = metrics.compute()
        self.log_dict({f"{split}/{k}": result[k] for k in SCALAR_METRICS}, sync_dist=False, prog_bar=True)
        self.last_eval = {"split": split, **{k: v.cpu() for k, v in result.items()}}
        rank_zero_info(metrics.table(result, list(self.class_names)))
        metrics.reset()
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, "val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, "test")

    # --- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # no RNG state: each micro-batch seeds its own dropout from its stream position, on every rank
        if self.run_config is not None:
            checkpoint["run_config"] = self.run_config
        if self.hparams.trainable_only_checkpoints:
            keep = {"model." + k for k in self.model.trainable_state_dict()}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def train(self, mode: bool = True) -> ZegCLIPModule:
        super().train(mode)
        self.model.train(mode)  # keeps the frozen towers in eval mode
        return self
