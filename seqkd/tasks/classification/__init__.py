"""The ``classification`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.classification.adapter import ClassificationTask

__all__ = ["ClassificationTask"]


@hookimpl
def register_tasks(register):
    register(ClassificationTask)


@hookimpl
def register_commands(register):
    from seqkd.tasks.classification.commands import CLASSIFY

    register(CLASSIFY)
