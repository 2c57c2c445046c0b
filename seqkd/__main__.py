import sys

from torch.distributed.elastic.multiprocessing.errors import record

from seqkd.cli import main

# Under torchrun, @record hands a failing rank's traceback to torchrun, which reports it as the
# run's root cause after stopping the other ranks.
sys.exit(record(main)())
