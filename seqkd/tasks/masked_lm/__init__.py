"""The ``masked_lm`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.masked_lm.adapter import MaskedLMTask

__all__ = ["MaskedLMTask"]


@hookimpl
def register_tasks(register):
    register(MaskedLMTask)
