"""Exact accounting of every LLM call a run makes, and the run's hard limits.

AutoGen's `ChatResult.cost` misses group-chat speaker selection and reflection summaries, so calls
are captured where AutoGen makes them: through its runtime-logging hook, which sees every
completion of every `OpenAIWrapper`. One process-wide bridge forwards each call to the recorder
of the run that made it, found through a context variable, so concurrent runs never mix.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from autogen import runtime_logging
from autogen.logger.base_logger import BaseLogger

from ..settings import RunLimits
from .pricing import Price, autogen_price


class RunStopped(Exception):
    """The run must end now; what was said so far is kept."""


class RunLimitExceeded(RunStopped):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class RunCancelled(RunStopped):
    pass


@dataclass(frozen=True)
class LLMCall:
    agent: str
    model: str
    requested_model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: Decimal
    price_known: bool
    cached: bool
    latency_s: float
    started_at: datetime
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> LLMCall:
        """A call read back from `llm_calls` (the requested model is not stored)."""
        return cls(
            agent=row["agent"],
            model=row["model"],
            requested_model=row["model"],
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["total_tokens"],
            cost=Decimal(row["cost_usd"]),
            price_known=row["price_known"],
            cached=row["cached"],
            latency_s=row["latency_s"],
            started_at=row["started_at"],
            error=row["error"],
        )

    def row(self) -> dict[str, Any]:
        """The columns of `llm_calls`."""
        return {
            "agent": self.agent,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": str(self.cost),
            "price_known": self.price_known,
            "cached": self.cached,
            "latency_s": self.latency_s,
            "started_at": self.started_at,
            "error": self.error,
        }


@dataclass
class _Tally:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: Decimal = field(default_factory=Decimal)

    def add(self, call: LLMCall) -> None:
        self.calls += 1
        if call.cached:
            return  # the endpoint never saw it: no tokens, no cost
        self.prompt_tokens += call.prompt_tokens
        self.completion_tokens += call.completion_tokens
        self.total_tokens += call.total_tokens
        self.cost += call.cost

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": float(self.cost),
            "cost_usd": str(self.cost),
        }


def summarize(calls: list[LLMCall], notes: list[str] | None = None) -> dict[str, Any]:
    """Totals, per model and per agent, of a list of calls (cached calls count no tokens)."""
    total = _Tally()
    per_model: dict[str, _Tally] = {}
    per_agent: dict[str, _Tally] = {}
    for call in calls:
        total.add(call)
        per_model.setdefault(call.model, _Tally()).add(call)
        per_agent.setdefault(call.agent, _Tally()).add(call)
    return {
        "total_cost": float(total.cost),
        "total_cost_usd": str(total.cost),
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "total_tokens": total.total_tokens,
        "llm_calls": total.calls,
        "cached_calls": sum(1 for c in calls if c.cached),
        "failed_calls": sum(1 for c in calls if c.error),
        "per_model": {k: v.as_dict() for k, v in per_model.items()},
        "per_agent": {k: v.as_dict() for k, v in per_agent.items()},
        "cost_notes": list(notes or []),
    }


class UsageRecorder:
    """Collects one run's LLM calls and enforces its limits (thread-safe: receivers run in parallel)."""

    def __init__(
        self,
        limits: RunLimits,
        prices: dict[str, Price] | None = None,
        on_call: Callable[[LLMCall], None] | None = None,
        guard: Callable[[Decimal], str | None] | None = None,
    ) -> None:
        self.limits = limits
        # Asked before every call with the run's cost so far: a reason to stop (a user's daily
        # budget that the run would cross), or None.
        self._guard = guard
        self._prices = dict(prices or {})
        self._on_call = on_call
        self._lock = threading.Lock()
        self._calls: list[LLMCall] = []
        self._pending: dict[str, list[LLMCall]] = {}
        self._notes: dict[str, str] = {}
        self._started = time.monotonic()
        self._cancelled = False
        self.limit_hit: RunLimitExceeded | None = None

    # limits ------------------------------------------------------------------------------------

    def check(self) -> None:
        """Called before every LLM call and code run: raises once the run must stop."""
        with self._lock:
            if self._cancelled:
                raise RunCancelled("the run was cancelled")
            if self.limit_hit is not None:
                raise self.limit_hit
            if len(self._calls) >= self.limits.max_llm_calls:
                self.limit_hit = RunLimitExceeded(
                    "max_llm_calls", f"the run reached its cap of {self.limits.max_llm_calls} LLM calls"
                )
                raise self.limit_hit
            if time.monotonic() - self._started > self.limits.max_run_seconds:
                self.limit_hit = RunLimitExceeded(
                    "max_run_seconds", f"the run reached its time cap of {self.limits.max_run_seconds:g} s"
                )
                raise self.limit_hit
            spent = sum((c.cost for c in self._calls), Decimal(0))
        if self._guard is not None and (reason := self._guard(spent)) is not None:
            with self._lock:
                if self.limit_hit is None:
                    self.limit_hit = RunLimitExceeded("daily_budget_usd", reason)
                raise self.limit_hit

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True

    def expire(self) -> RunLimitExceeded:
        """The run's wall time is up while something still runs: every later check stops it."""
        with self._lock:
            if self.limit_hit is None:
                self.limit_hit = RunLimitExceeded(
                    "max_run_seconds", f"the run reached its time cap of {self.limits.max_run_seconds:g} s"
                )
            return self.limit_hit

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    @property
    def remaining_s(self) -> float:
        """The wall time the run has left under `limits.max_run_seconds` (none once cancelled or
        out of time): no LLM request of the run may take longer (see `budget.py`)."""
        with self._lock:
            if self._cancelled or (self.limit_hit is not None and self.limit_hit.kind == "max_run_seconds"):
                return 0.0
        return self.limits.max_run_seconds - self.elapsed_s

    # recording ---------------------------------------------------------------------------------

    def add_prices(self, prices: dict[str, Price]) -> None:
        """Prices a request's config gives for its models (they win over AutoGen's table)."""
        with self._lock:
            self._prices.update(prices)

    def price_for(self, requested_model: str, answered_model: str) -> Price | None:
        return (
            self._prices.get(requested_model)
            or self._prices.get(answered_model)
            or autogen_price(answered_model)
            or autogen_price(requested_model)
        )

    def record_completion(
        self,
        agent: str,
        requested_model: str,
        response: Any,
        cached: bool,
        started_at: datetime,
    ) -> LLMCall:
        agent = _billed_to.get() or agent
        if isinstance(response, str):  # AutoGen logs a failed call as a string
            call = LLMCall(
                agent=agent,
                model=requested_model,
                requested_model=requested_model,
                prompt_tokens=0,
                completion_tokens=0,
                total_tokens=0,
                cost=Decimal(0),
                price_known=True,
                cached=cached,
                latency_s=_since(started_at),
                started_at=started_at,
                error=response,
            )
        else:
            usage = getattr(response, "usage", None)
            prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
            completion = int(getattr(usage, "completion_tokens", 0) or 0)
            total = int(getattr(usage, "total_tokens", 0) or (prompt + completion))
            answered = str(getattr(response, "model", None) or requested_model)
            price = self.price_for(requested_model, answered)
            if price is None:
                self._notes[answered] = (
                    f"no price is known for model '{answered}': its calls are counted at 0 USD "
                    "(give the config entry a 'price' to count them)"
                )
            elif price.source == "embedded":
                self._notes[answered] = f"'{answered}' is the embedded local model: it costs nothing"
            call = LLMCall(
                agent=agent,
                model=answered,
                requested_model=requested_model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=total,
                cost=price.cost(prompt, completion) if price else Decimal(0),
                price_known=price is not None,
                cached=cached,
                latency_s=_since(started_at),
                started_at=started_at,
            )
        with self._lock:
            self._calls.append(call)
            self._pending.setdefault(agent, []).append(call)
        if self._on_call is not None:
            self._on_call(call)
        return call

    def take_pending(self, agent: str) -> list[LLMCall]:
        """The calls an agent made since its last message: they produced that message."""
        with self._lock:
            return self._pending.pop(agent, [])

    @property
    def calls(self) -> list[LLMCall]:
        with self._lock:
            return list(self._calls)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            calls, notes = list(self._calls), list(self._notes.values())
        return summarize(calls, notes)


