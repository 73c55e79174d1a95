"""Checkpoints written in place: a temporary file in the checkpoint's own folder, fsynced, renamed.

Lightning's default stages each checkpoint in ``$TMPDIR`` and moves it, which copies across
filesystems: on a full output disk that left a truncated file under its final name, later
trusted as the best checkpoint. Here a full disk gives one error naming the file and leaves
every earlier checkpoint intact, and ``$TMPDIR`` is never used.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zegclip.atomic import atomic_write
from zegclip.errors import ZegCLIPError


class CheckpointWriteError(ZegCLIPError):
    """A checkpoint could not be written (full disk, read-only folder); earlier ones are intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic and durable on the checkpoint's own filesystem."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()  # serialised first: a failed write is then always an OSError, never a torn zip
        torch.save(checkpoint, buffer)
        try:
            with atomic_write(Path(path)) as f:
                f.write(buffer.getbuffer())
        except OSError as err:
            raise CheckpointWriteError(
                f"cannot write checkpoint {path}: {err.strerror or err}; the checkpoints written before are unchanged"
            ) from err
