"""Errors of the execution subsystem."""

from __future__ import annotations


class ExecutionUnavailable(Exception):
    """No sandbox can be opened for a run.

    ``str(e)`` goes to the user as is, so it names the one thing that is wrong
    (engine unreachable, image missing, bubblewrap missing, executor not allowed)
    and what to do about it, and never carries secrets.
    """
