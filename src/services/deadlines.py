"""One thread for every run's wall-time cap in this process.

A `threading.Timer` per run started and stopped a thread for every run, almost always only to
cancel it when the run ended in time. Here one thread keeps the deadlines in a heap and sleeps
until the earliest; a deadline that passes runs its callback in a thread of its own (ending a
run stores its answer, which must not hold up the other runs' caps). Cancelling is a flag.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Deadline:
    at: float  # time.monotonic()
    call: Callable[..., Any] = field(compare=False)
    args: tuple[Any, ...] = field(default=(), compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines:
    def __init__(self, name: str = "run-deadlines") -> None:
        self._name = name
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, call: Callable[..., Any], *args: Any) -> Deadline:
        """Call `call(*args)` in `seconds` unless the returned deadline is cancelled first."""
        deadline = Deadline(time.monotonic() + seconds, call, args)
        with self._changed:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._changed.notify()  # earlier than what the thread sleeps until
        return deadline

    def _loop(self) -> None:
        while True:
            with self._changed:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)  # ended in time: nothing to do
                if not self._heap:
                    self._changed.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                due = heapq.heappop(self._heap)[2]
            if not due.cancelled:
                threading.Thread(
                    target=due.call, args=due.args, name=f"{self._name}-due", daemon=True
                ).start()
