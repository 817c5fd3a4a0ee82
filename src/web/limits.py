"""Requests per minute per user (flask-limiter), `limits.per_user.requests_per_minute`.

The key is the signed-in user, or the user a request names when nobody signs in (`auth.mode:
none`), or the client's address for a request that names nobody. The counters live in this
process (`memory://`), or in Redis (`limits.per_user.storage_url: redis://...`) so that every API
process shares them. The page, its files and `/api/health` are never limited: a monitor or a
reload must not lock a user out.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter

from ..settings import PerUserLimits
from .auth import claimed_user, principal

UNLIMITED_ENDPOINTS = frozenset({"static", "pages.static", "pages.index", "health.health", "health.ready"})


def _key() -> str:
    who = principal()
    if who is not None:
        return "user:" + who.user_id
    if user := claimed_user():
        return "user:" + user
    return "addr:" + (request.remote_addr or "?")


def _exempt() -> bool:
    return request.method == "OPTIONS" or request.endpoint is None or request.endpoint in UNLIMITED_ENDPOINTS


def install(app: Flask, limits: PerUserLimits) -> Limiter | None:
    """Installed after the principal is loaded (before_request hooks run in order)."""
    if limits.requests_per_minute <= 0:
        return None
    limiter = Limiter(
        _key,
        application_limits=[f"{limits.requests_per_minute} per minute"],
        application_limits_exempt_when=_exempt,
        storage_uri=limits.storage_url,
        headers_enabled=True,
        strategy="moving-window",
        key_prefix="autobots",
        # Shared counters (Redis) that cannot be reached let requests through, counted in this
        # process meanwhile: an outage of the counters is no outage of the API.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    return limiter
