"""The ticker of a server process: what is due, done every `schedules.tick_s`: schedules to fire,
webhooks to send.

Every process that serves (`serve`'s API processes and, in the distributed mode, the workers:
`build_services(recover=True)`) runs one; none of them is special. What each tick may do is
decided in the database (a schedule's due time and a delivery's attempt are claimed with
conditional UPDATEs), so any number of tickers on one database do each thing once. Each job has
a thread of its own, so a burst of firings never holds up the webhooks of runs that ended. A job
that raises is logged (once, until it works again) and tried again at the next tick; it never
ends its thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Job = Callable[[], object]


class Ticker:
    def __init__(self, tick_s: float, jobs: Sequence[Job]) -> None:
        self._tick_s = tick_s
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(job,), name=f"ticker-{n}", daemon=True)
            for n, job in enumerate(jobs)
        ]

    def start(self) -> Ticker:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    def _loop(self, job: Job) -> None:
        name = getattr(job, "__qualname__", repr(job))
        failing = False  # logged once, not every tick
        while not self._stopping.wait(self._tick_s):
            try:
                job()
            except Exception:
                if not failing:
                    log.exception("ticker: %s failed; tried again at every tick", name)
                failing = True
            else:
                if failing:
                    log.info("ticker: %s works again", name)
                failing = False
