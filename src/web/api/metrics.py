"""`GET /metrics`: Prometheus' text format, for the machine's processes (services/metrics.py).

Not part of the API (no envelope, outside the OpenAPI document), and public only in that sign-in
does not guard it: it has its own check. A loopback client may read it (unless
`metrics.allow_loopback` is false: behind a proxy on this machine everyone is loopback), anyone
else only with `Authorization: Bearer <metrics.token>` (compared in constant time, as its
SHA-256 when the config holds only the digest). No token: 401; a wrong one: 403.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from flask import Blueprint, Response, request

from ...services import metrics
from ...services.errors import Forbidden, NotFound, Unauthorized
from ...settings import MetricsSettings
from ..context import services

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_text() -> Response:
    core = services()
    settings = core.settings.metrics
    if not settings.enabled:
        raise NotFound("metrics are off on this server (metrics.enabled)")
    _check_access(settings)
    body = metrics.exposition(core.metrics_dir, core.run_gauges)
    return Response(
        body, mimetype=None, content_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"}
    )


def _check_access(settings: MetricsSettings) -> None:
    given = _bearer()
    if given is None:
        if settings.allow_loopback and _loopback(request.remote_addr):
            return
        raise Unauthorized("metrics need 'Authorization: Bearer <metrics.token>' from this address")
    if not _token_matches(settings, given):
        raise Forbidden("wrong metrics token")


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _token_matches(settings: MetricsSettings, given: str) -> bool:
    digest = hashlib.sha256(given.encode()).hexdigest()
    if settings.token is not None:
        expected = hashlib.sha256(settings.token.get_secret_value().encode()).hexdigest()
        if hmac.compare_digest(digest, expected):
            return True
    if settings.token_sha256 is not None:
        return hmac.compare_digest(digest, settings.token_sha256.lower())
    return False


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
