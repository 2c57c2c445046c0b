"""The errors seqkd reports to a person as a message rather than a traceback."""


class SeqkdError(Exception):
    """Base of every error whose message tells the user what to fix."""


class DataError(SeqkdError, ValueError):
    """Bad input data; the message names the file and, where it applies, the line."""
