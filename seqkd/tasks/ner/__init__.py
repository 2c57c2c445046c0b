"""The ``ner`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.ner.adapter import NERTask

__all__ = ["NERTask"]


@hookimpl
def register_tasks(register):
    register(NERTask)


@hookimpl
def register_commands(register):
    from seqkd.tasks.ner.commands import PREDICT

    register(PREDICT)
