"""The ``asr`` task, registered through the ``seqkd`` entry-point group like any plugin."""

from seqkd.hookspecs import hookimpl
from seqkd.tasks.asr.adapter import ASRTask

__all__ = ["ASRTask"]


@hookimpl
def register_tasks(register):
    register(ASRTask)


@hookimpl
def register_commands(register):
    from seqkd.tasks.asr.commands import SPEECH_DATA
    from seqkd.tasks.seq2seq.commands import decode_command

    register(decode_command("transcribe", "wav files, or path#start,end segments"))
    register(SPEECH_DATA)
