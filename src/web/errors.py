"""Every error as a JSON envelope with a 4xx/5xx status, never an HTML page or a traceback."""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from flask_limiter.errors import RateLimitExceeded
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from ..schemas.validation import describe_validation
from ..services.errors import (
    BadRequest,
    Forbidden,
    LimitExceeded,
    NotFound,
    RunFailed,
    Unauthorized,
    Unavailable,
    WrongState,
)

log = logging.getLogger("autobots.web")


def envelope(
    status: bool, message: str, data: Any = None, code: int = 200, **extra: Any
) -> tuple[Response, int]:
    return jsonify({"status": status, "message": message, "data": data, **extra}), code


def validation_error_response(exc: ValidationError) -> Response:
    message, details = describe_validation(exc)
    response = jsonify({"status": False, "message": message, "data": {"errors": details}})
    response.status_code = 400
    return response


def _takes_body() -> bool:
    """Whether the matched endpoint reads a JSON body (flask-openapi3 passes it as `body`)."""
    view = current_app.view_functions.get(request.endpoint or "")
    return view is None or "body" in inspect.signature(view).parameters


def reject_malformed_json() -> tuple[Response, int] | None:
    """A body that is not JSON gets its own clear message (pydantic would only see "None").

    Endpoints that take no body (`POST /api/runs/<id>/cancel`) accept an empty one: `curl -X POST`
    sends no Content-Length at all."""
    if request.method in ("POST", "PUT", "PATCH") and request.content_length != 0:
        raw = request.get_data(cache=True)
        if raw.strip():
            try:
                json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                return envelope(False, f"request body is not valid JSON: {exc}", code=400)
            except RecursionError:
                return envelope(False, "request body is not valid JSON: nested too deeply", code=400)
        elif request.path.startswith("/api/") and _takes_body():
            return envelope(False, "request body is empty: a JSON object is required", code=400)
    return None


def register_error_handlers(app: Flask) -> None:
    """Every domain error to one status. `reject_malformed_json` runs after the principal is
    loaded and the rate limit counted (hooks run in the order they are installed)."""
    app.before_request(reject_malformed_json)

    @app.errorhandler(Unauthorized)
    def _unauthorized(exc: Unauthorized) -> tuple[Response, int]:
        response, code = envelope(False, str(exc), code=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="autobots"'
        return response, code

    @app.errorhandler(Forbidden)
    def _forbidden(exc: Forbidden) -> tuple[Response, int]:
        return envelope(False, str(exc), code=403)

    @app.errorhandler(LimitExceeded)
    def _limit(exc: LimitExceeded) -> tuple[Response, int]:
        response, code = envelope(False, str(exc), data={"limit": exc.limit}, code=429)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response, code

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded) -> tuple[Response, int]:
        item = exc.limit.limit
        message = (
            f"rate limit reached: limits.per_user.requests_per_minute allows {item.amount} requests "
            "a minute per user; try again in a minute"
        )
        response, code = envelope(False, message, data={"limit": "requests_per_minute"}, code=429)
        response.headers.setdefault("Retry-After", str(item.get_expiry()))
        return response, code

    @app.errorhandler(BadRequest)
    def _bad_request(exc: BadRequest) -> tuple[Response, int]:
        return envelope(False, str(exc), code=400)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound) -> tuple[Response, int]:
        return envelope(False, str(exc), code=404)

    @app.errorhandler(Unavailable)
    def _unavailable(exc: Unavailable) -> tuple[Response, int]:
        response, code = envelope(False, str(exc), code=503)
        response.headers["Retry-After"] = "5"
        return response, code

    @app.errorhandler(WrongState)
    def _conflict(exc: WrongState) -> tuple[Response, int]:
        return envelope(False, str(exc), code=409)

    @app.errorhandler(RunFailed)
    def _run_failed(exc: RunFailed) -> tuple[Response, int]:
        data = {"run_id": exc.run_id, "user_message": exc.user_message.model_dump(mode="json")}
        return envelope(False, str(exc), data=data, code=exc.http_status)

    @app.errorhandler(ValidationError)
    def _invalid(exc: ValidationError) -> Response:
        return validation_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        message = "request body too large" if code == 413 else exc.description or exc.name
        response, code = envelope(False, message, code=code)
        # The exception's own headers stay: a 405's `Allow` (RFC 9110 requires it), for one.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.error(
            "unhandled error on %s %s: %s", request.method, request.path, type(exc).__name__, exc_info=exc
        )
        return envelope(False, "internal error: the server could not complete the request", code=500)
