"""Hydra side of the entry points: config checks and the objects every run builds."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.errors import HydraException
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zegclip.atomic import atomic_write
from zegclip.errors import ZegCLIPError, run_command, user_error
from zegclip.training.callbacks import ProgressLog
from zegclip.training.checkpoint_io import AtomicCheckpointIO
from zegclip.training.cluster import cluster_plugins, default_run_name, on_slurm, slurm_job_id

CONFIG_DIR = str(Path(__file__).parent.parent / "conf")


def _sweep_job() -> tuple[str, int] | None:
    """(sweep folder name, job number) inside a Hydra multirun job, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name, int(hydra_cfg.job.num)


def _job_name(run_name: str) -> str:
    job = _sweep_job()
    return f"{run_name}-{job[1]}" if job else run_name


def _job_group(default: str) -> str:
    job = _sweep_job()
    return job[0] if job else default


# ${zegclip_run_name:} in train.yaml: SLURM job id, the launching process's name, or the start time;
# ${zegclip_job_name:...} / ${zegclip_job_group:...}: a sweep job's W&B name and group
OmegaConf.register_new_resolver("zegclip_run_name", default_run_name, use_cache=True, replace=True)
OmegaConf.register_new_resolver("zegclip_job_name", _job_name, replace=True)
OmegaConf.register_new_resolver("zegclip_job_group", _job_group, replace=True)
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")


class ConfigError(ZegCLIPError, ValueError):
    """A config value that cannot work; the message names the key."""


def hydra_message(err: BaseException) -> str:
    """Hydra's multi-line report of a bad override (a key typo, an unknown experiment) as one line."""
    lines = [line.strip() for line in str(err).splitlines()]
    text = lines[0].rstrip(".") if lines else type(err).__name__
    cause = err.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        text += f": {str(cause).strip().splitlines()[0]}"
    hints = [line for line in lines[1:] if line.startswith("To append to your config use ")]
    if hints:
        text += f" (to add a new key use {hints[0].removeprefix('To append to your config use ')})"
    if any(line.startswith("Available options in") for line in lines):
        start = next(i for i, line in enumerate(lines) if line.startswith("Available options in"))
        options = []
        for line in lines[start + 1 :]:
            if not line or line.startswith("Config search path"):
                break
            options.append(line)
        text += f"; available: {', '.join(options)}"
    return text


