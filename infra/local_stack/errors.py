"""The local stack's error: its message is what the operator reads, so it says which server,
what went wrong and what to do next."""

from sensorstream.errors import PipelineError


class StackError(PipelineError):
    pass
