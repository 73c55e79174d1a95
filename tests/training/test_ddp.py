"""DDP evaluation (2 CPU processes, gloo) against one process: the same confusion matrix, bit for bit.

Both sides run in subprocesses through ``python <script> <overrides>``, a thin wrapper of
``zegclip.eval``'s Hydra entry point that records the (process-summed) confusion matrix
each rank scores from. Every process runs one thread: with different thread counts the
reductions inside the matmuls differ, and the near-tie pixels of a random tiny model flip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.configs import TINY_DEMO
from zegclip.constants import IGNORE_INDEX
from zegclip.data.datasets import build_dataset
from zegclip.data.synthetic import write_synthetic_voc

RUNNER = """\
import os
import sys

import torch

torch.set_num_threads(1)

from zegclip.training.eval import main
from zegclip.metrics import SegMetrics

_compute = SegMetrics.compute


def compute(self):
    # inside torchmetrics' compute wrapper: self.confmat is already summed over processes
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    torch.save(self.confmat.clone(), os.path.join(os.environ["CONFMAT_DIR"], f"rank{rank}.pt"))
    return _compute(self)


SegMetrics.compute = compute  # before any instance: torchmetrics wraps the bound method at init

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_clip_file: Path) -> Path:
    """A random tiny ZegCLIP saved as a self-contained checkpoint."""
    from tests.helpers.configs import TINY_KWARGS
    from zegclip.model.build import zegclip_tiny

    torch.manual_seed(0)
    model = zegclip_tiny(pretrained=str(tiny_clip_file), **TINY_KWARGS)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model.save(path)
    return path


def _evaluate(script: Path, ckpt: Path, data: Path, run_dir: Path, devices: int) -> tuple[dict, list[torch.Tensor]]:
    """Metrics and the confusion matrix of every rank, from ``devices`` one-thread processes."""
    confmats = run_dir / "confmats"
    confmats.mkdir(parents=True)
    cmd = [sys.executable, str(script), *TINY_DEMO, f"checkpoint={ckpt}", f"paths.data_dir={data}"]
    cmd += [
        f"trainer.devices={devices}",
        f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        "global_batch_size=8",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CONFMAT_DIR": str(confmats)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(confmats / f"rank{r}.pt") for r in range(devices)]
    return json.loads((run_dir / "metrics.json").read_text()), ranks


@pytest.mark.slow  # two gloo processes
@pytest.mark.parametrize("num_images", [1])  # uneven shards: tests/training/test_datamodule.py
def test_ddp_two_processes_evaluate_like_one(checkpoint: Path, tmp_path: Path, num_images: int) -> None:
    """1 image on 2 processes (a rank without one): each image counted once, as on one process."""
    data = tmp_path / "data"
    write_synthetic_voc(data / "synthetic", num_train=4, num_val=num_images, size=96)
    script = tmp_path / "run_eval.py"
    script.write_text(RUNNER)
    one, (single,) = _evaluate(script, checkpoint, data, tmp_path / "one", devices=1)
    two, ranks = _evaluate(script, checkpoint, data, tmp_path / "two", devices=2)
    labels = build_dataset("synthetic", str(data / "synthetic"), "val", None)
    pixels = sum(int((np.asarray(labels[i]["label"]) != IGNORE_INDEX).sum()) for i in range(num_images))
    assert int(single.sum()) == pixels  # every labelled pixel of every image, once
    for rank, confmat in enumerate(ranks):
        assert torch.equal(confmat, single), rank  # identical, not close
    scores = lambda metrics: {k: v for k, v in metrics.items() if k != "eval/images_per_s"}  # noqa: E731 (a timing)
    assert scores(two) == scores(one) and "val/mIoU" in one