def _since(started_at: datetime) -> float:
    return max(0.0, (datetime.now(UTC) - started_at).total_seconds())


_current: contextvars.ContextVar[UsageRecorder | None] = contextvars.ContextVar(
    "autobots_usage", default=None
)


@contextmanager
def recording(recorder: UsageRecorder) -> Iterator[UsageRecorder]:
    """Make `recorder` receive the LLM calls made in this context (threads: copy the context)."""
    _install_bridge()
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


def current_recorder() -> UsageRecorder | None:
    return _current.get()


_billed_to: contextvars.ContextVar[str | None] = contextvars.ContextVar("autobots_billed_to", default=None)


@contextmanager
def billed_to(agent: str) -> Iterator[None]:
    """Bill the calls made in this context to `agent`.

    AutoGen's group-chat speaker selection talks through throw-away helper agents
    (`speaker_selection_agent`, `checking_agent`); their calls are the manager's work. A context
    variable, not a name mapping: two managers of one run select speakers in parallel threads.
    """
    token = _billed_to.set(agent)
    try:
        yield
    finally:
        _billed_to.reset(token)


class _AutogenBridge(BaseLogger):
    """AutoGen's runtime logger interface, forwarding completions to the current run's recorder."""

    def start(self) -> str:
        return "autobots"

    def log_chat_completion(
        self,
        invocation_id: Any,
        client_id: int,
        wrapper_id: int,
        source: Any,
        request: dict[str, Any],
        response: Any,
        is_cached: int,
        cost: float,
        start_time: str,
    ) -> None:
        recorder = _current.get()
        if recorder is None:
            return
        agent = getattr(source, "name", None) or (source if isinstance(source, str) else "unknown")
        started = _parse_ts(start_time)
        recorder.record_completion(agent, str(request.get("model", "")), response, bool(is_cached), started)
        # A call that slipped past the pre-call checks (AutoGen's internal helper agents) still
        # counts; the run stops right after it instead of making another.
        if len(recorder.calls) > recorder.limits.max_llm_calls:
            recorder.check()

    def log_new_agent(self, agent: Any, init_args: dict[str, Any]) -> None:
        return None

    def log_event(self, source: Any, name: str, **kwargs: Any) -> None:
        return None

    def log_new_wrapper(self, wrapper: Any, init_args: dict[str, Any]) -> None:
        return None

    def log_new_client(self, client: Any, wrapper: Any, init_args: dict[str, Any]) -> None:
        return None

    def log_function_use(self, source: Any, function: Any, args: dict[str, Any], returns: Any) -> None:
        return None

    def stop(self) -> None:
        return None

    def get_connection(self) -> None:
        return None


def _parse_ts(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return datetime.now(UTC)


_bridge_lock = threading.Lock()


def _install_bridge() -> None:
    with _bridge_lock:
        if not runtime_logging.logging_enabled():
            runtime_logging.start(logger=_AutogenBridge())
