"""The CLI's own error type, shared by the entry point and the sub-commands (which must not import ``main``)."""

from __future__ import annotations


class UsageError(Exception):
    """A mistake in how the command was called; printed as one line, exit code 2."""
