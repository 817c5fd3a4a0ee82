"""The Flask application factory: one app per settings, its services built once."""

from __future__ import annotations

import logging

from autobots import __version__
from autobots.services.chat import ChatService
from autobots.services.sessions import SessionService
from autobots.settings import Settings, load_settings
from autobots.storage.database import create_db_engine, make_session_factory, migrate
from autobots.storage.repository import Repository
from autobots.web.api import gallery, health, messages, sessions
from autobots.web.context import Services
from autobots.web.errors import register_error_handlers, validation_error_response
from flask_openapi3 import Info, OpenAPI


def create_app(settings: Settings | None = None) -> OpenAPI:
    settings = settings or load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = OpenAPI(
        __name__,
        info=Info(title="autobots", version=__version__),
        validation_error_status=400,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]

    engine = create_db_engine(settings.database_url)
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    app.extensions["autobots"] = Services(
        settings=settings,
        repo=repo,
        chat=ChatService(settings, repo),
        sessions=SessionService(repo),
    )

    register_error_handlers(app)
    for module in (messages, sessions, gallery, health):
        app.register_api(module.bp)
    return app
