"""One log line, and the HTTP metrics, for every request the app answers.

Before anything else a request gets its id: the client's `X-Request-ID` when it is a sane token
(letters, digits and `._:-`, at most 64), else a new one; it is echoed in the response's
`X-Request-ID` and bound (`logs.request_id`) for every line written while the request is
handled, and so is the signed-in (or named) user once sign-in has run. When the response is
made, one line says `method`, `path` (never the query string, where a client may put anything),
`status` and `duration_ms`; the live event stream (`asgi.py`) runs these same hooks, so its line
is written when the stream opens, with the time to its headers. Nothing of a request's body or
headers is logged.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from flask import Flask, Response, current_app, g, request

from .. import logs
from ..services import metrics
from .auth import principal

log = logging.getLogger("autobots.http")

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_MAX_PATH = 300
_COUNT = "autobots.count_requests"


def install_start(app: Flask) -> None:
    """Registered before every other before-request hook: the id first."""
    app.before_request(_start)
    app.teardown_request(_end)


def install_finish(app: Flask, count: bool) -> None:
    """Registered after sign-in (the user is known then); `count`: the HTTP metrics too."""
    app.before_request(_bind_user)

    def finish(response: Response) -> Response:
        _finish(response.status_code, response, count)
        return response

    app.after_request(finish)
    app.extensions[_COUNT] = count


def _start() -> None:
    given = request.headers.get("X-Request-ID", "")
    rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_id = rid
    g.request_started = time.perf_counter()
    g.request_logged = False
    g.log_tokens = [(logs.request_id, logs.request_id.set(rid))]


def _bind_user() -> None:
    who = principal()
    user = who.user_id if who is not None else request.args.get("user_id")
    if user:
        g.log_tokens.append((logs.user_id, logs.user_id.set(user[:200])))


def _finish(status: int, response: Response | None, count: bool) -> None:
    if g.get("request_logged", True):
        return
    g.request_logged = True
    seconds = time.perf_counter() - g.request_started
    method = request.method if request.method in _METHODS else "OTHER"
    if response is not None:
        response.headers["X-Request-ID"] = g.request_id
    log.info(
        "request",
        extra={
            "fields": {
                "method": method,
                "path": request.path[:_MAX_PATH],
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            }
        },
    )
    if count:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.observe_request(method, route, status, seconds)


def _end(exc: BaseException | None) -> None:
    """After the response (or an error no handler turned into one): the line if none was
    written, then the request's context is unbound, so the thread's next request starts clean."""
    if exc is not None and not g.get("request_logged", True):
        _finish(500, None, bool(current_app.extensions.get(_COUNT)))
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = g.get(
        "log_tokens", []
    )
    for var, token in reversed(tokens):
        try:
            var.reset(token)
        except ValueError:  # set in another context (cannot happen in one request's thread)
            var.set(None)
    g.log_tokens = []
