"""The domain's errors, one module for all: services raise them, the web layer maps each to one
HTTP status (`web/errors.py`), the CLI to one exit code. Nothing here knows about HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..schemas.chat import Message


class NotFound(LookupError):
    """No such resource for this user: someone else's answers exactly like a missing one (404)."""


class BadRequest(ValueError):
    """The request cannot be done as asked; the message names the field and why (400)."""


class Unauthorized(PermissionError):
    """No credentials, or bad, expired or revoked ones (401)."""


class Forbidden(PermissionError):
    """Signed in, but not allowed to do this (403): e.g. acting for another user without being
    an admin."""


class WrongState(ValueError):
    """The resource is not in a state where this can be done (409)."""


class LimitExceeded(Exception):
    """A per-user limit is reached (429). `limit` names it; `retry_after_s` is when to try again."""

    def __init__(self, message: str, limit: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = max(1, int(retry_after_s))


class RunFailed(RuntimeError):
    """The run could not complete; the user's message and the failed run are stored."""

    http_status = 500

    def __init__(self, message: str, run_id: str, user_message: Message) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.user_message = user_message


class LLMEndpointError(RunFailed):
    http_status = 502


class DependencyUnavailable(RunFailed):
    """A sandbox or the embedded model is not available on this server."""

    http_status = 503


class Unavailable(RuntimeError):
    """Something the request needs (Redis, the run queue) cannot be reached now (503): nothing
    was changed, and the request can be tried again."""
