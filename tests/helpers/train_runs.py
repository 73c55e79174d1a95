"""Training runs in subprocesses, as users start them, with what each micro-batch saw recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.helpers.configs import TINY_DEMO

RUNNER = Path(__file__).parent / "train_runner.py"
SMALL = [
    *TINY_DEMO,
    "data.synthetic.num_train=10",
    "data.synthetic.num_val=2",
    "data.synthetic.size=80",
    "data.crop_size=64",
    "module.crop=64",
    "module.stride=53",
    "data.batch_size=2",
    "global_batch_size=4",
    "data.num_workers=0",
    "logger=none",
    "eval_every=1000",
]
"""The demo at its smallest: global batch 4 (2 images x 2 processes, or x accumulation 2)."""

SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "zegclip",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
}
"""What ``srun`` sets for one task of job 4242 on one node."""


@dataclass
class Run:
    code: int
    micro: dict[int, dict]  # micro-batch index -> its record (the last one written for it)
    folder: Path  # outputs/train/<run name>
    stderr: str

    @property
    def last(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"


def start(
    tmp: Path, overrides: list[str], env: dict[str, str] | None = None, records: str = "records", session: bool = False
):
    """``train_runner.py`` with ``overrides`` in a one-thread process (not waited for); ``session``: in a
    process group of its own, as a command started from a terminal (a Ctrl-C reaches the whole group)."""
    record_dir = tmp / records
    record_dir.mkdir(exist_ok=True)
    cmd = [sys.executable, str(RUNNER), *SMALL, f"paths.root_dir={tmp}", *overrides]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RECORD_DIR": str(record_dir)}
    full_env.update(env or {})
    return subprocess.Popen(
        cmd, env=full_env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=session
    )


def read_records(folder: Path) -> dict[int, dict]:
    lines = [json.loads(line) for f in sorted(folder.glob("rank*.jsonl")) for line in f.read_text().splitlines()]
    return {r["micro"]: r for r in lines}


def train_run(
    tmp: Path,
    run_name: str,
    overrides: list[str],
    env: dict[str, str] | None = None,
    records: str | None = None,
    session: bool = False,
) -> Run:
    """Train to the end (or a stop) in one-thread processes; outputs under ``tmp/outputs/train/<run_name>``."""
    records = records or f"records_{run_name}"
    proc = start(tmp, overrides, env, records, session)
    _, stderr = proc.communicate(timeout=600)
    return Run(proc.returncode, read_records(tmp / records), tmp / "outputs" / "train" / run_name, stderr)


def trainable(ckpt: Path) -> dict[str, torch.Tensor]:
    """The trainable tensors of a training checkpoint (the frozen CLIP towers left out)."""
    payload = torch.load(ckpt, weights_only=True, map_location="cpu")
    frozen = ("model.image_encoder.clip", "model.text_encoder")
    return {k: v for k, v in payload["state_dict"].items() if v.is_floating_point() and not k.startswith(frozen)}


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest norm-relative difference between two sets of the same tensors."""
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp(min=1e-12)) for k in a)
