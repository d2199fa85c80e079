"""The two kinds of failure the CLI tells apart by exit code.

Components raise subclasses of these; the CLI maps them to exit codes (DESIGN section 3)
without knowing any component's own error types.
"""


class ConfigError(ValueError):
    """Bad configuration, bad usage or a bad input file: exit code 2.

    The message names the input (file, line, key) and what is wrong with it.
    """


class PipelineError(RuntimeError):
    """A runtime failure (a server unreachable past its retry budget, ...): exit code 1."""
