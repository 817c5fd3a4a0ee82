"""What the model server knows about loading a model: which one, since when, and for how long.

Runs in the server process (no autobots imports).  A load cannot report its own progress
(llama.cpp reads the GGUF in one call), so progress is time measured against what the last load
of the same model took on this machine, kept in the server directory's timings file; a model
never loaded here is guessed from its file size.  The queue tracker adds the remaining time to
every waiting request's estimate.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._protocol import measured, record_timing

# A first load's guess: the file read at this rate (bytes/s), plus the fixed cost of setting up
# the context; near what a 2-core machine with a cold page cache shows for the 1.1 GB default.
GUESS_BYTES_PER_S = 150e6
GUESS_FIXED_S = 2.0


def expected_load_s(timings_file: Path, model: str, size: int) -> float:
    """How long loading ``model`` should take: the last measured load, or a guess from its size."""
    last = measured(timings_file, model, "load_s")
    return last if last is not None else GUESS_FIXED_S + size / GUESS_BYTES_PER_S


class LoadTracker:
    """The load in progress, if any, and measured load times (written to the timings file)."""

    def __init__(self, timings_file: Path, sizes: dict[str, int]) -> None:
        self._file = timings_file
        self._sizes = sizes
        self._lock = threading.Lock()
        self._current: tuple[str, float, float] | None = None  # model, started, expected

    @contextlib.contextmanager
    def loading(self, model: str) -> Iterator[None]:
        """Around one load; a load that succeeds is measured for the next estimate."""
        expected = expected_load_s(self._file, model, self._sizes.get(model, 0))
        started = time.monotonic()
        with self._lock:
            self._current = (model, started, expected)
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                self._current = None
            if ok:
                record_timing(self._file, model, "load_s", time.monotonic() - started)

    def report(self) -> dict[str, Any] | None:
        """The load under way: its model, elapsed and expected seconds, what is left, progress."""
        with self._lock:
            current = self._current
        if current is None:
            return None
        model, started, expected = current
        elapsed = time.monotonic() - started
        # Past the expected time the load is late, not done: "a few more seconds", never 0.
        remaining = max(expected - elapsed, min(5.0, 0.2 * expected))
        return {
            "model": model,
            "elapsed_s": round(elapsed, 1),
            "expected_s": round(expected, 1),
            "remaining_s": round(remaining, 1),
            "progress": round(min(0.99, elapsed / expected) if expected > 0 else 0.99, 2),
        }
