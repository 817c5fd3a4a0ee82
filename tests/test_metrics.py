"""`GET /metrics`: what an operator scraping it sees equals what really happened.

A server of this module's own (nobody else's runs in its counters) answers chats against the
scripted LLM; the counters must equal what the scripted endpoint counted (calls, prompt and
completion tokens) and the runs by terminal status. Across processes: a deployment of two API
processes (`serve --workers 2`) and a Celery worker sharing one metrics directory, where a run
executed by the worker shows in `/metrics` read from the API, and requests answered by either
API process add up. Access: loopback, or the metrics token (wrong: 403, none: 401).
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SERVER_KEY
from tests.execution_support import require_local_sandbox
from tests.support import workflows as wf
from tests.support.cluster import cluster_env, start_api, start_worker
from tests.support.redis_db import redis_url
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server
from tests.test_postgres import fresh_database

METRICS_REDIS_DB = 14  # a Redis database of this module's own
TOKEN = "metrics-token-" + "0123456789abcdef"
DIGEST_TOKEN = "another-metrics-token-fedcba9876543210"


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = requests.get(url + "/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(scope="module")
def own_server(llm_server: ScriptedLLM) -> Iterator[RunningServer]:
    with tempfile.TemporaryDirectory(prefix="autobots-metrics-") as root:
        Path(root).chmod(0o755)  # the local sandbox's user must reach the work dirs
        srv = start_server(
            Path(root),
            env={
                "OPENAI_API_KEY": SERVER_KEY,
                "OPENAI_BASE_URL": llm_server.base_url,
                "AUTOBOTS_CODE_EXECUTION__WORK_ROOT": str(Path(root) / "work"),
            },
        )
        yield srv
        srv.stop()


def test_counters_equal_what_the_llm_counted(
    own_server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    flow = wf.autonomous(wf.assistant())
    llm.queue("Four. TERMINATE", "Nine, said at some length here. TERMINATE", Reply("boom", status=500))
    for question in ("What is 2+2?", "What is 3*3?", "And this one fails?"):
        own_server.post("/api/messages", {"message": wf.message(user_id, question), "flow_config": flow})
    counted = llm.counted()
    assert counted["calls"] == 2
    samples = scrape(own_server.url)

    assert value(samples, "autobots_runs_total", status="completed") == 2
    assert value(samples, "autobots_runs_total", status="failed") == 1
    assert total(samples, "autobots_run_duration_seconds_count") == 3
    assert value(samples, "autobots_llm_calls_total", model="gpt-4o-mini", outcome="ok") == counted["calls"]
    prompt = value(samples, "autobots_llm_tokens_total", model="gpt-4o-mini", kind="prompt")
    completion = value(samples, "autobots_llm_tokens_total", model="gpt-4o-mini", kind="completion")
    assert (prompt, completion) == (counted["prompt_tokens"], counted["completion_tokens"])
    # Every call's latency, the failed one's too (its time was spent all the same).
    assert value(samples, "autobots_llm_latency_seconds_count", model="gpt-4o-mini") == counted["calls"] + 1
    assert value(samples, "autobots_llm_cost_usd_total", model="gpt-4o-mini") > 0
    # The failed call is counted as one, by its outcome.
    assert total(samples, "autobots_llm_calls_total", outcome="error") == 1
    # Requests by route (the URL rule, not the path), method and status.
    assert (
        value(samples, "autobots_http_requests_total", method="POST", route="/api/messages", status="200")
        == 2
    )
    assert (
        value(samples, "autobots_http_requests_total", method="POST", route="/api/messages", status="502")
        == 1
    )
    own_server.get(f"/api/runs/run-{uuid.uuid4().hex[:8]}")  # one id more: the same route
    again = scrape(own_server.url)
    assert (
        value(again, "autobots_http_requests_total", method="GET", route="/api/runs/<run_id>", status="404")
        == 1
    )
    # Nothing is queued or running once the answers are in.
    assert value(again, "autobots_queued_runs") == 0
    assert value(again, "autobots_live_runs", status="running") == 0
    assert value(again, "autobots_webhook_deliveries_total", outcome="delivered") == 0


def test_code_executions_by_the_executor_that_ran_them(
    own_server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    require_local_sandbox()
    before = scrape(own_server.url)
    proxy = wf.userproxy(code_execution_config={"executor": "local"}, max_consecutive_auto_reply=4)
    flow = wf.autonomous(wf.assistant("coder"), sender=proxy)
    llm.queue("```python\nprint(6 * 7)\n```", "```python\nraise SystemExit(3)\n```", "Done. TERMINATE")
    r = own_server.post("/api/messages", {"message": wf.message(user_id, "run code"), "flow_config": flow})
    assert r.status_code == 200, r.text
    after = scrape(own_server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("autobots_code_executions_total", executor="local", outcome="ok") == 1
    assert delta("autobots_code_executions_total", executor="local", outcome="error") == 1
    assert delta("autobots_code_execution_duration_seconds_count", executor="local") == 2
    assert delta("autobots_runs_total", status="completed") == 1


def test_token_access(llm_server: ScriptedLLM, tmp_path: Path) -> None:
    """With loopback not trusted (a proxy on the machine): only the token, or the token whose
    digest the config holds; none is 401, a wrong one 403."""
    srv = start_server(
        tmp_path,
        env={
            "OPENAI_API_KEY": SERVER_KEY,
            "OPENAI_BASE_URL": llm_server.base_url,
            "AUTOBOTS_METRICS__ALLOW_LOOPBACK": "false",
            "AUTOBOTS_METRICS__TOKEN": TOKEN,
            "AUTOBOTS_METRICS__TOKEN_SHA256": hashlib.sha256(DIGEST_TOKEN.encode()).hexdigest(),
        },
    )
    try:
        assert requests.get(srv.url + "/metrics", timeout=10).status_code == 401
        wrong = requests.get(srv.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403
        assert "autobots_" not in wrong.text
        for token in (TOKEN, DIGEST_TOKEN):
            assert (
                "autobots_http_requests_total"
                in requests.get(
                    srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
                ).text
            )
        assert TOKEN not in srv.log() and DIGEST_TOKEN not in srv.log()
    finally:
        srv.stop()


@pytest.fixture
def deployment(llm_server: ScriptedLLM) -> Iterator[tuple[RunningServer, Path]]:
    """Two API processes and a worker on one machine, sharing its metrics directory."""
    url = redis_url(METRICS_REDIS_DB)
    redis.Redis.from_url(url).flushdb()
    with fresh_database() as pg, tempfile.TemporaryDirectory(prefix="autobots-metrics-") as root:
        shared = Path(root) / "metrics"
        env = {
            **cluster_env(pg, url, llm_server.base_url, SERVER_KEY),
            "AUTOBOTS_METRICS__MULTIPROC_DIR": str(shared),
        }
        api = start_api(Path(root) / "api", env, workers=2)
        worker = None
        try:
            worker = start_worker(Path(root) / "worker", env, concurrency=2)
            yield api, shared
        finally:
            if worker is not None:
                worker.stop()
            api.stop()


def test_across_processes(deployment: tuple[RunningServer, Path], llm: ScriptedLLM, user_id: str) -> None:
    api, shared = deployment
    llm.queue("Sixteen. TERMINATE")
    r = api.post(
        "/api/messages",
        {"message": wf.message(user_id, "What is 4*4?"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert r.status_code == 200, r.text
    for _ in range(8):  # spread over both API processes
        assert requests.get(api.url + "/api/ready", timeout=10).status_code == 200
    counted = llm.counted()
    samples = scrape(api.url)  # the run's counts are the worker's: read from its files
    assert value(samples, "autobots_runs_total", status="completed") == 1
    assert (
        value(samples, "autobots_llm_calls_total", model="gpt-4o-mini", outcome="ok") == counted["calls"] == 1
    )
    assert (
        value(samples, "autobots_llm_tokens_total", model="gpt-4o-mini", kind="prompt")
        == counted["prompt_tokens"]
    )
    assert value(samples, "autobots_http_requests_total", method="GET", route="/api/ready", status="200") == 8
    # A process that exits leaves its counts (counters only grow) until the machine's next start.
    assert any(f.name.startswith("counter_") for f in shared.iterdir())
