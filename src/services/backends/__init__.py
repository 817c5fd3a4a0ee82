"""The backends of the run machinery, chosen by configuration only: with no `runs.broker_url`,
everything in this process (`local.py`); with one, Celery workers, Redis and the database
(`celery_queue.py`, `redis_bus.py`, `heartbeats.py`). See `base.py` for the interfaces."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ...settings import RunSettings
from ...storage.repository import Repository
from ...storage.runstate import RunStateRepository
from .base import EventFeed, EventLog, InputBroker, Liveness, RunQueue, StopSignal, follow
from .local import LocalEvents, LocalInputs, LocalLiveness, LocalQueue, LocalStops


@dataclass
class Backends:
    queue: RunQueue
    events: EventLog
    inputs: InputBroker
    stops: StopSignal
    liveness: Liveness
    # This process's name on the runs it holds (host, pid and a random part).
    worker_id: str
    distributed: bool


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def build_backends(settings: RunSettings, repo: Repository, unfinished: Callable[[], list[str]]) -> Backends:
    worker_id = process_id()
    if not settings.distributed:
        return Backends(
            queue=LocalQueue(settings.pool_size),
            events=LocalEvents(),
            inputs=LocalInputs(),
            stops=LocalStops(),
            liveness=LocalLiveness(unfinished),
            worker_id=worker_id,
            distributed=False,
        )
    # Imported here: the default mode needs neither Celery nor Redis.
    from .celery_queue import CeleryQueue, make_celery
    from .heartbeats import Heartbeats
    from .redis_bus import RedisEvents, RedisInputs, RedisStops, connect

    assert settings.broker_url is not None and settings.events_url is not None
    client = connect(settings.events_url)
    return Backends(
        queue=CeleryQueue(make_celery(settings.broker_url, settings.queue), settings.queue),
        events=RedisEvents(client, repo, settings.stream_ttl_s),
        inputs=RedisInputs(client),
        stops=RedisStops(client),
        liveness=Heartbeats(
            RunStateRepository.alongside(repo),
            worker_id,
            settings.worker_heartbeat_s,
            settings.dead_after_s,
            settings.queued_timeout_s,
        ),
        worker_id=worker_id,
        distributed=True,
    )


__all__ = [
    "Backends",
    "EventFeed",
    "EventLog",
    "InputBroker",
    "Liveness",
    "RunQueue",
    "StopSignal",
    "build_backends",
    "follow",
]
