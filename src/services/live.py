"""A live run's state in the process that runs it, and the views listeners read it through.

`LiveRun` holds what changes while a run runs (status, the events so far; the prompt a human is
asked lives in the database, where any process can answer it) under one lock, `changed`. Listeners read events through an `EventFeed`: a live run's from
memory (woken by `wakers`, never holding a thread while they wait), a finished one's from the
database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..schemas.chat import Message
from ..schemas.runs import RunStatus
from ..storage.repository import Repository
from .backends.base import Event, EventFeed
from .chat import PreparedRun, RunControl
from .errors import RunFailed

HEARTBEAT = None  # what `stream` yields when nothing happened for a while

# Events reach listeners from memory before the writer stores them, so after a hard kill a client
# may have seen ids the database never got. A run's in-memory ids never run more than SEQ_SLACK
# ahead of what is stored (the emitting thread waits for the writer when they would), and
# recovery numbers its events from the last stored id + SEQ_SLACK + 1: always past anything sent.
SEQ_SLACK = 1000


@dataclass
class LiveRun:
    prepared: PreparedRun
    interactive: bool
    control: RunControl = field(default_factory=RunControl)
    status: str = RunStatus.QUEUED
    seq: int = 0
    flushed_seq: int = 0  # every event up to this id is stored
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=lambda: threading.Condition(threading.RLock()))
    concluded: bool = False  # the terminal status is announced; nothing follows it (`conclude`)
    # Set with `concluded`: a thread that waits only for the end (a blocking request) waits here,
    # not on `changed`, which wakes every waiter at every event the run emits.
    ended: threading.Event = field(default_factory=threading.Event)
    files_kept: bool = False  # the distributed mode: its session's files are stored for others
    reply: Message | None = None
    error: RunFailed | None = None
    # Called (with `changed` held) after every event: listeners on an event loop wake up here
    # instead of holding a thread each while they wait.
    wakers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.prepared.run_id

    def conclude(self) -> None:
        """Called with `changed` held: nothing more is emitted from now."""
        self.concluded = True
        self.ended.set()


class LiveFeed(EventFeed):
    def __init__(self, live: LiveRun) -> None:
        self._live = live

    def take(self, after: int) -> tuple[list[Event], bool]:
        with self._live.changed:
            return self._slice(after)

    def take_now(self, after: int) -> tuple[list[Event], bool] | None:
        # The run's thread holds the lock only briefly, except while a flush it started stores
        # its events: then the caller waits in a thread, not here.
        if not self._live.changed.acquire(blocking=False):
            return None
        try:
            return self._slice(after)
        finally:
            self._live.changed.release()

    def _slice(self, after: int) -> tuple[list[Event], bool]:
        live = self._live  # ids rise by one from the run's first event in this process
        first = live.events[0][0] if live.events else live.seq + 1
        return live.events[max(0, after + 1 - first) :], live.concluded

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        live = self._live
        with live.changed:
            live.wakers.append(wake)

        def unsubscribe() -> None:
            with live.changed:
                if wake in live.wakers:
                    live.wakers.remove(wake)

        return unsubscribe


class StoredFeed(EventFeed):
    """A finished run (or one another process holds): its stored events, all at once."""

    def __init__(self, repo: Repository, run_id: str) -> None:
        self._repo = repo
        self._run_id = run_id

    def take(self, after: int) -> tuple[list[Event], bool]:
        return self._repo.events_after(self._run_id, after, limit=1_000_000), True
