"""Clusters: SLURM's job identity and requeue, and the run name every process agrees on.

Under SLURM (Lightning's ``SLURMEnvironment`` detects ``srun``), zegclip handles the requeue
signal itself (``#SBATCH --signal=USR1@90``, or SIGUSR2 from submitit): the run stops at the next optimizer-step
boundary, writes ``last.ckpt``, asks ``scontrol requeue <job>`` and exits; the requeued job
runs the same command, and its run name, derived from the job id, leads it to its own run
folder, which it resumes. Lightning's own requeue (a checkpoint written mid-accumulation
window from inside the signal handler) is switched off.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from datetime import datetime
from typing import Any

from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

RUN_NAME_ENV = "ZEGCLIP_RUN_NAME"
"""Set by the launching process so that processes started for it (DDP ranks) share its run name."""


def on_slurm() -> bool:
    """Whether this process is a SLURM task started by ``srun`` (not an interactive shell)."""
    return SLURMEnvironment.detect()


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` for an array task, else the job id; None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def default_run_name() -> str:
    """The run name when none is given: inherited from the launching process, else
    ``slurm-<job>`` inside a SLURM job (the same after a requeue), else the start time."""
    inherited = os.environ.get(RUN_NAME_ENV)
    if inherited:
        return inherited
    job = slurm_job_id() if on_slurm() else None
    if job:
        return f"slurm-{job}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def cluster_plugins() -> list[Any]:
    """Trainer plugins for the cluster this runs on: SLURM without Lightning's own requeue."""
    return [SLURMEnvironment(auto_requeue=False)] if on_slurm() else []


def requeue_signals() -> tuple[int, ...]:
    """The signals SLURM sends before the time limit: SIGUSR1 (``#SBATCH --signal=USR1@90``) and
    SIGUSR2 (what submitit asks for, ``signal_delay_s``); none off SLURM."""
    if not on_slurm() or not hasattr(signal, "SIGUSR1"):
        return ()
    return (int(signal.SIGUSR1), int(signal.SIGUSR2))


def requeue_job() -> bool:
    """``scontrol requeue <job>``: SLURM puts the job back in the queue (and ends this one)."""
    job = slurm_job_id()
    if not job or not re.fullmatch(r"[0-9_]+", job):
        rank_zero_warn(f"cannot requeue: SLURM job id {job!r} is not a job id")
        return False
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        rank_zero_warn("cannot requeue: scontrol is not on PATH; resubmit the job (it resumes its run)")
        return False
    result = subprocess.run([scontrol, "requeue", job], check=False)
    if result.returncode:
        rank_zero_warn(f"scontrol requeue {job} failed (exit {result.returncode}); resubmit the job to resume")
        return False
    rank_zero_info(f"requeued SLURM job {job}")
    return True
