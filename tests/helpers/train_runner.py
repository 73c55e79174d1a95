"""``python tests/helpers/train_runner.py <overrides>``: ``zegclip.train`` recording what each micro-batch saw.

Each process runs one thread (set before torch starts its pool) and appends to
``$RECORD_DIR/rank<r>.jsonl``: per micro-batch its place in the global stream of
micro-batches, the optimizer step, the image ids and the loss. Faults on request:
``$FAIL_AT=rank:step`` raises on that rank at that optimizer step (a failure on one GPU);
``$SIGNAL_AT=SIGNAME:rank:micro`` sends the signal to that rank's process (or, with
``group``, to its whole process group, as a terminal's Ctrl-C) after that micro-batch.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)

from zegclip.training.module import ZegCLIPModule  # noqa: E402

_training_step = ZegCLIPModule.training_step


def _fault(self, micro: int) -> None:
    fail = os.environ.get("FAIL_AT")
    if fail:
        rank, step = map(int, fail.split(":"))
        if self.trainer.global_rank == rank and self.global_step == step:
            raise RuntimeError(f"injected failure on rank {rank} at step {step}")
    spec = os.environ.get("SIGNAL_AT")
    if spec:
        name, rank, at, *group = spec.split(":")
        if self.trainer.global_rank == int(rank) and micro == int(at):
            signum = getattr(signal, name)
            if group:
                os.killpg(os.getpgid(0), signum)
            else:
                os.kill(os.getpid(), signum)


def training_step(self, batch, batch_idx):
    loss = _training_step(self, batch, batch_idx)
    micro = self.micro_batch_index(batch_idx)
    record = {"micro": micro, "step": self.global_step, "ids": list(batch["id"]), "loss": float(loss.detach())}
    path = os.path.join(os.environ["RECORD_DIR"], f"rank{self.trainer.global_rank}.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    _fault(self, micro)
    return loss


ZegCLIPModule.training_step = training_step

if __name__ == "__main__":
    from zegclip.training.train import main

    sys.argv[0] = __file__
    main()
