"""Readiness (`GET /api/ready`): whether each dependency this server's config uses answers now.

`/api/health` says the process lives; this says whether it can do its work. Each dependency the
settings use is checked at once, in parallel, each within `TIMEOUT_S` (a check that has not
answered by then is `down`), so the answer never hangs on a dead host:
- `database`: always (a `SELECT 1`);
- `redis`: in the distributed mode (events, cancels, input) and wherever request rates are
  counted in Redis (`limits.per_user.storage_url`), each URL once;
- `broker`: in the distributed mode when it is not that same Redis (RabbitMQ: an AMQP login);
- `embedded_model`: when agents without a config_list get the embedded model (no OPENAI_*
  credentials on the server): `loaded`, `loading`, `not_loaded` (it starts and loads at first
  use, which is fine), or `down` when it cannot start here (llama.cpp or the weights are not
  installed);
- `docker`: when code runs in Docker by default (`code_execution.executor: docker`); not
  required when `fallback_to_local` would run the code in the local sandbox instead.
Every entry has `state`, `latency_ms`, `required` and, when down, a short `detail` (an error's
kind, never a URL with its password). The answer is ready when every required one is up.

The route is public, so an answer is reused for `CACHE_S` and callers that arrive during a check
share it: a flood of requests costs one round of checks a second, not a connection to each
dependency per request.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ..execution.docker_engine import connect as docker_connect
from ..llm.embedded import installed_models
from ..llm.endpoints import server_has_endpoint
from ..settings import Settings
from ..storage.repository import Repository

TIMEOUT_S = 1.0
CACHE_S = 1.0
UP = "up"
DOWN = "down"
# The embedded model server's public health route (README: "GET /autobots/health (no key)").
_EMBEDDED_HEALTH = "/autobots/health"


@dataclass
class Dependency:
    name: str
    required: bool
    check: Callable[[], str]  # returns the state; raises when down


class Readiness:
    def __init__(self, settings: Settings, repo: Repository) -> None:
        self._settings = settings
        self._repo = repo
        # Bounded: checks stuck on a dead host cannot pile up threads; when all are busy, the
        # next answer reports them down after the timeout.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ready")
        self._deps = self._dependencies()
        self._lock = threading.Lock()  # one round of checks at a time; the others wait for it
        self._last: tuple[float, tuple[bool, str, dict[str, dict[str, Any]]]] | None = None

    def check(self) -> tuple[bool, str, dict[str, dict[str, Any]]]:
        """(ready, a sentence saying so, {name: {state, latency_ms, required[, detail]}}), at
        most `CACHE_S` old."""
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < CACHE_S:
                return self._last[1]
            answer = self._check_now()
            self._last = (time.monotonic(), answer)
            return answer

    def _check_now(self) -> tuple[bool, str, dict[str, dict[str, Any]]]:
        started = time.perf_counter()
        futures = {dep.name: (dep, self._pool.submit(_timed, dep.check)) for dep in self._deps}
        report: dict[str, dict[str, Any]] = {}
        for name, (dep, future) in futures.items():
            report[name] = _outcome(future, started + TIMEOUT_S, dep.required)
        down = [name for name, r in report.items() if r["required"] and r["state"] == DOWN]
        return not down, f"not ready: {', '.join(down)} down" if down else "ready", report

    def _dependencies(self) -> list[Dependency]:
        s = self._settings
        deps = [Dependency("database", True, self._database)]
        redis_urls = []
        if s.runs.events_url:
            redis_urls.append(s.runs.events_url)
        storage = s.limits.per_user.storage_url
        if storage.startswith(("redis://", "rediss://")) and storage not in redis_urls:
            redis_urls.append(storage)
        for i, url in enumerate(redis_urls):
            deps.append(Dependency("redis" if i == 0 else f"redis_{i + 1}", True, _redis_check(url)))
        broker = s.runs.broker_url
        if broker and broker not in redis_urls:
            check = (
                _redis_check(broker) if broker.startswith(("redis://", "rediss://")) else _amqp_check(broker)
            )
            deps.append(Dependency("broker", True, check))
        if not server_has_endpoint(s):
            deps.append(Dependency("embedded_model", True, self._embedded))
        if s.code_execution.executor == "docker":
            deps.append(Dependency("docker", not s.code_execution.fallback_to_local, self._docker))
        return deps

    def _database(self) -> str:
        self._repo.ping()
        return UP

    def _docker(self) -> str:
        docker_connect(self._settings.code_execution, timeout=int(TIMEOUT_S) or 1).close()
        return UP

    def _embedded(self) -> str:
        embedded = self._settings.embedded
        model = embedded.default_model
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama-cpp-python is not installed")
        if model not in installed_models():
            raise RuntimeError(f"the weights of {model} are not installed")
        server_dir = embedded.resolved_server_dir()
        try:
            state = json.loads((server_dir / "state.json").read_text(encoding="utf-8"))
            port = int(state["port"])
        except (OSError, ValueError, KeyError, TypeError):
            port = 0
        health = _embedded_health(port)
        if health is not None and model in (health.get("loaded") or ()):
            return "loaded"
        if (server_dir / "starting.json").exists():  # written while a process starts it
            return "loading"
        return "not_loaded"  # started or loaded by the first call that needs it


def _timed(check: Callable[[], str]) -> tuple[str, float]:
    started = time.perf_counter()
    state = check()
    return state, time.perf_counter() - started


def _outcome(future: Future[tuple[str, float]], deadline: float, required: bool) -> dict[str, Any]:
    try:
        state, seconds = future.result(timeout=max(0.0, deadline - time.perf_counter()))
    except FutureTimeout:
        return {
            "state": DOWN,
            "latency_ms": round(TIMEOUT_S * 1000, 1),
            "required": required,
            "detail": "timeout",
        }
    except Exception as exc:
        return {"state": DOWN, "latency_ms": None, "required": required, "detail": _detail(exc)}
    return {"state": state, "latency_ms": round(seconds * 1000, 1), "required": required}


def _detail(exc: BaseException) -> str:
    """An error's kind, and its message only where it names no address (it may hold a URL with
    a password): the embedded model's own reasons."""
    if type(exc) is RuntimeError:
        return str(exc)[:200]
    return type(exc).__name__


def _redis_check(url: str) -> Callable[[], str]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)

    def check() -> str:
        client.ping()
        return UP

    return check


def _amqp_check(url: str) -> Callable[[], str]:
    def check() -> str:
        from kombu import Connection

        with Connection(url, connect_timeout=TIMEOUT_S) as connection:
            connection.connect()  # one AMQP login, no retries
        return UP

    return check


def _embedded_health(port: int) -> dict[str, Any] | None:
    if not port:
        return None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}{_EMBEDDED_HEALTH}", timeout=TIMEOUT_S) as response:
            data = json.loads(response.read().decode())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
