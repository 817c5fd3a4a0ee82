"""Time budgets: an LLM call's tries together stay within the call's timeout and the run's
remaining wall time.

Why: the openai SDK retries a failed or timed-out request twice by default, each try with the
full timeout, and AutoGen then tries a `config_list`'s next entry with its own full timeout. A
hung endpoint held a blocking request for three timeouts per entry, and a call could run on long
after its run's wall-time cap had ended the run.

How:
- every entry gets `max_retries: 0` (`endpoints.py`): the SDK tries once;
- before each LLM call an agent makes (its `safeguard_llm_inputs` hook) and before a group chat's
  speaker selection, `start_call(timeout)` opens the call's budget; its clock starts with the
  call's first HTTP request, and every request of the call (one per `config_list` entry tried)
  gets what is left of it. A successful answer closes the budget;
- no request gets more than the run's remaining wall time (`limits.max_run_seconds`);
- a request with no time left is not sent: it fails as a timeout at once.

The limits are applied by event hooks of the shared httpx clients (`event_hooks()`), which lower
the request's connect/read/write/pool timeouts; the budget and the run are found through context
variables (each thread of parallel receivers has its own copy). httpx's timeouts bound each wait
on the network, not a whole response: an endpoint that keeps sending a byte at a time is ended by
the run's wall-time cap (the run ends at once; its thread when the call returns).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .usage import current_recorder

# Less than this left is no time at all: a request would time out before the endpoint could answer.
_MIN_LEFT_S = 0.05


@dataclass(frozen=True)
class _CallBudget:
    timeout_s: float
    deadline: float | None = None  # time.monotonic(); set by the call's first request


_call: contextvars.ContextVar[_CallBudget | None] = contextvars.ContextVar(
    "autobots_call_budget", default=None
)


def start_call(timeout_s: float | None) -> None:
    """The next LLM call made in this context has `timeout_s` for all its tries (None: only the
    run's remaining time and each request's own timeout limit it)."""
    _call.set(_CallBudget(timeout_s) if timeout_s else None)


def time_left() -> float | None:
    """Seconds this context's next request may take (None: no limit beyond its own timeout).
    Starts the current call's clock."""
    now = time.monotonic()
    left: float | None = None
    budget = _call.get()
    if budget is not None:
        if budget.deadline is None:
            budget = _CallBudget(budget.timeout_s, now + budget.timeout_s)
            _call.set(budget)
        assert budget.deadline is not None
        left = budget.deadline - now
    recorder = current_recorder()
    if recorder is not None:
        run_left = recorder.remaining_s
        left = run_left if left is None else min(left, run_left)
    return left


def _limit_request(request: httpx.Request) -> None:
    left = time_left()
    if left is None:
        return
    if left < _MIN_LEFT_S:
        raise httpx.ConnectTimeout(
            "no time left for this LLM call (its llm_config.timeout, or the run's limits.max_run_seconds)",
            request=request,
        )
    timeout = dict(request.extensions.get("timeout") or {})
    for key in ("connect", "read", "write", "pool"):
        current = timeout.get(key)
        timeout[key] = left if current is None else min(float(current), left)
    request.extensions["timeout"] = timeout


def _close_on_success(response: httpx.Response) -> None:
    """An answer arrived: the call is over (a failed one goes on to the next entry, same budget)."""
    if response.status_code < 300:
        _call.set(None)


def event_hooks() -> dict[str, list[Callable[[Any], Any]]]:
    """httpx `event_hooks` that apply the budgets to every request of a client."""
    return {"request": [_limit_request], "response": [_close_on_success]}
