"""Sweeps: ``main()`` returns what a sweeper optimises; Optuna and submitit run as users start them.

Each sweep runs ``python -m zegclip.train -m ...`` in a subprocess with the tiny demo at one
or two steps; every job must get its own run folder and W&B run (named after the job, grouped
by the sweep folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.train_runs import SMALL
from tests.helpers.wandb_records import read_run

TINY = [*SMALL, "trainer.max_steps=2", "eval_every=1", "monitor=val/mIoU"]


def multirun(tmp: Path, overrides: list[str]) -> Path:
    """Run the sweep; returns its folder (outputs/train/multirun_<time>)."""
    cmd = [sys.executable, "-m", "zegclip.train", "-m", *TINY, f"paths.root_dir={tmp}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp / "outputs" / "train").glob("multirun_*")
    return sweep


def job_scores(sweep: Path) -> list[float]:
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 2
    scores = []
    for job in jobs:  # each job a complete run folder of its own
        assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "model" / "config.json").is_file()
        scores.append(json.loads((job / "metrics.json").read_text())["best/val/mIoU"])
    return scores


@pytest.mark.slow
@pytest.mark.parametrize(
    "search",
    [
        ["hparams_search=voc_optuna", "hydra.sweeper.n_trials=2", "model.num_prompts=choice(2,4)"],
        ["hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "module.optimizer.lr=interval(1e-3,3e-3)"],
    ],
    ids=["hparams_search", "plain_optuna"],
)
def test_optuna_maximises_the_best_score_each_run_returns(tmp_path: Path, search: list[str]) -> None:
    sweep = multirun(tmp_path, search)
    scores = job_scores(sweep)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(scores))  # what main() returned, per job


@pytest.mark.slow
def test_submitit_launcher_runs_each_job_as_its_own_run_and_wandb_run(tmp_path: Path) -> None:
    sweep = multirun(tmp_path, ["hydra/launcher=submitit_local", "seed=0,1", "logger=wandb"])
    job_scores(sweep)
    runs = [read_run(next((sweep / str(n) / "wandb").glob("offline-run-*"))) for n in range(2)]
    assert {r["run"]["group"] for r in runs} == {sweep.name}  # grouped by sweep
    names = [r["run"]["name"] for r in runs]
    assert names[0] != names[1] and all(name.endswith(f"-{n}") for n, name in enumerate(names))
    assert [r["config"]["seed"] for r in runs] == [0, 1]
