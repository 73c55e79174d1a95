"""Training does not depend on how many processes run it: 2 DDP processes (gloo) against 1 with accumulation.

Both sides run ``zegclip.train`` in subprocesses with the same global batch (4): one process
with batch 2 x accumulation 2, and two DDP processes with batch 2 x accumulation 1. Each
optimizer step must see the same images (recorded per micro-batch), the same losses and
end with the same trainable weights.

Tolerance. Every process runs one thread, so a micro-batch's forward and backward run the
same kernels in the same order on both sides; the layouts differ only in how the two halves
of the step's gradient are added: into ``.grad`` by accumulation, by gloo's all-reduce under
DDP. Each half is divided by 2 first (exact in binary floating point) and a sum of two terms
does not depend on their order, so the results may well be identical; we allow 1e-5 relative
(about 100 fp32 roundings of the weights' magnitude over 20 AdamW steps) so that a library
that sums in another order still passes, while the 5 % of a changed data stream, dropout
stream or loss normalisation fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.train_runs import SMALL, relative_difference, train_run, trainable

STEPS = 20


def ddp(devices: int) -> list[str]:
    return [f"trainer.devices={devices}", f"trainer.strategy={'ddp' if devices > 1 else 'auto'}"]


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["inductive", "transductive"])
def test_two_processes_train_like_one_with_accumulation(tmp_path: Path, setting: str) -> None:
    extra = [f"trainer.max_steps={STEPS}"]
    if setting == "transductive":  # from an "inductive model": the demo's tiny architecture, other weights
        from zegclip.model.build import zegclip_tiny

        torch.manual_seed(1)
        init = tmp_path / "inductive.pt"
        zegclip_tiny().save(init)
        extra += ["setting=transductive", f"module.init_from={init}"]
    one = train_run(tmp_path, "one", [*extra, *ddp(1), "run_name=one"])
    assert one.code == 0, one.stderr[-3000:]
    if setting == "inductive":  # pre-empted: SIGTERM to rank 0 alone after micro-batch 13, then resumed
        two_args = [*extra, *ddp(2), "run_name=two"]
        stopped = train_run(tmp_path, "two", two_args, env={"SIGNAL_AT": "SIGTERM:0:12"})
        assert stopped.code == 143, stopped.stderr[-3000:]
        assert "stopped at step 7 on SIGTERM" in stopped.stderr  # both ranks, at the same step boundary
        two = train_run(tmp_path, "two", [*two_args, "ckpt_path=last"], records="resumed")
        assert min(two.micro) == 14  # resumed where the stop left off
        two.micro = {**stopped.micro, **two.micro}
    else:
        two = train_run(tmp_path, "two", [*extra, *ddp(2), "run_name=two"])
    assert two.code == 0, two.stderr[-3000:]
    assert "global batch 4 = 1 node x 1 device x 2 images x accumulation 2" in one.stderr
    assert "global batch 4 = 1 node x 2 devices x 2 images x accumulation 1" in two.stderr
    assert sorted(one.micro) == sorted(two.micro) == list(range(2 * STEPS))  # every micro-batch of every step
    for micro, seen in one.micro.items():
        assert seen["ids"] == two.micro[micro]["ids"], micro  # the same images in the same micro-batch
        assert seen["step"] == two.micro[micro]["step"] == micro // 2
        assert seen["loss"] == pytest.approx(two.micro[micro]["loss"], rel=1e-5), micro
    difference = relative_difference(trainable(two.last), trainable(one.last))
    print(f"{setting}: largest norm-relative difference of a trainable tensor after {STEPS} steps: {difference:.3g}")
    assert difference <= 1e-5


@pytest.mark.slow
def test_ctrl_c_under_ddp_stops_every_rank_at_one_step_boundary(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches every process of the group: one stop, one save, exit 130."""
    run = train_run(
        tmp_path, "c", ["trainer.max_steps=8", *ddp(2), "run_name=c"], {"SIGNAL_AT": "SIGINT:0:4:group"}, session=True
    )
    assert run.code == 130, run.stderr[-3000:]
    assert "stopped at step 3 on SIGINT" in run.stderr and "Traceback" not in run.stderr
    assert torch.load(run.last, weights_only=True, mmap=True)["global_step"] == 3


@pytest.mark.slow
def test_one_failing_rank_ends_the_job_and_leaves_the_checkpoints(tmp_path: Path) -> None:
    """A failure on one rank (out of memory on one GPU): no save out of step, no hang."""
    args = ["trainer.max_steps=8", "eval_every=2", *ddp(2), "run_name=f"]
    run = train_run(tmp_path, "f", args, {"FAIL_AT": "1:3"})
    assert run.code != 0 and "injected failure on rank 1 at step 3" in run.stderr
    assert torch.load(run.last, weights_only=True, mmap=True)["global_step"] == 2  # the last validation's


@pytest.mark.slow
def test_the_zegclip_command_launches_ddp(tmp_path: Path) -> None:
    """``zegclip train ... trainer.devices=2 trainer.strategy=ddp``: the console script, as documented."""
    zegclip = shutil.which("zegclip", path=str(Path(sys.executable).parent))
    assert zegclip is not None, "the zegclip console script is not installed next to this Python"
    cmd = [zegclip, "train", *SMALL, "trainer.max_steps=2", *ddp(2), f"paths.root_dir={tmp_path}", "run_name=cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "global batch 4 = 1 node x 2 devices x 2 images x accumulation 1" in done.stderr
    last = tmp_path / "outputs" / "train" / "cli" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True, mmap=True)["global_step"] == 2
