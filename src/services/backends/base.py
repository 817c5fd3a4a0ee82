"""The five things a live run needs from the world around it, as small interfaces with two
backends each: in this process (`local.py`, the default) and across processes and machines
(`redis_bus.py` and `celery_queue.py`, the distributed mode). `RunManager` holds the live-run
logic once, above them, so both modes behave the same.

- `RunQueue`: where a stored run waits for a thread to run it (a pool here, Celery there).
- `EventLog`: how a run's stored events reach listeners in other processes.
- `InputBroker`: how a human's answer, taken by whichever process received it (the database
  decides who may answer), reaches the thread that waits for it.
- `StopSignal`: how a cancel reaches the thread that holds the run, in whichever process.
- `Liveness`: how a process says which runs it still holds, and how runs whose process died are
  found (here: at the next start; there: by heartbeats any live process checks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

Event = tuple[int, str, dict[str, Any]]
Execute = Callable[[str, str], None]  # (run_id, sealed payload) -> runs it, in this thread


class EventFeed:
    """One run's events as a listener that must not block sees them."""

    def take(self, after: int) -> tuple[list[Event], bool]:
        """The events after id `after`, and whether the run has ended (nothing more will come)."""
        raise NotImplementedError

    def take_now(self, after: int) -> tuple[list[Event], bool] | None:
        """`take` if it can answer at once without waiting (on a lock, a database, Redis), else
        None: an event loop calls this first and hands only the rest to a thread."""
        return None

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` (from any thread, quickly) when there may be new events; returns the
        function that ends the subscription."""
        return lambda: None


def follow(feed: EventFeed, after: int, heartbeat_s: float) -> Iterator[Event | None]:
    """A feed as a blocking iterator for threads (the CLI, plain WSGI): its events in order until
    the run ends; None when nothing happened for `heartbeat_s`."""
    woken = threading.Event()
    unsubscribe = feed.subscribe(woken.set)
    try:
        while True:
            woken.clear()
            events, ended = feed.take(after)
            for event in events:
                after = event[0]
                yield event
            if ended:
                return
            if not events and not woken.wait(heartbeat_s):
                yield None
    finally:
        unsubscribe()


class RunQueue:
    def start(self, execute: Execute) -> None:
        """Begin taking runs (the worker side); `execute` runs one in the calling thread."""

    def submit(self, run_id: str, payload: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Take no more runs."""


class EventLog:
    def published(self, events: list[tuple[str, int, str, dict[str, Any]]]) -> None:
        """These events are stored now (called by the event writer after each commit)."""

    def feed(self, run_id: str) -> EventFeed | None:
        """A feed of a run this process does not hold; None: read it from the database."""
        return None

    def close(self) -> None:
        pass


class InputBroker:
    def deliver(self, run_id: str, prompt_id: str, text: str) -> None:
        """Hand the answer to prompt `prompt_id`, already taken in the database, to its run."""
        raise NotImplementedError

    def wake(self) -> None:
        """A run is stopping: waiting threads look at `stopping` again soon."""

    def wait(self, run_id: str, prompt_id: str, timeout_s: float, stopping: Callable[[], bool]) -> str | None:
        """Wait (in the run's thread) for the answer to `prompt_id`; None when none came in time
        or the run is stopping."""
        raise NotImplementedError


class StopSignal:
    def listen(self, on_stop: Callable[[str], None]) -> None:
        """Call `on_stop(run_id)` whenever any process asks a run to stop."""

    def request(self, run_id: str) -> None:
        raise NotImplementedError

    def requested(self, run_id: str) -> bool:
        """Whether a stop was asked before this process began listening for the run."""
        return False

    def close(self) -> None:
        pass


class Liveness:
    def hold(self, run_id: str) -> None:
        """This process runs `run_id` now."""

    def release(self, run_id: str) -> None:
        pass

    def start(
        self,
        reap: Callable[[str], None],
        expire: Callable[[str], None] | None = None,
        lost: Callable[[str], None] | None = None,
    ) -> None:
        """Begin watching: `reap(run_id)` for each run whose process is found dead,
        `expire(run_id)` for each run no process took in time, and `lost(run_id)` for a run this
        process holds that another process ended meanwhile."""

    def close(self) -> None:
        pass
