"""The in-process backends: the default, one `serve` process that does everything.

Runs wait in a bounded thread pool, a stop or a human's answer is a call in the same process, and
runs left unfinished by a previous process (there is only ever one) are found when the next one
starts. Nothing here needs a broker, Redis or a second process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .base import EventLog, Execute, InputBroker, Liveness, RunQueue, StopSignal


class LocalQueue(RunQueue):
    def __init__(self, pool_size: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="run")
        self._execute: Execute | None = None

    def start(self, execute: Execute) -> None:
        self._execute = execute

    def submit(self, run_id: str, payload: str) -> None:
        assert self._execute is not None, "start() the queue before submitting"
        self._pool.submit(self._execute, run_id, payload)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class LocalEvents(EventLog):
    """Listeners are in this process: they read a live run from memory (`live.py`) and a
    finished one from the database, so there is nothing to publish."""


class LocalInputs(InputBroker):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._answers: dict[str, str] = {}

    def deliver(self, run_id: str, prompt_id: str, text: str) -> None:
        with self._changed:
            self._answers[prompt_id] = text
            self._changed.notify_all()

    def wake(self) -> None:
        """A run stopped: its waiting thread looks again now."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, run_id: str, prompt_id: str, timeout_s: float, stopping: Callable[[], bool]) -> str | None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while prompt_id not in self._answers and not stopping():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._answers.pop(prompt_id, None)


class LocalStops(StopSignal):
    def __init__(self) -> None:
        self._on_stop: Callable[[str], None] | None = None

    def listen(self, on_stop: Callable[[str], None]) -> None:
        self._on_stop = on_stop

    def request(self, run_id: str) -> None:
        if self._on_stop is not None:
            self._on_stop(run_id)


class LocalLiveness(Liveness):
    """One process holds every run, so at its start any unfinished run is one a dead process
    left: each is reaped once, then nothing more is watched."""

    def __init__(self, unfinished: Callable[[], list[str]]) -> None:
        self._unfinished = unfinished

    def start(
        self,
        reap: Callable[[str], None],
        expire: Callable[[str], None] | None = None,
        lost: Callable[[str], None] | None = None,
    ) -> None:
        for run_id in self._unfinished():
            reap(run_id)


__all__ = ["LocalEvents", "LocalInputs", "LocalLiveness", "LocalQueue", "LocalStops"]
