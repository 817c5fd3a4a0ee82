"""Storing run events and LLM calls off the runs' own threads, many rows per transaction.

A hundred live runs emit thousands of events a second; one SQLite transaction each would spend
the server's CPU on commits. Here one thread writes whatever has piled up, every few
milliseconds, in a single transaction. Live listeners read events from memory, so storing them
late costs nobody a wait.

`flush()` is the barrier for when they must be on disk (a run's end, an answer returned): it
waits for the batch being written, if any, then writes what is still pending itself, in the
caller's thread. Everything put before it returns is stored, and no thread hand-off (queue the
request, wake the writer, wait to be woken) is paid at every run's end. Batches are written one
at a time, in the order their rows were put, so a run's events are stored in order.
`published` is told of each batch of events once it is stored (the distributed mode's event
log), whichever thread stored it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..storage.repository import Repository

log = logging.getLogger(__name__)

Event = tuple[str, int, str, dict[str, Any]]
Call = tuple[str, str, dict[str, Any]]


class EventWriter:
    def __init__(
        self,
        repo: Repository,
        interval_s: float = 0.02,
        published: Callable[[list[Event]], None] | None = None,
    ) -> None:
        self._repo = repo
        # Told of each batch of events once it is stored (the distributed mode's event log).
        self.published = published
        self._interval = interval_s
        self._lock = threading.Lock()  # guards the pending rows
        self._events: list[Event] = []
        self._calls: list[Call] = []
        self._writing = threading.Lock()  # one batch at a time, taken and stored in order
        self._pending = threading.Event()  # something waits to be stored
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="event-writer", daemon=True)
        self._thread.start()

    def put_event(self, run_id: str, seq: int, kind: str, data: dict[str, Any]) -> None:
        with self._lock:
            self._events.append((run_id, seq, kind, data))
        self._pending.set()

    def put_call(self, run_id: str, session_id: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._calls.append((run_id, session_id, row))
        self._pending.set()

    def flush(self, timeout: float = 30) -> None:
        """Return once everything put before this call is stored (or after `timeout`)."""
        if not self._writing.acquire(timeout=timeout):
            log.warning("the event writer is still busy after %.0f s: not waiting longer", timeout)
            return
        try:
            self._write_pending()
        finally:
            self._writing.release()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._pending.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._closed:
            self._pending.wait()
            if self._closed:
                break
            # Gather what arrives in the next few milliseconds into the same transaction; a
            # flush meanwhile stores it sooner, and this finds less (or nothing) to do.
            time.sleep(self._interval)
            self._pending.clear()
            with self._writing:
                self._write_pending()
        self.flush()

    def _write_pending(self) -> None:
        # Called with `_writing` held: the rows taken here are stored before any put later.
        with self._lock:
            events, calls = self._events, self._calls
            self._events, self._calls = [], []
        if not events and not calls:
            return
        try:
            self._repo.add_events_and_calls(events, calls)
        except Exception:
            log.exception("could not store %d run events and %d LLM calls", len(events), len(calls))
            return
        if events and self.published is not None:
            try:
                self.published(events)
            except Exception:
                log.exception("could not publish %d run events", len(events))
