"""The services of one process, built once from its settings: what the web app and the CLI share.

`build_services` opens the database (migrating it), the event writer, and every service in the
order they depend on each other, on the backends the settings choose (`backends/`: this process,
or Celery, Redis and the database). A server process (`recover=True`) also watches for runs whose
process died (in one process: those a previous one left, at once; across processes: runs whose
worker stopped beating, from now on) and sweeps its leftover sandboxes; a one-off CLI run must
not, since a server may be running on the same database with runs of its own in flight.
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
from ..storage.runstate import RunStateRepository
from ..storage.workflows import WorkflowRepository
from .backends import Backends, build_backends
from .chat import ChatService
from .credentials import CredentialService, credential_service
from .event_writer import EventWriter
from .history import RunHistory
from .identity import IdentityService
from .limits import UserLimits
from .runs import RunManager
from .sessions import SessionService
from .shared_files import SharedFiles
from .skills import SkillService
from .teams import run_history, skill_library
from .workflows import WorkflowService, runnable_check

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
    backends: Backends
    skills: SkillService
    history: RunHistory
    workflows: WorkflowService


def build_services(settings: Settings, recover: bool = True) -> Services:
    engine = create_db_engine(
        settings.database_url, settings.database_pool_size, settings.database_max_overflow
    )
    migrate(engine)
    repo = Repository(make_session_factory(engine), serialize_writes=engine.dialect.name == "sqlite")
    state = RunStateRepository.alongside(repo)
    backends = build_backends(settings.runs, repo, state.unfinished)
    writer = EventWriter(repo, published=backends.events.published)
    atexit.register(writer.close)  # a graceful stop stores the last events
    user_limits = UserLimits(settings.limits.per_user, AccountingRepository.alongside(repo))
    # The server's secret is read (or made) here, at start: stored provider keys need it.
    credentials = credential_service(settings, repo)
    chat = ChatService(
        settings, repo, call_store=writer.put_call, limits=user_limits, credentials=credentials
    )
    shared = (
        SharedFiles(state, settings.code_execution, settings.runs.max_stored_file_bytes)
        if backends.distributed
        else None
    )
    runs = RunManager(chat, repo, settings.runs, writer, backends, box=credentials.box, files=shared)
    sessions = SessionService(
        repo, settings.code_execution, check_flow=chat.teams.runtime_flow, shared_files=shared
    )
    if recover:
        if interrupted := runs.recover():
            log.warning("marked %d unfinished run(s) as interrupted", interrupted)
        # Across processes, another process's sandboxes are alive: only one process a machine
        # (the one-process server) may take every leftover container for its own.
        if not backends.distributed and docker_available(settings.code_execution):
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
        backends=backends,
        skills=skill_library(repo),
        history=run_history(repo),
        workflows=WorkflowService(WorkflowRepository.alongside(repo), check_flow=runnable_check(chat.teams)),
    )
