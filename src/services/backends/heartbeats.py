"""The distributed mode's liveness: a worker's heartbeats for the runs it holds, and the check any
live process makes for runs whose worker stopped beating (SIGKILL, a machine gone).

A worker writes `runs.heartbeat_at` for all its runs in one UPDATE every `worker_heartbeat_s`.
Every process (API or worker) looks for held runs whose heartbeat is older than `dead_after_s`
every quarter of that, and reaps them: the run is interrupted with what was said (the database
decides which process does it). So a dead worker's runs end within `dead_after_s` plus a quarter
(25 s by default), and a process that starts never touches runs that live workers hold. A run
still queued `runs.queued_timeout_s` after it was queued (no worker running, or its message lost
with a broker that restarted without persistence) fails, saying so. A worker whose run another
process ended (its heartbeat came too late) stops it: nothing it says after that counts.
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
    def __init__(
        self,
        state: RunStateRepository,
        worker_id: str,
        beat_s: float,
        dead_after_s: float,
        queued_timeout_s: float,
    ) -> None:
        self._state = state
        self.worker_id = worker_id
        self._beat_s = beat_s
        self._dead_after = timedelta(seconds=dead_after_s)
        self._queued_timeout = timedelta(seconds=queued_timeout_s)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._held.add(run_id)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.discard(run_id)

    def start(
        self,
        reap: Callable[[str], None],
        expire: Callable[[str], None] | None = None,
        lost: Callable[[str], None] | None = None,
    ) -> None:
        threading.Thread(target=self._beat, args=(lost,), name="heartbeats", daemon=True).start()
        threading.Thread(target=self._reap, args=(reap, expire), name="reaper", daemon=True).start()

    def close(self) -> None:
        self._closed.set()

    def _beat(self, lost: Callable[[str], None] | None) -> None:
        while not self._closed.wait(self._beat_s):
            with self._lock:
                held = set(self._held)
            try:
                alive = self._state.heartbeat(self.worker_id, held)
            except Exception:
                log.exception("could not write the heartbeat of %d run(s)", len(held))
                continue
            with self._lock:
                gone = (held - alive) & self._held  # ended elsewhere while this worker held them
            for run_id in gone:
                log.warning(
                    "run %s was ended by another process (its heartbeat was late): stopping it", run_id
                )
                if lost is not None:
                    lost(run_id)

    def _reap(self, reap: Callable[[str], None], expire: Callable[[str], None] | None) -> None:
        while not self._closed.wait(self._dead_after.total_seconds() / 4):
            now = datetime.now(UTC)
            try:
                stale = self._state.stale(now - self._dead_after)
                late = self._state.stale_queued(now - self._queued_timeout) if expire is not None else []
            except Exception:
                log.exception("could not look for runs whose worker died")
                continue
            for run_id in stale:
                try:
                    reap(run_id)
                except Exception:
                    log.exception("could not interrupt run %s, whose worker died", run_id)
            for run_id in late:
                try:
                    if expire is not None:
                        expire(run_id)
                except Exception:
                    log.exception("could not end run %s, which no worker took", run_id)
