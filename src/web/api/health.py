"""Liveness (`/api/health`), readiness (`/api/ready`, services/readiness.py), and the OpenAPI document."""

from __future__ import annotations

from typing import cast

from flask import Response, current_app, jsonify
from flask_openapi3 import APIBlueprint, OpenAPI, Tag
from sqlalchemy.exc import SQLAlchemyError

from ... import __version__
from ...schemas.api import ErrorResponse, HealthResponse, ReadyResponse
from ..context import services
from ..errors import envelope

bp = APIBlueprint("health", __name__, url_prefix="/api", abp_tags=[Tag(name="health")])


@bp.get("/health", responses={200: HealthResponse, 503: ErrorResponse})
def health() -> tuple[Response, int]:
    """The server answers and its database too."""
    try:
        services().repo.ping()
    except SQLAlchemyError as exc:
        return envelope(False, f"database unavailable: {type(exc).__name__}", code=503)
    return envelope(True, "ok", data={"database": "ok", "version": __version__})


@bp.get("/ready", responses={200: ReadyResponse, 503: ReadyResponse})
def ready() -> tuple[Response, int]:
    """Readiness: each dependency the server's config uses (database, Redis, broker, the embedded
    model, the Docker engine) with its state and latency; 503 when a required one is down."""
    readiness = services().readiness
    assert readiness is not None
    ok, message, report = readiness.check()
    return envelope(ok, message, data={"ready": ok, "dependencies": report}, code=200 if ok else 503)


@bp.get("/openapi.json", doc_ui=False)
def openapi() -> Response:
    """The OpenAPI document, generated from the request and response models."""
    # Flask types current_app as a plain Flask; this app is flask_openapi3's (see app.py).
    return jsonify(cast(OpenAPI, current_app).api_doc)
