"""The distributed mode's liveness: a worker's heartbeats for the runs it holds, and the check any
live process makes for runs whose worker stopped beating (SIGKILL, a machine gone).

A worker writes `runs.heartbeat_at` for all its runs in one UPDATE every `worker_heartbeat_s`.
Every process (API or worker) looks for held runs whose heartbeat is older than `dead_after_s`
every quarter of that, and reaps them: the run is interrupted with what was said (the database
decides which process does it). So a dead worker's runs end within `dead_after_s` plus a quarter
(25 s by default), and a process that starts never touches runs that live workers hold.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ...storage.runstate import RunStateRepository
from .base import Liveness

log = logging.getLogger(__name__)


class Heartbeats(Liveness):
    def __init__(self, state: RunStateRepository, worker_id: str, beat_s: float, dead_after_s: float) -> None:
        self._state = state
        self.worker_id = worker_id
        self._beat_s = beat_s
        self._dead_after = timedelta(seconds=dead_after_s)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._held.add(run_id)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.discard(run_id)

    def start(self, reap: Callable[[str], None]) -> None:
        threading.Thread(target=self._beat, name="heartbeats", daemon=True).start()
        threading.Thread(target=self._reap, args=(reap,), name="reaper", daemon=True).start()

    def close(self) -> None:
        self._closed.set()

    def _beat(self) -> None:
        while not self._closed.wait(self._beat_s):
            with self._lock:
                held = list(self._held)
            try:
                self._state.heartbeat(self.worker_id, held)
            except Exception:
                log.exception("could not write the heartbeat of %d run(s)", len(held))

    def _reap(self, reap: Callable[[str], None]) -> None:
        while not self._closed.wait(self._dead_after.total_seconds() / 4):
            try:
                stale = self._state.stale(datetime.now(UTC) - self._dead_after)
            except Exception:
                log.exception("could not look for runs whose worker died")
                continue
            for run_id in stale:
                try:
                    reap(run_id)
                except Exception:
                    log.exception("could not interrupt run %s, whose worker died", run_id)
