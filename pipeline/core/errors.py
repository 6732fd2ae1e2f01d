"""Errors a user can act on: the CLI prints their message and exits non-zero."""


class PipelineError(Exception):
    """A failure with a message that names what to fix (file, line, field or setting)."""
