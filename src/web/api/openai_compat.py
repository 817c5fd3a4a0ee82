"""The OpenAI-compatible endpoint: `GET /v1/models`, `GET /v1/models/<id>`, `POST /v1/chat/completions`.

Every workflow a user can run (their saved ones and the built-ins) is a model; see
`services/openai_compat.py` for what a completion does. Who asks is decided as everywhere
(`web/auth.py`): the API key or token as `Authorization: Bearer`; in `auth.mode: none`, the
request's `user` field (`?user=` for the GET routes), else the config's `default_user_id`; with
sign-in on, OpenAI's `user` field (an end-user tag for the provider) is ignored.

These routes follow OpenAI's API reference, not this server's `{status, message, data}`
envelope, and so are not in `/api/openapi.json`: every error under `/v1/` (including the 401,
the rate limit's 429 and a malformed body's 400 that the app's hooks answer) is rewritten into
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with its status and headers
(`WWW-Authenticate`, `Retry-After`) kept.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, jsonify, request, stream_with_context

from ...services.openai_compat import OpenAICompat, parse_request
from ..auth import acting_user
from ..context import services

bp = Blueprint("openai", __name__, url_prefix="/v1")

# An error's OpenAI `type` and `code` by status.
ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def _compat() -> OpenAICompat:
    return OpenAICompat(services().workflows, services().runs)


def _user(requested: str | None) -> str:
    if services().identity.signs_in:
        return acting_user(None)
    return requested or services().settings.default_user_id


@bp.get("/models")
def list_models() -> Response:
    """The workflows the user can run, as models."""
    return jsonify(_compat().models(_user(request.args.get("user"))))


@bp.get("/models/<path:model>")
def get_model(model: str) -> Response:
    return jsonify(_compat().model(_user(request.args.get("user")), model))


@bp.post("/chat/completions")
def chat_completions() -> Response:
    """Run the workflow `model` names on the last user message (the earlier ones its history)."""
    raw = request.get_data(cache=True)
    body: Any = json.loads(raw) if raw.strip() else None  # malformed JSON: a 400 already
    completion = parse_request(body)
    user = _user(completion.user)
    if completion.stream:
        chunks = _compat().stream(user, completion)
        return Response(
            stream_with_context(chunks), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )
    return jsonify(_compat().complete(user, completion))


@bp.after_app_request
def _openai_errors(response: Response) -> Response:
    """Any error under /v1/ in OpenAI's shape (the app's handlers answer with the envelope)."""
    code = response.status_code
    if not request.path.startswith("/v1/") or code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or "error" in body:
        return response
    kind, error_code = ERROR_KINDS.get(
        code, ("server_error" if code >= 500 else "invalid_request_error", None)
    )
    if code == 404 and request.endpoint not in ("openai.get_model", "openai.chat_completions"):
        error_code = "not_found"  # no such route
    message = str(body.get("message") or HTTPStatus(code).phrase)
    error = {"message": message, "type": kind, "param": None, "code": error_code}
    response.set_data(json.dumps({"error": error}))
    return response
