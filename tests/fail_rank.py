"""torchrun entry point for tests/test_distributed.py: ``seqkd`` with one rank failing mid-training.

FAIL_RANK names the rank and FAIL_STEP the training step (the supervised loss's call number, with
``accumulate: 1``) at which it raises.
"""

import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from seqkd.cli import main
from seqkd_plugins.supervised import Supervised

original_loss = Supervised.loss
calls = 0


def failing_loss(self, batch, step):
    global calls
    calls += 1
    if os.environ["RANK"] == os.environ["FAIL_RANK"] and calls == int(os.environ["FAIL_STEP"]):
        raise RuntimeError(f"injected failure on rank {os.environ['RANK']} at step {calls}")
    return original_loss(self, batch, step)


Supervised.loss = failing_loss
sys.exit(record(main)())