def compose_config(name: str = "train", overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides outside a Hydra app (tools, tests).

    Raises:
        ConfigError: an override Hydra refuses (a key typo, an unknown config group option).
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            return compose(config_name=name, overrides=list(overrides))
        except HydraException as err:
            raise ConfigError(hydra_message(err)) from err


def accumulation(cfg: DictConfig, world_size: int) -> int:
    """Gradient accumulation that keeps the global batch at ``global_batch_size``.

    ``world_size`` is the number of training processes (nodes x devices) as the Trainer
    resolved it: ``Trainer.world_size``, whatever the spelling of ``trainer.devices``.
    """
    per_step = int(cfg.data.batch_size) * int(world_size)
    if int(cfg.global_batch_size) % per_step:
        raise ConfigError(
            f"global_batch_size={cfg.global_batch_size} is not a multiple of data.batch_size "
            f"({cfg.data.batch_size}) x processes ({world_size}: nodes x devices); change data.batch_size, "
            "trainer.devices or global_batch_size"
        )
    return int(cfg.global_batch_size) // per_step


def describe_batch(trainer: L.Trainer, batch_size: int) -> str:
    """``global batch 16 = 2 nodes x 4 devices x 2 images x accumulation 1``."""
    nodes, devices, accumulate = trainer.num_nodes, trainer.num_devices, trainer.accumulate_grad_batches
    total = nodes * devices * batch_size * accumulate
    return (
        f"global batch {total} = {nodes} node{'s' * (nodes != 1)} x {devices} device{'s' * (devices != 1)} "
        f"x {batch_size} image{'s' * (batch_size != 1)} x accumulation {accumulate}"
    )


def validate_config(cfg: DictConfig) -> None:
    """Fail on values that cannot work before any weights or data are read."""
    from zegclip.data.classes import DATASETS, FOLDER
    from zegclip.data.datasets import SETTINGS
    from zegclip.model.attention import CPU_BACKWARDS
    from zegclip.model.text import TEMPLATES

    checks = [
        ("setting", cfg.setting in SETTINGS, f"one of {list(SETTINGS)}"),
        ("data.dataset", cfg.data.dataset in (*DATASETS, FOLDER), f"one of {sorted([*DATASETS, FOLDER])}"),
        ("trainer.precision", str(cfg.trainer.get("precision", "32-true")) in PRECISIONS, f"one of {PRECISIONS}"),
        ("module.eval_mode", cfg.module.eval_mode in ("slide", "whole"), "slide or whole"),
        (
            "module.cpu_attention_backward",
            cfg.module.get("cpu_attention_backward", "flash") in CPU_BACKWARDS,
            f"one of {list(CPU_BACKWARDS)}",
        ),
        ("data.batch_size", int(cfg.data.batch_size) > 0, "a positive integer"),
        ("trainer.max_steps", int(cfg.trainer.max_steps) > 0, "a positive integer"),
        ("eval_every", int(cfg.eval_every) > 0, "a positive integer"),
        (
            "module.templates",
            not isinstance(cfg.module.templates, str)
            or cfg.module.templates in TEMPLATES
            or "{}" in cfg.module.templates,
            f"one of {list(TEMPLATES)} or a list of format strings with one '{{}}'",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            value = OmegaConf.select(cfg, key)
            raise ConfigError(f"{key}={value!r} is not valid: expected {expected}")
    if cfg.get("task_name") == "train" and cfg.setting == "transductive" and not cfg.module.init_from:
        raise ConfigError("module.init_from must name the inductive checkpoint that transductive training starts from")
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise ConfigError(f"missing mandatory value(s): {sorted(missing)} (set them on the command line)")


def build_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """The Trainer with its callbacks and loggers; validation every ``eval_every`` steps.

    Accumulation comes from the number of processes Lightning itself resolved (any spelling
    of ``accelerator``, ``devices``, ``num_nodes``, ``strategy``; SLURM and torchrun
    environments included), so the global batch is ``global_batch_size`` everywhere.
    """
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values()]
    if not loggers:  # logger=none: nothing to report learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    kwargs: dict[str, Any] = {
        "callbacks": callbacks,
        "logger": loggers or False,
        "val_check_interval": int(cfg.eval_every),  # counted in batches: scaled by the accumulation below
        **overrides,
    }
    if cfg.trainer.get("fast_dev_run") or cfg.trainer.get("overfit_batches"):
        kwargs.pop("val_check_interval")
    kwargs.setdefault("plugins", []).extend(cluster_plugins())
    kwargs["plugins"].append(AtomicCheckpointIO())
    if _fp16_on_cpu(cfg):
        # Lightning swaps 16-mixed for bf16-mixed on CPU; asked for explicitly, fp16 with its loss scaler runs
        from lightning.pytorch.plugins.precision import MixedPrecision

        kwargs["plugins"].append(MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu")))
        kwargs["precision"] = None
    if cfg.trainer.get("enable_progress_bar", True) and not sys.stdout.isatty():
        # a log file, not a terminal: plain lines instead of one redrawn bar per refresh
        kwargs["enable_progress_bar"] = False
        callbacks.append(ProgressLog(every=int(cfg.trainer.get("log_every_n_steps", 50))))
    trainer = hydra.utils.instantiate(cfg.trainer, **kwargs, _convert_="all")
    accumulate = accumulation(cfg, trainer.world_size)
    # Trainer attributes read when fit starts: set once the process count is known
    trainer.accumulate_grad_batches = accumulate
    if "val_check_interval" in kwargs:
        trainer.val_check_interval = int(cfg.eval_every) * accumulate
    return trainer


def _fp16_on_cpu(cfg: DictConfig) -> bool:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return str(cfg.trainer.get("precision")) == "16-mixed" and on_cpu


def save_resolved(cfg: DictConfig, output_dir: str) -> Path:
    """Write the fully resolved config (and the command line's overrides) next to the run's outputs."""
    from hydra.core.hydra_config import HydraConfig

    path = Path(output_dir) / "config_resolved.yaml"
    with atomic_write(path, "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))
    if HydraConfig.initialized():
        with atomic_write(path.with_name("overrides.yaml"), "w") as f:
            f.write(OmegaConf.to_yaml(OmegaConf.create(list(HydraConfig.get().overrides.task))))
    return path


def write_metrics(trainer: L.Trainer, output_dir: str, extra: dict[str, float] | None = None) -> dict[str, float]:
    """The trainer's final scalar metrics (and ``extra``), also written to ``metrics.json`` (rank 0)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1} | (extra or {})
    if trainer.is_global_zero:
        path = Path(output_dir) / "metrics.json"
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def resolve_ckpt_path(cfg: DictConfig, trainer: L.Trainer) -> str | None:
    """The checkpoint ``ckpt_path`` names, checked before Lightning touches it.

    ``last`` must find ``last.ckpt`` in this run's checkpoint folder; a path must be a local
    zegclip training checkpoint (read ``weights_only``: no code from the file runs). Both
    are read in full here, so a truncated or empty file is one error line, not a traceback.
    A requeued SLURM job (run name ``slurm-<job>``, no ``ckpt_path``) resumes its own
    ``last.ckpt`` when there is one.
    """
    spec = cfg.get("ckpt_path")
    if not spec and requeued_run(cfg, trainer) is not None:
        spec = "last"
        rank_zero_info(f"SLURM job {slurm_job_id()}: resuming its run {cfg.run_name} from last.ckpt")
    if not spec:
        return None
    spec = str(spec)
    if spec == "last":
        folders = [Path(c.dirpath) for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)]
        found = [f / "last.ckpt" for f in folders if (f / "last.ckpt").is_file()]
        if not found:
            where = ", ".join(str(f) for f in folders) or "(no checkpoint callback: callbacks=none?)"
            raise ConfigError(
                f"ckpt_path=last: no last.ckpt in {where}; pass the run_name of the run to resume "
                "(run_name=... as printed by that run) or a checkpoint path"
            )
        spec = str(found[0])
    if "://" in spec:
        raise ConfigError(f"ckpt_path={spec}: only local files can be resumed from; download it first")
    return spec


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """A zegclip training checkpoint's contents (tensors memory-mapped), or one error naming the file."""
    from zegclip.model.build import CheckpointError, torch_load

    payload = torch_load(path, mmap=True)
    if "pytorch-lightning_version" not in payload or "model" not in payload.get("hyper_parameters", {}):
        raise CheckpointError(
            f"{path}: not a zegclip training checkpoint, so training cannot resume from it; "
            "to start a run from a ZegCLIP.save file or an authors' .pth, use module.init_from=PATH"
        )
    return payload


def requeued_run(cfg: DictConfig, trainer: L.Trainer) -> Path | None:
    """This SLURM job's own ``last.ckpt`` when the job runs again after a requeue, else None."""
    if not on_slurm() or str(cfg.get("run_name")) != default_run_name() or trainer.checkpoint_callback is None:
        return None
    last = Path(trainer.checkpoint_callback.dirpath or "") / "last.ckpt"
    return last if last.is_file() else None


def run_cli(fn, cfg: DictConfig) -> None:
    """Run a Hydra entry point; a :class:`~zegclip.errors.ZegCLIPError` becomes one line.

    Exit codes: 2 for user errors (``error:`` line, a file that cannot be written included),
    1 for a non-finite loss or weight, 128 + the signal for a run stopped by one after writing
    ``last.ckpt`` (143 SIGTERM, 130 Ctrl-C, 138 SLURM's SIGUSR1), 130 for Ctrl-C outside training.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from zegclip.training.callbacks import RunInterrupted

    try:
        code = run_command(fn, cfg)
    except SIGTERMException:  # Lightning's own stop, outside training (validation, test)
        print("interrupted: SIGTERM outside training; nothing to resume", file=sys.stderr)
        code = RunInterrupted.exit_code
    if code:
        sys.exit(code)


def _call_hydra_app(app: Callable[[], Any]) -> None:
    try:
        app()
    except HydraException as err:  # raised before the task runs: the command line does not compose
        if user_error(err) is not None:
            raise
        raise ConfigError(hydra_message(err)) from err


def run_hydra(app: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` app so that Hydra's own errors follow the one-line contract.

    A key typo (``trainer.max_stepz=3``), an unknown experiment or an override that does not
    parse is one ``error:`` line and exit code 2, instead of Hydra's report and exit code 1;
    Ctrl-C is exit code 130. With ``HYDRA_FULL_ERROR=1`` set, Hydra reports as it does.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        app()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them and exiting
    try:
        code = run_command(_call_hydra_app, app)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
    if code:
        sys.exit(code)
