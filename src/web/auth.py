"""Who is asking: the one helper every request passes through (flaskr's `load_logged_in_user`).

`load_principal` runs before every request. It reads an API key or bearer JWT from
`Authorization: Bearer ...` (or `X-API-Key`), or the chat page's sign-in cookie, and leaves the
`Principal` in `g`; an endpoint that is not in `PUBLIC` gets a 401 without one. Routes then ask
`acting_user(requested)` whose data they touch and hand that user to the services, which check
every resource against it.

The sign-in cookie is HttpOnly and SameSite=Strict, and a request that carries it is refused
(403) when it comes from another origin: a state-changing request must name this server as its
`Origin`, and a browser's `Sec-Fetch-Site` must say `same-origin`. Another site's page, even one
on this host at another port (the same "site" to a browser), cannot act with a user's sign-in.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from flask import Response, g, has_request_context, request

from .. import logs
from ..services.errors import Forbidden, Unauthorized
from ..services.identity import IdentityService, Principal
from .context import services

# Endpoints anyone may call: the page and its files, liveness and readiness, the OpenAPI document, the public
# gallery (reading), and signing in. Everything else needs credentials when sign-in is on.
PUBLIC = frozenset(
    {
        "static",
        "pages.static",
        "pages.index",
        "health.health",
        "health.ready",
        "metrics.metrics_text",  # not open: it has its own check (loopback or metrics.token)
        "health.openapi",
        "gallery.get_gallery",
        "gallery.get_gallery_item",
        "auth.auth_info",
        "auth.sign_in",
        "auth.sign_out",
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def principal() -> Principal | None:
    """The signed-in principal of this request (None without sign-in)."""
    return g.get("principal")


def acting_user(requested: str | None, field: str = "user_id") -> str:
    """The user this request acts for (see `IdentityService.acting_user`); bound for the
    request's log lines (`requestlog.py` unbinds it when the request ends)."""
    user = services().identity.acting_user(principal(), requested, field)
    if has_request_context() and "log_tokens" in g:
        g.log_tokens.append((logs.user_id, logs.user_id.set(user[:200])))
    return user


def run_owner(requested: str | None) -> str | None:
    """Whose run a request may see: without sign-in, naming the user is optional (the run's id
    finds it, as before users existed); signed in, always the acting user."""
    if requested is None and not services().identity.signs_in:
        return None
    return acting_user(requested)


def bearer_credential() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def load_principal() -> Response | None:
    """Before every request: authenticate. A protected endpoint's refusal (401, or 403 for a
    cookie from another origin) is raised by `refuse_unauthenticated`, after the rate limit has
    counted the request: failed attempts are limited like any other (by address)."""
    identity = services().identity
    g.principal = None
    g.refusal = None
    if not identity.signs_in or request.method == "OPTIONS":
        return None
    public = request.endpoint is None or request.endpoint in PUBLIC
    try:
        g.principal = _authenticate(identity)
    except (Unauthorized, Forbidden) as exc:
        g.principal = None  # a stale cookie, or a link from another site: the page still loads
        if not public:
            g.refusal = exc
    if g.principal is None and not public and g.refusal is None:
        g.refusal = Unauthorized("credentials required: send 'Authorization: Bearer <API key or token>'")
    return None


def refuse_unauthenticated() -> Response | None:
    """After the rate limit: a protected endpoint without a valid principal is refused."""
    refusal = g.get("refusal")
    if refusal is not None:
        raise refusal
    return None


def _authenticate(identity: IdentityService) -> Principal | None:
    credential = bearer_credential()
    if credential is not None:
        return identity.authenticate(credential)
    token = request.cookies.get(identity.settings.cookie_name)
    if not token:
        return None
    check_same_origin()
    return identity.from_cookie(token)


def check_same_origin() -> None:
    """A request carrying the sign-in cookie must come from this server's own page."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("cross-site request refused: the sign-in cookie only works from this server's page")
    origin = request.headers.get("Origin")
    try:
        other_origin = origin is not None and urlsplit(origin).netloc != request.host
    except ValueError:  # not even a URL ("http://[::1"): certainly not this server's page
        other_origin = True
    if other_origin:
        raise Forbidden("cross-origin request refused: the sign-in cookie only works from this server's page")
    if origin is None and request.method not in SAFE_METHODS:
        raise Forbidden("request refused: a signed-in page's request must say its Origin")


def claimed_user() -> str | None:
    """The user a request names (query, body, or its message): the rate limit's key when nobody
    signs in."""
    if user := request.args.get("user_id"):
        return user
    if request.method in ("POST", "PUT", "PATCH") and request.is_json:
        try:
            body: Any = json.loads(request.get_data(cache=True) or b"null")
        except (ValueError, RecursionError):
            return None
        if isinstance(body, dict):
            message = body.get("message")
            user = body.get("user_id") or (message.get("user_id") if isinstance(message, dict) else None)
            return user if isinstance(user, str) else None
    return None


def unauthorized_headers(response: Response) -> Response:
    response.headers["WWW-Authenticate"] = 'Bearer realm="autobots"'
    return response
