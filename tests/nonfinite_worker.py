"""One rank of the two-rank non-finite-loss check (`tests/test_training_run.py`): the training CLI, with rank 1's
batch loss made NaN at step 2, so one rank sees a non-finite loss and the other a finite one.

    accelerate launch --multi_gpu --num_processes 2 tests/nonfinite_worker.py --config CONFIG key=value ...
"""

import os
import sys

from unified.training import loop

real_batch_loss = loop.batch_loss


def batch_loss(cfg, tasks, prepared, model, device):
    loss, parts = real_batch_loss(cfg, tasks, prepared, model, device)
    if int(os.environ.get("RANK", "0")) == 1 and prepared.plan.step == 2:
        return loss * float("nan"), parts
    return loss, parts


loop.batch_loss = batch_loss

if __name__ == "__main__":
    sys.exit(loop.main(sys.argv[1:]))
