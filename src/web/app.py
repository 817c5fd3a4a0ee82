"""The Flask application factory: one app per settings, its services built once."""

from __future__ import annotations

from typing import cast

from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI

from .. import __version__
from ..auth.settings import AuthMode
from ..services.core import build_services
from ..settings import Settings, load_settings
from . import apidoc, limits, pages, requestlog, security
from .api import (
    auth,
    credentials,
    files,
    gallery,
    health,
    messages,
    metrics,
    openai_compat,
    runs,
    schedules,
    sessions,
    skills,
    workflows,
)
from .auth import load_principal, refuse_unauthenticated
from .errors import register_error_handlers, validation_error_response


def create_app(settings: Settings | None = None) -> OpenAPI:
    # Logging is the entry point's (`logs.configure`, by `serve` and `worker`), not the app's.
    settings = settings or load_settings()
    app = OpenAPI(
        __name__,
        info=Info(title="autobots", version=__version__),
        security_schemes=apidoc.SECURITY_SCHEMES,
        validation_error_status=400,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.auth.mode is AuthMode.NONE and settings.host in ("127.0.0.1", "localhost"):
        # A loopback server without sign-in answers only requests addressed to loopback: a web
        # page whose domain an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own Host
        # and gets a 400, so it cannot read or change anyone's data.
        app.config["TRUSTED_HOSTS"] = ["127.0.0.1", "localhost"]
    # Flask types app.json as the JSONProvider interface; the app keeps the default provider.
    cast(DefaultJSONProvider, app.json).sort_keys = False

    app.extensions["autobots"] = build_services(settings)

    # In this order: the request's id, who is asking, then their request rate, then the body's shape.
    requestlog.install_start(app)
    app.before_request(load_principal)
    requestlog.install_finish(app, count=settings.metrics.enabled)
    limits.install(app, settings.limits.per_user)
    app.before_request(refuse_unauthenticated)
    register_error_handlers(app)
    security.install(app, settings.cors)
    for module in (messages, runs, sessions, files, gallery, health, pages, auth, credentials, workflows):
        app.register_api(module.bp)
    app.register_api(skills.bp)
    app.register_api(schedules.bp)
    # OpenAI's API, not this one's: outside the OpenAPI document (see api/openai_compat.py).
    app.register_blueprint(openai_compat.bp)
    app.register_blueprint(metrics.bp)  # Prometheus' format, not the API's: outside the document too
    apidoc.finish(app, settings)
    return app
