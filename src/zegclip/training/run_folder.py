"""A run's folder belongs to one run: claimed with a lock, never silently overwritten.

``outputs/train/<run_name>/`` holds a run once it has a checkpoint or a model folder. A new
run refuses such a folder unless it resumes it (``ckpt_path=last``) or the user asks to
overwrite it (``overwrite=true``, which deletes its checkpoints and model folder first); a
lock file keeps a second live run out of the folder, whatever it was asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zegclip.errors import ZegCLIPError

LOCK_NAME = ".zegclip.lock"
# keys a resumed run may change: where things go, how many processes and workers, logging, how
# long it trains (a longer run: the poly schedule follows the new max_steps from the step reached)
RESUMABLE_CHANGES = (
    "run_name",
    "eval_every",
    "trainer.max_steps",
    "module.max_steps",
    "ckpt_path",
    "overwrite",
    "train",
    "test",
    "compile",
    "paths.",
    "logger.",
    "callbacks.",
    "hydra.",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.sync_batchnorm",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "trainer.num_sanity_val_steps",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.batch_size",
    "data.root",
    "module.dataset_root",
    "module.init_from",
    "module.cpu_attention_backward",
    "module.window_batch",
    "module.class_chunk",
)


class RunFolderError(ZegCLIPError):
    """The run folder holds another run, is in use, or a resume changes the experiment."""


def holds_run(folder: Path) -> Path | None:
    """The first file that shows ``folder`` holds a run (a checkpoint, the model folder), else None."""
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []
    if checkpoints:
        return checkpoints[0]
    return folder / "model" if (folder / "model").exists() else None


@contextlib.contextmanager
def claim_run_folder(folder: str | Path, *, resuming: bool, overwrite: bool) -> Iterator[Path]:
    """Hold ``folder`` for this run (process-exclusive lock) after checking it may be written.

    Raises :class:`RunFolderError` when another live run holds the lock, or when the folder
    holds a finished or interrupted run and this one neither resumes nor overwrites it.
    """
    import fcntl

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as err:
        raise RunFolderError(f"{folder}: the run folder cannot be written: {err.strerror or err}") from err
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise RunFolderError(
                f"{folder} is in use by a live run ({owner}); wait for it, or pick another run_name"
            ) from None
        existing = holds_run(folder)
        if existing is not None and not resuming:
            if not overwrite:
                raise RunFolderError(
                    f"{folder} already holds a run ({existing.relative_to(folder)}); resume it with "
                    "ckpt_path=last, choose another run_name, or pass overwrite=true to replace it"
                )
            for stale in (folder / "checkpoints", folder / "model"):
                shutil.rmtree(stale, ignore_errors=True)
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        lock.flush()
        yield folder
    finally:
        lock.close()  # releases the lock


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out |= _flatten(value, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): tree}


def changed_experiment_keys(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Config keys whose values differ between a checkpoint's run and this one (both resolved),
    with (old, new) values, sorted by key; leaves out those a resume may change
    (:data:`RESUMABLE_CHANGES`) and keys one side lacks."""
    old, new = _flatten(saved), _flatten(current)
    return {
        key: (old[key], new[key])
        for key in sorted(old.keys() & new.keys())
        if old[key] != new[key] and not any(key == p or key.startswith(p) for p in RESUMABLE_CHANGES)
    }


def check_same_experiment(saved: dict[str, Any] | None, current: dict[str, Any], checkpoint: str) -> None:
    """Refuse to resume ``checkpoint`` with a config that changes the experiment."""
    if saved is None:  # written before checkpoints kept their config
        return
    changed = changed_experiment_keys(saved, current)
    if changed:
        shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changed.items())[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise RunFolderError(
            f"{checkpoint} was trained with another experiment: {shown}{more}; resume with the run's own "
            "settings, or start a new run (another run_name) with module.init_from=" + checkpoint
        )
