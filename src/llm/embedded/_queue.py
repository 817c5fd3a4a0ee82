"""The model server's queue, as the people waiting on it need it: how long until my turn?

Runs in the server process (no autobots imports).  The server answers one request at a time
(see ``_http``), so a request waits for the one generating and every one that came before it;
this module keeps them in arrival order (``join`` on arrival, ``start`` once it holds the model,
``leave`` when done), the generating one's progress (fed by the model, ``_llama``: prompt tokens
read, tokens written), and what recent requests measured: tokens per second written and read,
and how many tokens a request reads (after the prompt cache) and writes.  ``report(tag)`` turns
that into one caller's position and an estimate in seconds, the model's loading time included.

What a report shows is the caller's own requests (found by their tag, which only the caller
knows) and counts: no other request's tag, text or size leaves this module.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ._loading import LoadTracker

# Before anything was measured: roughly the 1.5B default on 2 busy cores.
DEFAULT_GENERATE_TPS = 10.0
DEFAULT_PROMPT_TPS = 80.0
DEFAULT_COMPLETION_TOKENS = 150.0
DEFAULT_EVALUATED_TOKENS = 400.0
# Weight of the newest measurement in the running averages.
ALPHA = 0.3
# Measurements this small say more about overheads than about speed.
MIN_TOKENS_FOR_SPEED = 4
MIN_PROMPT_FOR_SPEED = 32


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - ALPHA) * old + ALPHA * new


@dataclass(eq=False)
class Entry:
    """One request, from its arrival to its end."""

    tracker: QueueTracker
    number: int
    tag: str | None
    max_tokens: int
    joined: float = field(default_factory=time.monotonic)
    started: float | None = None
    prompt_tokens: int | None = None
    first_token: float | None = None
    tokens: int = 0

    # Called by the model's generating thread (one at a time; see _llama.MeteredLlama).

    def prompt_begins(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._read_from = time.monotonic()

    def prompt_done(self, evaluated: int) -> None:
        now = time.monotonic()
        self.first_token = now
        self.tracker.measured_prompt(evaluated, now - getattr(self, "_read_from", now))

    def token(self) -> None:
        self.tokens += 1

    def generation_done(self) -> None:
        if self.first_token is not None:
            self.tracker.measured_generation(self.tokens, time.monotonic() - self.first_token)


class QueueTracker:
    """Requests waiting for the model and the one it serves, with recent speeds."""

    def __init__(self, loads: LoadTracker) -> None:
        self._loads = loads
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._numbers = itertools.count(1)
        self._generate_tps: float | None = None
        self._prompt_tps: float | None = None
        self._completion = DEFAULT_COMPLETION_TOKENS
        self._evaluated = DEFAULT_EVALUATED_TOKENS

    # the request's life ------------------------------------------------------------------

    def join(self, tag: str | None, max_tokens: int | None) -> Entry:
        entry = Entry(self, next(self._numbers), tag or None, max(1, int(max_tokens or 1024)))
        with self._lock:
            self._entries.append(entry)
        return entry

    def start(self, entry: Entry) -> None:
        entry.started = time.monotonic()

    def leave(self, entry: Entry) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)

    # measurements (from the generating thread) -------------------------------------------

    def measured_prompt(self, evaluated: int, seconds: float) -> None:
        with self._lock:
            self._evaluated = _ewma(self._evaluated, float(evaluated))
            if evaluated >= MIN_PROMPT_FOR_SPEED and seconds > 0:
                self._prompt_tps = _ewma(self._prompt_tps, evaluated / seconds)

    def measured_generation(self, tokens: int, seconds: float) -> None:
        with self._lock:
            self._completion = _ewma(self._completion, float(tokens))
            # The first token came with the prompt: the span covers the tokens after it.
            if tokens >= MIN_TOKENS_FOR_SPEED and seconds > 0:
                self._generate_tps = _ewma(self._generate_tps, (tokens - 1) / seconds)

    # estimates -------------------------------------------------------------------------------

    def _speeds(self) -> tuple[float, float]:
        return self._generate_tps or DEFAULT_GENERATE_TPS, self._prompt_tps or DEFAULT_PROMPT_TPS

    def _remaining(self, entry: Entry, now: float) -> float:
        """Seconds until ``entry`` is done (for one waiting, its whole expected time)."""
        gen_tps, prompt_tps = self._speeds()
        completion = min(float(entry.max_tokens), self._completion)
        if entry.first_token is None:
            to_read = self._evaluated
            if entry.prompt_tokens is not None:
                to_read = min(float(entry.prompt_tokens), max(self._evaluated, 64.0))
            if entry.started is not None:
                to_read = max(to_read - (now - entry.started) * prompt_tps, 0.1 * to_read)
            return to_read / prompt_tps + completion / gen_tps
        if entry.tokens < completion:
            left = completion - entry.tokens
        else:  # longer than most replies: a little more, at most to its cap
            left = min(entry.max_tokens - entry.tokens, max(8.0, 0.25 * entry.tokens))
        return max(left, 1.0) / gen_tps

    def report(self, tag: str | None) -> dict[str, Any]:
        """Where the caller's requests (tagged ``tag``) stand, and how long until its turn.

        ``state``: ``loading`` (the model is being loaded), ``queued`` (others are ahead),
        ``reading`` (its prompt is being read), ``writing`` (its reply is being generated) or
        ``idle`` (none of its requests is here).  ``ahead``: requests served before its first
        one (for a caller with none here, every request present).  ``estimate_s``: seconds until
        its first request starts writing (None when writing or idle).
        """
        now = time.monotonic()
        loading = self._loads.report()
        with self._lock:
            entries = list(self._entries)
            gen_tps, prompt_tps = self._speeds()
            measured = self._generate_tps is not None
            mine = next((e for e in entries if tag and e.tag == tag), None)
            if mine is not None and mine.started is not None:
                ahead: list[Entry] = []
            elif mine is not None:
                ahead = [e for e in entries if e.started is not None or e.number < mine.number]
                ahead = [e for e in ahead if e is not mine]
            else:
                ahead = entries
            wait = sum(self._remaining(e, now) for e in ahead)
            own_prompt = self._remaining(mine, now) - self._remaining_writing(mine) if mine else 0.0
        load_left = float(loading["remaining_s"]) if loading else 0.0
        if mine is not None and mine.first_token is not None:
            state, estimate = "writing", None
        elif loading is not None:
            state, estimate = "loading", load_left + wait + own_prompt
        elif mine is not None and mine.started is not None:
            state, estimate = "reading", own_prompt
        elif mine is not None:
            state, estimate = ("queued" if ahead else "reading"), wait + own_prompt
        else:
            state, estimate = "idle", None
        return {
            "state": state,
            "ahead": len(ahead),
            "estimate_s": None if estimate is None else round(max(estimate, 0.5), 1),
            "tokens": mine.tokens if mine is not None else 0,
            "loading": loading,
            "speeds": {
                "generate_tps": round(gen_tps, 1),
                "prompt_tps": round(prompt_tps, 1),
                "measured": measured,
            },
        }

    def _remaining_writing(self, entry: Entry) -> float:
        """The writing part of a request that has not started writing (its expected reply)."""
        gen_tps, _ = self._speeds()
        return min(float(entry.max_tokens), self._completion) / gen_tps

    def counts(self) -> dict[str, int]:
        """For the health route: how many requests wait and how many are served (0 or 1)."""
        with self._lock:
            serving = sum(1 for e in self._entries if e.started is not None)
            return {"waiting": len(self._entries) - serving, "serving": serving}
