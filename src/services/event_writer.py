"""Storing run events and LLM calls off the runs' own threads, many rows per transaction.

A hundred live runs emit thousands of events a second; one SQLite transaction each would spend
the server's CPU on commits. Here one thread writes whatever has piled up, every few
milliseconds, in a single transaction. Live listeners read events from memory, so storing them
late costs nobody a wait; `flush()` is the barrier for when they must be on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from ..storage.repository import Repository

log = logging.getLogger(__name__)

_STOP = object()


class EventWriter:
    def __init__(
        self,
        repo: Repository,
        interval_s: float = 0.02,
        published: Callable[[list[tuple[str, int, str, dict[str, Any]]]], None] | None = None,
    ) -> None:
        self._repo = repo
        # Told of each batch of events once it is stored (the distributed mode's event log).
        self.published = published
        self._interval = interval_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._urgent = threading.Event()  # a flush is waiting: write now, don't gather more
        self._thread = threading.Thread(target=self._loop, name="event-writer", daemon=True)
        self._thread.start()

    def put_event(self, run_id: str, seq: int, kind: str, data: dict[str, Any]) -> None:
        self._queue.put(("event", (run_id, seq, kind, data)))

    def put_call(self, run_id: str, session_id: str, row: dict[str, Any]) -> None:
        self._queue.put(("call", (run_id, session_id, row)))

    def flush(self, timeout: float = 30) -> None:
        """Return once everything put before this call is stored."""
        if not self._thread.is_alive():
            return
        done = threading.Event()
        self._queue.put(("flush", done))
        self._urgent.set()
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._queue.put(_STOP)
        self._thread.join(10)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            items = [first]
            if first is not _STOP:
                # Gather what arrives in the next few milliseconds into the same transaction,
                # unless somebody is waiting for it to be stored.
                self._urgent.wait(self._interval)
                self._urgent.clear()
                while True:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
            events = [payload for kind, payload in (i for i in items if i is not _STOP) if kind == "event"]
            calls = [payload for kind, payload in (i for i in items if i is not _STOP) if kind == "call"]
            if events or calls:
                try:
                    self._repo.add_events_and_calls(events, calls)
                except Exception:
                    log.exception("could not store %d run events and %d LLM calls", len(events), len(calls))
                else:
                    if events and self.published is not None:
                        try:
                            self.published(events)
                        except Exception:
                            log.exception("could not publish %d run events", len(events))
            for item in items:
                if item is not _STOP and item[0] == "flush":
                    item[1].set()
            if any(item is _STOP for item in items):
                return
