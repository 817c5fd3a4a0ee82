"""The OpenAPI document, finished from what the server really does.

flask-openapi3 generates the document from the routes' pydantic models. What those models cannot
say is added here once, when the app is built, from the same sets the server enforces, so the
document cannot drift from the behaviour:
- security: a bearer scheme (an API key, or a JWT in oidc mode) and the `X-API-Key` header;
  every operation that is not public (`auth.PUBLIC`) requires one of them when the server signs
  people in, and then documents its 401 (with `WWW-Authenticate`) and 403;
- a 400 is the `{status, message, data}` envelope everywhere, never flask-openapi3's own list of
  validation errors (the server answers every invalid request with the envelope);
- 413 on every operation that takes a body, 414 on those with parameters (gunicorn's own answer
  to a request line it will not read), 429 (with `Retry-After`) where requests are rate-limited
  (`limits.UNLIMITED_ENDPOINTS` are not).
Standard tools (schemathesis, openapi-spec-validator) read the result as valid OpenAPI 3.1.
"""

from __future__ import annotations

from typing import Any

from flask_openapi3 import OpenAPI
from flask_openapi3.utils import parse_rule

from ..settings import Settings
from . import limits
from .auth import PUBLIC

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`autobots_sk_...`, auth.mode token) or an OIDC access token (auth.mode oidc).",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
}
SIGNED_IN: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
ENVELOPE = {"$ref": "#/components/schemas/ErrorResponse"}
HEADER = {"schema": {"type": "string"}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ENVELOPE}},
    }
    if headers:
        response["headers"] = headers
    return response


UNAUTHORIZED = _error(
    "No credentials, or bad, expired or revoked ones",
    {"WWW-Authenticate": {**HEADER, "description": 'always `Bearer realm="autobots"`'}},
)
FORBIDDEN = _error("Signed in, but acting for another user without being an admin, or a cross-site request")
TOO_LARGE = _error("The request body is larger than the server's max_request_bytes")
URI_TOO_LONG: dict[str, Any] = {
    "description": "The request line is longer than the server reads (gunicorn's limit_request_line): "
    "answered by gunicorn itself, before the app",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
RATE_LIMITED = _error(
    "A per-user limit is reached (requests per minute, live runs, the daily budget)",
    {"Retry-After": {**HEADER, "description": "seconds until a retry may succeed"}},
)


def finish(app: OpenAPI, settings: Settings) -> dict[str, Any]:
    """Complete the app's generated document in place (flask-openapi3 serves the same dict)."""
    doc = app.api_doc
    endpoints = {
        (parse_rule(rule.rule), method.lower()): rule.endpoint
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }
    signs_in = settings.auth.mode.value != "none"
    rate_limited = settings.limits.per_user.requests_per_minute > 0
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            endpoint = endpoints.get((path, method), "")
            responses: dict[str, Any] = operation.setdefault("responses", {})
            takes_input = bool(operation.get("parameters")) or method in ("post", "put", "patch")
            if takes_input:
                # Every invalid request is answered with the envelope, as any other error.
                if _is_validation_list(responses.get("400")):
                    responses["400"] = _error("Bad Request: the message names the field and why")
            else:
                responses.pop("400", None)
            if method in ("post", "put", "patch"):
                responses.setdefault("413", TOO_LARGE)
            if operation.get("parameters"):  # a long path or query can exceed the request line
                responses.setdefault("414", URI_TOO_LONG)
            if rate_limited and endpoint not in limits.UNLIMITED_ENDPOINTS:
                responses.setdefault("429", RATE_LIMITED)
            if signs_in and endpoint not in PUBLIC:
                operation["security"] = SIGNED_IN
                responses.setdefault("401", UNAUTHORIZED)
                responses.setdefault("403", FORBIDDEN)
            operation["responses"] = dict(sorted(responses.items()))
    schemas = doc.get("components", {}).get("schemas", {})
    schemas.pop(app.validation_error_model.__name__, None)
    return doc


def _is_validation_list(response: Any) -> bool:
    """Whether a 400 is flask-openapi3's default (an array of its validation error model)."""
    if not isinstance(response, dict):
        return False
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("type") == "array" or "$ref" not in schema
