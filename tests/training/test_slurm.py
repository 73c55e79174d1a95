"""SLURM: pre-emption with requeue, the requeued job resuming its own run, and two nodes.

SLURM is simulated the way Lightning reads it: the variables ``srun`` sets for each task, and
a stand-in ``scontrol`` on ``PATH`` that records its arguments and then, as SLURM does when
it requeues a job, sends SIGTERM to the job's process.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers.train_runs import SLURM_ENV, read_records, relative_difference, start, train_run, trainable

STEPS = 8

SCONTROL = """#!/bin/sh
echo "$@" >> "{log}"
kill -TERM $PPID
"""


def stand_in_scontrol(tmp: Path) -> tuple[dict[str, str], Path]:
    """A ``PATH`` with the stand-in ``scontrol`` first, and the file it records its calls in."""
    bin_dir, log = tmp / "bin", tmp / "scontrol.log"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(SCONTROL.format(log=log))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


@pytest.mark.slow
def test_requeue_signal_mid_window_then_the_same_command_resumes_bit_for_bit(tmp_path: Path) -> None:
    path_env, log = stand_in_scontrol(tmp_path)
    overrides = [f"trainer.max_steps={STEPS}"]  # no run_name: under SLURM it comes from the job id
    # SIGUSR1 (#SBATCH --signal=USR1@90) after micro-batch 6: the first of step 3's two, inside its window
    job = {**SLURM_ENV, **path_env}
    first = train_run(tmp_path, "slurm-4242", overrides, {**job, "SIGNAL_AT": "SIGUSR1:0:6"}, records="first")
    assert first.code == 128 + 10, first.stderr[-3000:]  # 128 + SIGUSR1, as a process ended by it reports
    assert log.read_text().split() == ["requeue", "4242"]  # scontrol requeue <job id>, once
    assert "the job was requeued" in first.stderr
    assert max(first.micro) == 7  # stopped at the end of step 3's window, not inside it
    # SLURM starts the same command again in the same environment
    again = train_run(tmp_path, "slurm-4242", overrides, job, records="again")
    assert again.code == 0, again.stderr[-3000:]
    assert "resuming its run slurm-4242" in again.stderr
    assert min(again.micro) == 8 and max(again.micro) == 2 * STEPS - 1  # continued after step 4
    # the uninterrupted run, as another job
    whole = train_run(tmp_path, "slurm-777", overrides, {**job, "SLURM_JOB_ID": "777"}, records="whole")
    assert whole.code == 0, whole.stderr[-3000:]
    for micro, seen in whole.micro.items():
        resumed = first.micro[micro] if micro < 8 else again.micro[micro]
        assert (resumed["ids"], resumed["loss"]) == (seen["ids"], seen["loss"]), micro
    assert relative_difference(trainable(again.last), trainable(whole.last)) == 0.0  # bit for bit


@pytest.mark.slow
def test_two_nodes_through_slurm_variables_train_like_one_process(tmp_path: Path) -> None:
    """``srun`` over 2 nodes x 1 task, simulated on one machine: each task gets its SLURM ranks."""
    overrides = [f"trainer.max_steps={STEPS}", "trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp"]
    nodes = {**SLURM_ENV, "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_JOB_ID": "5151"}
    tasks = [
        start(tmp_path, overrides, {**nodes, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)}, records="nodes")
        for r in range(2)
    ]
    outputs = [task.communicate(timeout=600) for task in tasks]
    for task, (_, stderr) in zip(tasks, outputs, strict=True):
        assert task.returncode == 0, stderr[-3000:]
    assert "global batch 4 = 2 nodes x 1 device x 2 images x accumulation 1" in outputs[0][1]
    two_nodes = read_records(tmp_path / "nodes")
    one = train_run(tmp_path, "one", [f"trainer.max_steps={STEPS}", "run_name=one"])
    assert one.code == 0, one.stderr[-3000:]
    assert {m: r["ids"] for m, r in two_nodes.items()} == {m: r["ids"] for m, r in one.micro.items()}
    folder = tmp_path / "outputs" / "train" / "slurm-5151"  # both tasks agree on the run folder
    assert relative_difference(trainable(folder / "checkpoints" / "last.ckpt"), trainable(one.last)) <= 1e-5
