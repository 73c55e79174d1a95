"""Loggers that never hang: W&B falls back to offline mode without network or API key."""

from __future__ import annotations

import netrc
import os
import socket
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def _wandb_reachable(timeout: float = 3.0) -> bool:
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(project: str = "zegclip", save_dir: str = ".", offline: bool = False, **kwargs: Any) -> WandbLogger:
    """A WandbLogger that runs offline (one message, no waiting) when W&B cannot be reached.

    ``WANDB_MODE=offline`` / ``disabled`` are honoured as they are.
    """
    mode = os.environ.get("WANDB_MODE", "")
    if not offline and mode not in ("offline", "disabled", "dryrun"):
        why = "no API key (wandb login)" if not _has_api_key() else "" if _wandb_reachable() else "no network"
        if why:
            print(f"wandb: {why}; logging offline to {save_dir}/wandb (upload later with `wandb sync`)")
            offline = True
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(project=project, save_dir=save_dir, offline=offline, **kwargs)


def finish_loggers(trainer: Any) -> None:
    """Close the W&B run a trainer logged to, so its last rows are written and the next run
    in this process (a Hydra multirun job, a test) starts a run of its own."""
    for logger in getattr(trainer, "loggers", []):
        # private: `logger.experiment` would start a run; whether one was started is only in
        # `_experiment` (one use, pinned by tests/test_private_apis.py)
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
