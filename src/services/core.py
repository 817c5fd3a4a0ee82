"""The services of one process, built once from its settings: what the web app and the CLI share.

`build_services` opens the database (migrating it), the event writer, and every service in the
order they depend on each other, on the backends the settings choose (`backends/`: this process,
or Celery, Redis and the database). A server process (`recover=True`) also watches for runs whose
process died (in one process: those a previous one left, at once; across processes: runs whose
worker stopped beating, from now on) and sweeps its leftover sandboxes; a one-off CLI run must
not, since a server may be running on the same database with runs of its own in flight. A server
process also runs the ticker (`ticker.py`): due schedules and webhook deliveries, claimed in the
database so that any number of processes do each once.
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass
from pathlib import Path

from ..execution import docker_available, sweep_orphans
from ..settings import Settings, metrics_dir
from ..storage.accounting import AccountingRepository
from ..storage.database import create_db_engine, make_session_factory, migrate
from ..storage.identity import IdentityRepository
from ..storage.repository import Repository
from ..storage.runcounts import RunCounts
from ..storage.runstate import RunStateRepository
from ..storage.schedules import ScheduleRepository
from ..storage.webhooks import WebhookRepository
from ..storage.workflows import WorkflowRepository
from .backends import Backends, build_backends
from .chat import ChatService
from .credentials import CredentialService, credential_service
from .event_writer import EventWriter
from .history import RunHistory
from .identity import IdentityService
from .limits import UserLimits
from .metrics import (
    ObservedEvents,
    RunGauges,
    RunMetrics,
    count_webhook_delivery,
    log_run_ends,
    multiprocess,
    observing_calls,
)
from .readiness import Readiness
from .runs import RunManager
from .schedules import ScheduleService
from .sessions import SessionService
from .shared_files import SharedFiles
from .skills import SkillService
from .teams import run_history, skill_library
from .ticker import Ticker
from .waits import RunWaits
from .webhooks import WebhookService, webhook_secret
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
    schedules: ScheduleService
    webhooks: WebhookService
    waits: RunWaits
    # Schedules and webhook deliveries (a server process's, `recover=True`); None otherwise.
    ticker: Ticker | None = None
    # What GET /metrics reads: the machine's multiprocess dir (None: this process's own values)
    # and the database's run gauges (None with metrics off).
    metrics_dir: Path | None = None
    run_gauges: RunGauges | None = None
    readiness: Readiness | None = None


def build_services(settings: Settings, recover: bool = True) -> Services:
    engine = create_db_engine(
        settings.database_url, settings.database_pool_size, settings.database_max_overflow
    )
    migrate(engine)
    repo = Repository(make_session_factory(engine), serialize_writes=engine.dialect.name == "sqlite")
    state = RunStateRepository.alongside(repo)
    backends = build_backends(settings.runs, repo, state.unfinished)
    run_metrics = RunMetrics(repo) if settings.metrics.enabled else None
    # Every stored batch of events, the writer's and recovery's: a line per run's end, the metrics.
    backends.events = ObservedEvents(backends.events, log_run_ends, run_metrics)
    writer = EventWriter(repo, published=backends.events.published)
    atexit.register(writer.close)  # a graceful stop stores the last events
    user_limits = UserLimits(settings.limits.per_user, AccountingRepository.alongside(repo))
    # The server's secret is read (or made) here, at start: stored provider keys need it.
    credentials = credential_service(settings, repo)
    call_store = writer.put_call if run_metrics is None else observing_calls(writer.put_call, run_metrics)
    chat = ChatService(settings, repo, call_store=call_store, limits=user_limits, credentials=credentials)
    shared = (
        SharedFiles(state, settings.code_execution, settings.runs.max_stored_file_bytes)
        if backends.distributed
        else None
    )
    runs = RunManager(chat, repo, settings.runs, writer, backends, box=credentials.box, files=shared)
    sessions = SessionService(
        repo, settings.code_execution, check_flow=chat.teams.runtime_flow, shared_files=shared
    )
    workflows = WorkflowService(WorkflowRepository.alongside(repo), check_flow=runnable_check(chat.teams))
    webhooks = WebhookService(
        settings.webhooks,
        WebhookRepository.alongside(repo),
        webhook_secret(settings),
        on_attempt=count_webhook_delivery if settings.metrics.enabled else None,
    )
    schedules = ScheduleService(ScheduleRepository.alongside(repo), runs, workflows, webhooks)
    ticker = None
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
        # After recovery: a run a schedule starts now is never taken for a previous process's.
        jobs = [schedules.fire_due] if settings.schedules.enabled else []
        ticker = Ticker(settings.schedules.tick_s, [webhooks.dispatch, *jobs]).start()
        atexit.register(webhooks.close)
        atexit.register(ticker.stop)  # registered last, so it runs first: no firing after the rest closed
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
        workflows=workflows,
        schedules=schedules,
        webhooks=webhooks,
        ticker=ticker,
        waits=RunWaits(runs, settings),
        metrics_dir=metrics_dir(settings) if run_metrics is not None and multiprocess() else None,
        run_gauges=RunGauges(RunCounts.alongside(repo)) if run_metrics is not None else None,
        readiness=Readiness(settings, repo),
    )
