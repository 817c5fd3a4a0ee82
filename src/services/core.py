"""The services of one process, built once from its settings: what the web app and the CLI share.

`build_services` opens the database (migrating it), the event writer, and every service in the
order they depend on each other. A server process (`recover=True`) also ends the runs a previous
process left unfinished and sweeps its leftover sandboxes; a one-off CLI run must not, since a
server may be running on the same database with runs of its own in flight.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass

from ..execution import docker_available, sweep_orphans
from ..settings import Settings
from ..storage.accounting import AccountingRepository
from ..storage.database import create_db_engine, make_session_factory, migrate
from ..storage.identity import IdentityRepository
from ..storage.repository import Repository
from .chat import ChatService
from .credentials import CredentialService, credential_service
from .event_writer import EventWriter
from .identity import IdentityService
from .limits import UserLimits
from .runs import RunManager
from .sessions import SessionService

log = logging.getLogger("autobots")


@dataclass
class Services:
    settings: Settings
    repo: Repository
    writer: EventWriter
    chat: ChatService
    sessions: SessionService
    runs: RunManager
    identity: IdentityService
    limits: UserLimits
    credentials: CredentialService


def build_services(settings: Settings, recover: bool = True) -> Services:
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    repo = Repository(make_session_factory(engine), serialize_writes=engine.dialect.name == "sqlite")
    writer = EventWriter(repo)
    atexit.register(writer.close)  # a graceful stop stores the last events
    user_limits = UserLimits(settings.limits.per_user, AccountingRepository.alongside(repo))
    # The server's secret is read (or made) here, at start: stored provider keys need it.
    credentials = credential_service(settings, repo)
    chat = ChatService(
        settings, repo, call_store=writer.put_call, limits=user_limits, credentials=credentials
    )
    runs = RunManager(chat, repo, settings.runs, writer)
    sessions = SessionService(repo, settings.code_execution, check_flow=chat.teams.runtime_flow)
    if recover:
        if interrupted := runs.recover():
            log.warning("marked %d unfinished run(s) as interrupted", interrupted)
        if docker_available(settings.code_execution):
            sweep_orphans(settings.code_execution)  # containers left by a previous server process
        moved, deleted = sessions.adopt_legacy_workdirs()
        if moved or deleted:
            log.info("work dirs now per user: moved %d, deleted %d of sessions that are gone", moved, deleted)
    return Services(
        settings=settings,
        repo=repo,
        writer=writer,
        chat=chat,
        sessions=sessions,
        runs=runs,
        identity=IdentityService(settings.auth, IdentityRepository.alongside(repo)),
        limits=user_limits,
        credentials=credentials,
    )
