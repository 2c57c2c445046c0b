"""The ``translation`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.translation.adapter import TranslationTask

__all__ = ["TranslationTask"]


@hookimpl
def register_tasks(register):
    register(TranslationTask)


@hookimpl
def register_commands(register):
    from seqkd.tasks.seq2seq.commands import decode_command

    register(decode_command("translate", "source sentences"))
