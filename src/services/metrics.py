"""Prometheus metrics (`GET /metrics`): what the server did, counted where it happens, summed
over every process of a machine.

Where the figures come from:
- runs by terminal status, their duration, code executions: the run events every process stores
  (`ObservedEvents` wraps the backends' `EventLog`, whose `published` is told of every batch the
  event writer stores and of the events written for runs nobody holds, `recovery.py`), so each
  terminal status is counted once, by the process that stored it;
- LLM calls, tokens, cost and latency: each call as it is stored (`observing_calls`, the chat
  service's call store), late calls of a cancelled run included;
- HTTP requests: the web app's request hook (`observe_request`); webhook deliveries:
  `count_webhook_delivery`, called by whoever delivers them;
- queued and live runs: gauges read from the database at scrape time (`RunGauges`), the same
  deployment-wide figure from any API process.

Across processes (gunicorn's `--workers N`, Celery workers on the same machine): prometheus_client's
multiprocess mode. The entry point (`cli.py`) sets PROMETHEUS_MULTIPROC_DIR before this module
imports prometheus_client; every process then keeps its values in its own files there, and a
scrape sums them (`MultiProcessCollector`). A process built without it (a test harness, the
benchmarks) counts in memory and serves its own figures. No metric here is a gauge kept in
files, so a dead process's files keep its counts (counters only grow) until the next start of
the machine's top process removes the files of processes that are gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from ..schemas.runs import TERMINAL, EventKind, RunStatus
from ..storage.repository import Repository
from ..storage.runcounts import RunCounts
from .backends import EventFeed, EventLog

log = logging.getLogger(__name__)
run_log = logging.getLogger("autobots.runs")

CONTENT_TYPE = CONTENT_TYPE_LATEST
StoredEvent = tuple[str, int, str, dict[str, Any]]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RUN_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
_MAX_LABEL = 100  # a model name an endpoint answers with is cut to this

RUNS = Counter("autobots_runs", "Runs that ended, by terminal status", ["status"], registry=None)
RUN_SECONDS = Histogram(
    "autobots_run_duration_seconds",
    "Runs' time from queued to ended, by terminal status",
    ["status"],
    buckets=_RUN_BUCKETS,
    registry=None,
)
LLM_CALLS = Counter(
    "autobots_llm_calls",
    "LLM calls, by answering model and outcome (ok, error, cached)",
    ["model", "outcome"],
    registry=None,
)
LLM_TOKENS = Counter(
    "autobots_llm_tokens",
    "Tokens of LLM calls the endpoint counted (cached calls not), by model and kind (prompt, completion)",
    ["model", "kind"],
    registry=None,
)
LLM_COST = Counter("autobots_llm_cost_usd", "USD the LLM calls cost, by model", ["model"], registry=None)
LLM_SECONDS = Histogram(
    "autobots_llm_latency_seconds",
    "LLM calls' latency, by model",
    ["model"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
CODE_RUNS = Counter(
    "autobots_code_executions",
    "Code blocks run, by executor and outcome (ok, error, timeout)",
    ["executor", "outcome"],
    registry=None,
)
CODE_SECONDS = Histogram(
    "autobots_code_execution_duration_seconds",
    "Code blocks' run time, by executor",
    ["executor"],
    buckets=_LATENCY_BUCKETS,
    registry=None,
)
WEBHOOKS = Counter(
    "autobots_webhook_deliveries", "Webhook delivery attempts, by outcome", ["outcome"], registry=None
)
HTTP_REQUESTS = Counter(
    "autobots_http_requests",
    "HTTP requests answered, by method, route (the URL rule) and status",
    ["method", "route", "status"],
    registry=None,
)
HTTP_SECONDS = Histogram(
    "autobots_http_request_duration_seconds",
    "HTTP requests' time to the response's headers, by method and route",
    ["method", "route"],
    buckets=_HTTP_BUCKETS,
    registry=None,
)
ALL: tuple[Collector, ...] = (
    RUNS,
    RUN_SECONDS,
    LLM_CALLS,
    LLM_TOKENS,
    LLM_COST,
    LLM_SECONDS,
    CODE_RUNS,
    CODE_SECONDS,
    WEBHOOKS,
    HTTP_REQUESTS,
    HTTP_SECONDS,
)
_TIMEOUT_EXIT_CODE = 124


def count_webhook_delivery(outcome: str) -> None:
    """One webhook delivery attempt ended: `outcome` is a short fixed word (e.g. `delivered`,
    `failed`, `refused`), never a URL or a body."""
    WEBHOOKS.labels(outcome=outcome[:_MAX_LABEL]).inc()


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
    HTTP_SECONDS.labels(method=method, route=route).observe(seconds)


def multiprocess() -> bool:
    """Whether prometheus_client was imported in multiprocess mode (values kept in files)."""
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", False))


class RunMetrics:
    """Counts what stored run events and LLM calls say (see the module's doc)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._lock = threading.Lock()
        self._durations: dict[str, float] = {}  # a run's answer said its time; its status follows

    def events(self, events: Iterable[StoredEvent]) -> None:
        for run_id, _seq, kind, data in events:
            if kind == EventKind.FINAL:
                self._remember_duration(run_id, data)
            elif kind == EventKind.STATUS and data.get("status") in TERMINAL:
                self._ended(run_id, str(data["status"]))
            elif kind == EventKind.CODE_EXECUTION_RESULT:
                executor = str(data.get("executor") or "unknown")[:_MAX_LABEL]
                code = data.get("exit_code")
                outcome = "ok" if code == 0 else "timeout" if code == _TIMEOUT_EXIT_CODE else "error"
                CODE_RUNS.labels(executor=executor, outcome=outcome).inc()
                if isinstance(data.get("duration_s"), int | float):
                    CODE_SECONDS.labels(executor=executor).observe(float(data["duration_s"]))

    def call(self, row: dict[str, Any]) -> None:
        model = str(row.get("model") or "unknown")[:_MAX_LABEL]
        cached = bool(row.get("cached"))
        outcome = "error" if row.get("error") else "cached" if cached else "ok"
        LLM_CALLS.labels(model=model, outcome=outcome).inc()
        if not cached:
            LLM_TOKENS.labels(model=model, kind="prompt").inc(int(row.get("prompt_tokens") or 0))
            LLM_TOKENS.labels(model=model, kind="completion").inc(int(row.get("completion_tokens") or 0))
            LLM_SECONDS.labels(model=model).observe(float(row.get("latency_s") or 0.0))
        try:
            cost = Decimal(str(row.get("cost_usd") or "0"))
        except InvalidOperation:
            cost = Decimal(0)
        if cost > 0:
            LLM_COST.labels(model=model).inc(float(cost))

    def _remember_duration(self, run_id: str, data: dict[str, Any]) -> None:
        message = data.get("message")
        metadata = message.get("metadata") if isinstance(message, dict) else None
        timing = metadata.get("timing") if isinstance(metadata, dict) else None
        duration = timing.get("duration_s") if isinstance(timing, dict) else None
        if isinstance(duration, int | float):
            with self._lock:
                if len(self._durations) > 10_000:  # answers whose status never came here
                    self._durations.clear()
                self._durations[run_id] = float(duration)

    def _ended(self, run_id: str, status: str) -> None:
        RUNS.labels(status=status).inc()
        with self._lock:
            duration = self._durations.pop(run_id, None)
        if duration is None:  # a failure: no answer carried the time; the run's row has it
            duration = self._stored_duration(run_id)
        if duration is not None:
            RUN_SECONDS.labels(status=status).observe(max(duration, 0.0))

    def _stored_duration(self, run_id: str) -> float | None:
        try:
            run = self._repo.get_run(run_id)
        except Exception:
            log.exception("could not read run %s for its duration", run_id)
            return None
        if run is None or run.get("started_at") is None or run.get("ended_at") is None:
            return None
        return float((run["ended_at"] - run["started_at"]).total_seconds())


def log_run_ends(events: Iterable[StoredEvent]) -> None:
    """One line per run that ended (its status; never what was said), named by its run_id."""
    for run_id, _seq, kind, data in events:
        if kind == EventKind.STATUS and data.get("status") in TERMINAL:
            run_log.info("run ended", extra={"run_id": run_id, "fields": {"status": str(data["status"])}})


class ObservedEvents(EventLog):
    """An `EventLog` that also logs the runs' ends and counts what every batch of stored events
    it is told of says (`metrics`: None with metrics off)."""

    def __init__(
        self, inner: EventLog, log_ends: Callable[[list[StoredEvent]], None], metrics: RunMetrics | None
    ) -> None:
        self.inner = inner
        self._log_ends = log_ends
        self._metrics = metrics

    def published(self, events: list[StoredEvent]) -> None:
        self.inner.published(events)
        try:
            self._log_ends(events)
            if self._metrics is not None:
                self._metrics.events(events)
        except Exception:  # observing must never cost a run its events
            log.exception("could not count %d run events", len(events))

    def feed(self, run_id: str) -> EventFeed | None:
        return self.inner.feed(run_id)

    def close(self) -> None:
        self.inner.close()


def observing_calls(
    store: Callable[[str, str, dict[str, Any]], None], metrics: RunMetrics
) -> Callable[[str, str, dict[str, Any]], None]:
    """The chat service's call store, counting each call as it is handed on."""

    def store_and_count(run_id: str, session_id: str, row: dict[str, Any]) -> None:
        store(run_id, session_id, row)
        try:
            metrics.call(row)
        except Exception:
            log.exception("could not count an LLM call of run %s", run_id)

    return store_and_count


class RunGauges(Collector):
    """Queued and live runs, read from the database when scraped (every process, every machine)."""

    def __init__(self, counts: RunCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self._counts.unfinished()
        except Exception as exc:  # the database is down: /api/ready says so; the counters still serve
            log.warning("run gauges unavailable: %s", type(exc).__name__)
            return
        queued = GaugeMetricFamily("autobots_queued_runs", "Runs waiting for a worker, deployment-wide")
        queued.add_metric([], counts.get(RunStatus.QUEUED, 0))
        yield queued
        live = GaugeMetricFamily(
            "autobots_live_runs", "Runs running or waiting for a human, deployment-wide", labels=["status"]
        )
        for status in (RunStatus.RUNNING, RunStatus.AWAITING_INPUT):
            live.add_metric([str(status)], counts.get(status, 0))
        yield live


def registry(multiproc_dir: Path | None, gauges: RunGauges | None = None) -> CollectorRegistry:
    """What one scrape reads: every process's files of this machine (multiprocess mode) or this
    process's own values, and the database's gauges."""
    reg = CollectorRegistry(auto_describe=False)
    if multiprocess() and multiproc_dir is not None:
        MultiProcessCollector(reg, path=str(multiproc_dir))
    else:
        for metric in ALL:
            reg.register(metric)
    if gauges is not None:
        reg.register(gauges)
    return reg


def exposition(multiproc_dir: Path | None, gauges: RunGauges | None = None) -> bytes:
    return generate_latest(registry(multiproc_dir, gauges))


def remove_stale_files(path: Path) -> int:
    """At the start of a machine's top process: delete the files of processes that are gone
    (`<kind>_<pid>.db`); returns how many. Live processes' files (another top process of the
    machine, e.g. a worker beside `serve`) are kept."""
    removed = 0
    for file in path.glob("*.db"):
        pid_part = file.stem.rsplit("_", 1)[-1]
        if pid_part.isdigit() and not _alive(int(pid_part)):
            with contextlib.suppress(OSError):
                file.unlink()
                removed += 1
    return removed


def process_exited(pid: int, path: Path) -> None:
    """A process of this machine has exited (a gunicorn worker, a Celery worker)."""
    mark_process_dead(pid, str(path))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
