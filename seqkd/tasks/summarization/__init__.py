"""The ``summarization`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.summarization.adapter import SummarizationTask

__all__ = ["SummarizationTask"]


@hookimpl
def register_tasks(register):
    register(SummarizationTask)


@hookimpl
def register_commands(register):
    from seqkd.tasks.seq2seq.commands import decode_command

    register(decode_command("summarize", "documents"))
