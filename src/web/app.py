"""The Flask application factory: one app per settings, its services built once."""

from __future__ import annotations

import atexit
import logging
from typing import cast

from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI

from .. import __version__
from ..execution import docker_available, sweep_orphans
from ..services.chat import ChatService
from ..services.credentials import credential_service
from ..services.event_writer import EventWriter
from ..services.identity import IdentityService
from ..services.limits import UserLimits
from ..services.runs import RunManager
from ..services.sessions import SessionService
from ..settings import Settings, load_settings
from ..storage.accounting import AccountingRepository
from ..storage.database import create_db_engine, make_session_factory, migrate
from ..storage.identity import IdentityRepository
from ..storage.repository import Repository
from . import apidoc, limits, pages, security
from .api import auth, credentials, files, gallery, health, messages, runs, sessions
from .auth import load_principal
from .context import Services
from .errors import register_error_handlers, validation_error_response


def create_app(settings: Settings | None = None) -> OpenAPI:
    settings = settings or load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every LLM request at INFO: a line per agent turn drowns what the server says.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = OpenAPI(
        __name__,
        info=Info(title="autobots", version=__version__),
        security_schemes=apidoc.SECURITY_SCHEMES,
        validation_error_status=400,
        validation_error_callback=validation_error_response,
        doc_ui=False,
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # Flask types app.json as the JSONProvider interface; the app keeps the default provider.
    cast(DefaultJSONProvider, app.json).sort_keys = False

    engine = create_db_engine(settings.database_url)
    migrate(engine)
    repo = Repository(make_session_factory(engine), serialize_writes=engine.dialect.name == "sqlite")
    writer = EventWriter(repo)
    atexit.register(writer.close)  # a graceful stop stores the last events
    user_limits = UserLimits(settings.limits.per_user, AccountingRepository.alongside(repo))
    # The server's secret is read (or made) here, at start: stored provider keys need it.
    credentials_service = credential_service(settings, repo)
    chat = ChatService(
        settings, repo, call_store=writer.put_call, limits=user_limits, credentials=credentials_service
    )
    run_manager = RunManager(chat, repo, settings.runs, writer)
    interrupted = run_manager.recover()
    if interrupted:
        logging.getLogger("autobots").warning("marked %d unfinished run(s) as interrupted", interrupted)
    if docker_available(settings.code_execution):
        sweep_orphans(settings.code_execution)  # containers left by a previous server process
    sessions_service = SessionService(repo, settings.code_execution)
    moved, deleted = sessions_service.adopt_legacy_workdirs()
    if moved or deleted:
        logging.getLogger("autobots").info(
            "work dirs now per user: moved %d, deleted %d of sessions that are gone", moved, deleted
        )
    app.extensions["autobots"] = Services(
        settings=settings,
        repo=repo,
        chat=chat,
        sessions=sessions_service,
        runs=run_manager,
        identity=IdentityService(settings.auth, IdentityRepository.alongside(repo)),
        limits=user_limits,
        credentials=credentials_service,
    )

    # In this order: who is asking, then their request rate, then the body's shape.
    app.before_request(load_principal)
    limits.install(app, settings.limits.per_user)
    register_error_handlers(app)
    security.install(app, settings.cors)
    for module in (messages, runs, sessions, files, gallery, health, pages, auth, credentials):
        app.register_api(module.bp)
    apidoc.finish(app, settings)
    return app
