"""The distributed mode: API processes and Celery workers as separate OS processes, on the
machine's PostgreSQL (a database of this module's own) and Redis (database 12, or a private
redis-server where a test restarts it), with the scripted LLM over HTTP.

What a user of a deployment checks: a run submitted to one API process streams from another and
resumes on the first; a cancel or a human's answer reaches the worker from any API process; a
worker killed mid-run leaves its runs interrupted (kept, never run again) and the other worker
unaffected; an API process killed mid-stream costs the run nothing; a message delivered twice
runs once; Redis restarting mid-run never leaves a run stuck; files, and the per-user limits,
hold across processes.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.cluster import (
    DISTRIBUTED_DB,
    PrivateRedis,
    Worker,
    cluster_env,
    start_api,
    start_worker,
)
from tests.support.redis_db import redis_url
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer
from tests.support.sse import read_events
from tests.test_postgres import fresh_database

OWN_DB = DISTRIBUTED_DB + 1


class Cluster:
    def __init__(self, root: Path, env: dict[str, str], pg_url: str) -> None:
        self.root, self.env, self.pg_url = root, env, pg_url
        self.apis: list[RunningServer] = []
        self.workers: list[Worker] = []

    def api(self, name: str, **extra: str) -> RunningServer:
        server = start_api(self.root / f"{name}-{uuid.uuid4().hex[:6]}", {**self.env, **extra})
        self.apis.append(server)
        return server

    def worker(self, name: str, concurrency: int = 8, **extra: str) -> Worker:
        worker = start_worker(
            self.root / f"{name}-{uuid.uuid4().hex[:6]}", {**self.env, **extra}, concurrency
        )
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()
        for api in self.apis:
            api.stop()

    def sql(self, query: str, **params: Any) -> list[Any]:
        engine = create_engine(self.pg_url)
        try:
            with engine.begin() as conn:
                return list(conn.execute(text(query), params))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def shared_redis() -> str:
    url = redis_url(DISTRIBUTED_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@contextlib.contextmanager
def reachable_root() -> Iterator[Path]:
    """A directory the local sandbox's uid can reach (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="autobots-cluster-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(pg_url: str, shared_redis: str, llm_server: ScriptedLLM) -> Iterator[Cluster]:
    """Two API processes and two workers, for the tests that kill nothing of theirs."""
    env = cluster_env(pg_url, shared_redis, llm_server.base_url, SERVER_KEY)
    env["AUTOBOTS_LIMITS__PER_USER__LIVE_RUNS"] = "2"
    with reachable_root() as root:
        c = Cluster(root, env, pg_url)
        try:
            c.api("api1")
            c.api("api2")
            c.worker("w1")
            c.worker("w2")
            yield c
        finally:
            c.stop()


@pytest.fixture
def own_redis() -> str:
    """Another Redis database of this module's: the module cluster's workers never see it."""
    url = redis_url(OWN_DB)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def own_cluster(own_redis: str, llm_server: ScriptedLLM) -> Iterator[Cluster]:
    """A deployment of the test's own (its own database and Redis), to kill parts of: the module
    cluster's processes would otherwise find its runs in their database and act on them."""
    with fresh_database() as own_pg, reachable_root() as root:
        c = Cluster(root, cluster_env(own_pg, own_redis, llm_server.base_url, SERVER_KEY), own_pg)
        try:
            yield c
        finally:
            c.stop()


def start(api: RunningServer, user_id: str, content: str, flow: dict[str, Any]) -> dict[str, Any]:
    r = api.post("/api/runs", {"message": wf.message(user_id, content), "flow_config": flow})
    assert r.status_code == 202, r.text
    return dict(r.json()["data"])


def wait_status(api: RunningServer, run_id: str, wanted: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = api.get(f"/api/runs/{run_id}").json()["data"]
        if data["status"] in wanted:
            return data
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {wanted}: {data}")


def served_for(llm: ScriptedLLM, marker: str) -> int:
    """How many LLM calls a run made: its question carries `marker`."""
    return sum(1 for s in llm.served if marker in json.dumps(s.body["messages"]))


def chatty(replies: int) -> dict[str, Any]:
    """An assistant and a user proxy that go on for `replies` assistant turns."""
    return wf.autonomous(
        wf.assistant(max_consecutive_auto_reply=replies),
        sender=wf.userproxy(default_auto_reply="go on", max_consecutive_auto_reply=replies),
    )


def test_submit_on_one_api_stream_on_another_and_resume_on_the_first(cluster, llm, user_id):
    api1, api2 = cluster.apis[:2]
    llm.latency = 0.3
    llm.queue("one", "two", "three", "four TERMINATE")
    run = start(api1, user_id, "count to four", chatty(6))
    first = []
    for event in read_events(f"{api2.url}/api/runs/{run['run_id']}/events"):
        first.append(event)
        if event.type == "message" and event.data["content"] == "two":
            break  # the client drops mid-run
    rest = list(read_events(f"{api1.url}/api/runs/{run['run_id']}/events", last_event_id=first[-1].id))
    combined = first + rest
    assert [e.id for e in combined] == list(range(1, len(combined) + 1))
    assert combined[0].data == {"status": "queued"} and combined[-1].data == {"status": "completed"}
    said = [e.data["content"] for e in combined if e.type == "message" and e.data["sender"] != "userproxy"]
    assert [m.replace("TERMINATE", "").strip() for m in said] == ["one", "two", "three", "four"]
    # Replayed whole from either process, the same events (the stream, or the database).
    for api in (api1, api2):
        replay = list(read_events(f"{api.url}/api/runs/{run['run_id']}/events"))
        assert [(e.id, e.type, e.data) for e in replay] == [(e.id, e.type, e.data) for e in combined]
    # Once ended, the stream expires on its own; after that the database serves the same events.
    stream = redis.Redis.from_url(cluster.env["AUTOBOTS_BROKER_URL"])
    key = f"autobots:run:{run['run_id']}:events"
    assert 0 < stream.ttl(key) <= 3600
    stream.delete(key)
    replay = list(read_events(f"{api2.url}/api/runs/{run['run_id']}/events", last_event_id=3))
    assert [(e.id, e.type, e.data) for e in replay] == [(e.id, e.type, e.data) for e in combined[3:]]
    # It ran on a worker; the run's row says which one.
    ((holder,),) = cluster.sql("SELECT worker_id FROM runs WHERE run_id = :r", r=run["run_id"])
    assert any(f":{w.process.pid}:" in holder for w in cluster.workers)


def test_the_blocking_endpoint_answers_from_a_worker(cluster, llm, user_id):
    llm.queue("Answered by a worker. TERMINATE")
    r = cluster.apis[1].post(
        "/api/messages",
        {"message": wf.message(user_id, "who answers?"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "Answered by a worker."
    meta = r.json()["data"]["metadata"]
    sid = r.json()["data"]["session_id"]
    msgs = cluster.apis[0].get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [m["content"] for m in msgs] == ["who answers?", "Answered by a worker."]
    assert meta["usage"]["total_tokens"] == sum(
        llm.counted()[k] for k in ("prompt_tokens", "completion_tokens")
    )


def test_a_failed_run_fails_the_same_way_from_a_worker(cluster, llm, user_id):
    llm.responder = lambda body: Reply("no", status=401)
    r = cluster.apis[0].post(
        "/api/messages",
        {"message": wf.message(user_id, "fail"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert r.status_code == 502 and "401" in r.json()["message"], r.text


def test_cancel_on_the_other_api_reaches_the_worker_within_two_seconds(cluster, llm, user_id):
    api1, api2 = cluster.apis[:2]
    llm.responder = lambda body: Reply("Still working...", delay=0.2 if len(body["messages"]) < 4 else 30)
    run = start(api1, user_id, "work forever", chatty(50))
    for event in read_events(f"{api1.url}/api/runs/{run['run_id']}/events"):
        if event.type == "message" and event.data["sender"] == "primary_assistant":
            break
    t0 = time.monotonic()
    r = api2.post(f"/api/runs/{run['run_id']}/cancel")
    assert r.status_code == 200
    info = wait_status(api1, run["run_id"], {"cancelled"}, timeout=5)
    assert time.monotonic() - t0 < 2.0
    events = list(read_events(f"{api2.url}/api/runs/{run['run_id']}/events"))
    assert events[-1].data == {"status": "cancelled"}
    final = [e for e in events if e.type == "final"][-1].data["message"]
    said = [m["content"] for m in final["metadata"]["messages"] if m["sender"] == "primary_assistant"]
    assert said and said[0] == "Still working..."  # what was said is kept
    assert info["ended_at"]


def test_a_queued_run_cancelled_before_any_worker_took_it(own_cluster, llm, user_id):
    api = own_cluster.api("api")  # no worker at all: the run waits in the queue
    run = start(api, user_id, "never taken", wf.autonomous(wf.assistant()))
    r = api.post(f"/api/runs/{run['run_id']}/cancel")
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    own_cluster.worker("late")  # the queued message arrives now, and finds the run cancelled
    time.sleep(2)
    assert api.get(f"/api/runs/{run['run_id']}").json()["data"]["status"] == "cancelled"
    assert served_for(llm, "never taken") == 0
    events = list(read_events(f"{api.url}/api/runs/{run['run_id']}/events"))
    assert events[-1].data == {"status": "cancelled"}


def test_human_input_answered_on_the_other_api(cluster, llm, user_id):
    api1, api2 = cluster.apis[:2]
    llm.queue("Which city?", "Paris it is. TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
    run = start(api1, user_id, "Plan a trip", flow)
    info = wait_status(api2, run["run_id"], {"awaiting_input"})
    prompt_id = info["input_prompt_id"]
    assert info["input_prompt"] and prompt_id
    r = api2.post(f"/api/runs/{run['run_id']}/input", {"text": "Paris", "prompt_id": prompt_id})
    assert r.status_code == 200, r.text
    # A second answer to the same prompt, on the other process: 409, never the next prompt's.
    again = api1.post(f"/api/runs/{run['run_id']}/input", {"text": "London", "prompt_id": prompt_id})
    assert again.status_code == 409
    nxt = wait_status(api1, run["run_id"], {"awaiting_input"})
    assert nxt["input_prompt_id"] != prompt_id
    api1.post(f"/api/runs/{run['run_id']}/input", {"text": ""})
    wait_status(api2, run["run_id"], {"completed"})
    late = api2.post(f"/api/runs/{run['run_id']}/input", {"text": "late"})
    assert late.status_code == 409
    events = list(read_events(f"{api2.url}/api/runs/{run['run_id']}/events"))
    said = [(e.data["sender"], e.data["content"]) for e in events if e.type == "message"]
    assert ("userproxy", "Paris") in said and ("userproxy", "London") not in said


def test_the_wall_time_cap_reaches_the_worker(own_cluster, llm, user_id):
    api = own_cluster.api("api", AUTOBOTS_LIMITS__MAX_RUN_SECONDS="2")
    own_cluster.worker("w", AUTOBOTS_LIMITS__MAX_RUN_SECONDS="2")
    llm.responder = lambda body: Reply("slow", delay=30)
    t0 = time.monotonic()
    run = start(api, user_id, "hang", wf.autonomous(wf.assistant()))
    info = wait_status(api, run["run_id"], {"completed", "failed", "cancelled"}, timeout=15)
    assert time.monotonic() - t0 < 6
    events = list(read_events(f"{api.url}/api/runs/{run['run_id']}/events"))
    final = [e for e in events if e.type == "final"][-1].data["message"]
    assert info["status"] == "completed" and final["metadata"]["limit_reached"]["kind"] == "max_run_seconds"


def test_a_killed_worker_s_runs_are_interrupted_and_never_run_again(own_cluster, llm, user_id):
    """With the default liveness settings: interrupted within 30 s of the kill."""
    defaults = {"AUTOBOTS_RUNS__WORKER_HEARTBEAT_S": "5", "AUTOBOTS_RUNS__DEAD_AFTER_S": "20"}
    api = own_cluster.api("api", **defaults)
    doomed = own_cluster.worker("doomed", **defaults)
    llm.responder = lambda body: Reply("step", delay=0.5)
    run = start(api, user_id, "task-A runs long", chatty(40))
    for event in read_events(f"{api.url}/api/runs/{run['run_id']}/events"):
        if event.type == "message" and event.data["sender"] == "primary_assistant":
            break
    survivor = own_cluster.worker("survivor", **defaults)
    doomed.kill()
    t_kill = time.monotonic()
    calls_at_kill = served_for(llm, "task-A")
    # Later runs succeed on the other worker, meanwhile.
    llm.responder = None
    llm.queue("B is fine. TERMINATE")
    later = api.post(
        "/api/messages",
        {"message": wf.message(user_id, "task-B"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert later.status_code == 200 and later.json()["message"] == "B is fine."
    info = wait_status(api, run["run_id"], {"interrupted"}, timeout=35)
    assert time.monotonic() - t_kill < 30
    assert info["error"] == "the worker running it stopped"
    events = list(read_events(f"{api.url}/api/runs/{run['run_id']}/events"))
    assert events[-1].data == {"status": "interrupted"}
    final = [e for e in events if e.type == "final"][-1].data["message"]
    kept = [m["content"] for m in final["metadata"]["messages"] if m["sender"] == "primary_assistant"]
    assert kept and kept[0] == "step"  # what was said is kept
    time.sleep(2)
    assert served_for(llm, "task-A") <= calls_at_kill + 1  # the call in flight at most, never re-run
    assert survivor.process.poll() is None


def test_an_api_killed_mid_stream_costs_the_run_nothing(own_cluster, llm, user_id):
    doomed, other = own_cluster.api("doomed"), own_cluster.api("other")
    own_cluster.worker("w")
    llm.latency = 0.3
    llm.queue("one", "two", "three TERMINATE")
    run = start(doomed, user_id, "count", chatty(5))
    seen = []
    for event in read_events(f"{doomed.url}/api/runs/{run['run_id']}/events"):
        seen.append(event)
        if event.type == "message":
            break
    doomed.kill()
    rest = list(read_events(f"{other.url}/api/runs/{run['run_id']}/events", last_event_id=seen[-1].id))
    combined = seen + rest
    assert [e.id for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1].data == {"status": "completed"}


def test_an_api_process_that_starts_leaves_live_workers_runs_alone(own_cluster, llm, user_id):
    api = own_cluster.api("api")
    own_cluster.worker("w")
    # The run's first call is answered only once the fresh API process is up and has looked,
    # however long a loaded machine takes to start it.
    looked = threading.Event()

    def responder(body: dict[str, Any]) -> Reply:
        if len(body["messages"]) < 4:
            looked.wait(120)
            return Reply("step")
        return Reply("done TERMINATE")

    llm.responder = responder
    run = start(api, user_id, "long enough", chatty(20))
    wait_status(api, run["run_id"], {"running"})
    fresh = own_cluster.api("fresh")  # today's one-process start would mark the run interrupted
    try:
        assert fresh.get(f"/api/runs/{run['run_id']}").json()["data"]["status"] == "running"
    finally:
        looked.set()
    assert (
        wait_status(fresh, run["run_id"], {"completed", "interrupted"}, timeout=60)["status"] == "completed"
    )


def test_a_duplicated_task_message_runs_once(own_cluster, llm, user_id, own_redis):
    api = own_cluster.api("api")
    llm.queue("Once. TERMINATE")
    run = start(api, user_id, "task-dup", wf.autonomous(wf.assistant()))
    broker = redis.Redis.from_url(own_redis)
    queue = own_cluster.env["AUTOBOTS_RUNS__QUEUE"]
    queued = broker.lrange(queue, 0, -1)
    assert len(queued) == 1
    broker.rpush(queue, queued[0])  # the same message, delivered twice
    own_cluster.worker("w1")
    own_cluster.worker("w2")
    wait_status(api, run["run_id"], {"completed"}, timeout=90)  # a loaded machine's first task is slow
    time.sleep(2)  # the second delivery has been taken by now, and dropped
    assert broker.llen(queue) == 0
    assert served_for(llm, "task-dup") == 1
    logs = "".join(w.log() for w in own_cluster.workers)
    assert len(re.findall(r"execute_run\[[^\]]+\] received", logs)) == 2
    assert "is not queued any more" in logs


def test_redis_restarted_mid_run_leaves_no_run_stuck(own_cluster, llm, user_id, tmp_path):
    private = PrivateRedis(tmp_path).start()
    try:
        env = {"AUTOBOTS_BROKER_URL": private.url}
        api = own_cluster.api("api", **env)
        own_cluster.worker("w", **env)
        llm.responder = lambda body: (
            Reply("step", delay=0.5) if len(body["messages"]) < 8 else Reply("end TERMINATE")
        )
        run = start(api, user_id, "through a Redis restart", chatty(10))
        wait_status(api, run["run_id"], {"running"})
        time.sleep(1)
        private.stop()
        time.sleep(2)
        private.start()
        info = wait_status(api, run["run_id"], {"completed", "failed", "interrupted"}, timeout=90)
        assert info["status"] == "completed"
        # Its events are whole, from the database now that the stream lost its start.
        events = list(read_events(f"{api.url}/api/runs/{run['run_id']}/events"))
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert events[-1].data == {"status": "completed"}
    finally:
        private.stop()


def test_files_written_on_a_worker_download_from_every_api(cluster, llm, user_id):
    code = "```python\nopen('report.txt', 'w').write('made on a worker')\nprint('written')\n```"
    llm.queue(code, "Wrote report.txt. TERMINATE")
    proxy = wf.userproxy(code_execution_config={"executor": "local"}, max_consecutive_auto_reply=3)
    r = cluster.apis[0].post(
        "/api/messages",
        {
            "message": wf.message(user_id, "write a report"),
            "flow_config": wf.autonomous(wf.assistant(), sender=proxy),
        },
    )
    assert r.status_code == 200, r.text
    sid = r.json()["data"]["session_id"]
    assert {"name": "report.txt", "size": 16} in r.json()["data"]["metadata"]["files"]
    for api in cluster.apis:  # each API process has its own work root: neither has the file on disk
        got = api.get(f"/api/sessions/{sid}/files/report.txt", user_id=user_id)
        assert got.status_code == 200 and got.content == b"made on a worker"
        assert api.get(f"/api/sessions/{sid}/files/other.txt", user_id=user_id).status_code == 404
        assert api.get(f"/api/sessions/{sid}/files/report.txt", user_id="mallory@x").status_code == 404
    # The session's next run, on whichever worker, finds the file in its work dir.
    llm.queue("```python\nprint(open('report.txt').read())\n```", "Read it. TERMINATE")
    again = cluster.apis[1].post(
        "/api/messages",
        {
            "message": wf.message(user_id, "read it", session_id=sid),
            "flow_config": wf.autonomous(wf.assistant(), sender=proxy),
        },
    )
    assert again.status_code == 200, again.text
    outputs = [m["content"] for m in again.json()["data"]["metadata"]["messages"]]
    assert any("made on a worker" in (o or "") for o in outputs)


def test_live_run_limit_holds_across_api_processes(cluster, llm, user_id):
    api1, api2 = cluster.apis[:2]
    llm.responder = lambda body: Reply("hold", delay=5)
    first = [start(api1, user_id, f"hold {i}", wf.autonomous(wf.assistant())) for i in range(2)]
    refused = api2.post(
        "/api/runs",
        {"message": wf.message(user_id, "one too many"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert refused.status_code == 429 and refused.headers.get("Retry-After")
    for run in first:
        api2.post(f"/api/runs/{run['run_id']}/cancel")


def test_a_worker_s_graceful_stop_lets_its_runs_finish(own_cluster, llm, user_id):
    api = own_cluster.api("api")
    worker = own_cluster.worker("w")
    llm.responder = lambda body: (
        Reply("step", delay=0.5) if len(body["messages"]) < 6 else Reply("end TERMINATE")
    )
    run = start(api, user_id, "finish me", chatty(10))
    wait_status(api, run["run_id"], {"running"})
    assert worker.stop(timeout=60) == 0
    assert api.get(f"/api/runs/{run['run_id']}").json()["data"]["status"] == "completed"


def test_a_worker_s_stop_after_its_grace_interrupts_what_is_left(own_cluster, llm, user_id):
    api = own_cluster.api("api")
    worker = own_cluster.worker("w", AUTOBOTS_RUNS__SHUTDOWN_GRACE_S="1")
    llm.responder = lambda body: Reply("step", delay=1)
    run = start(api, user_id, "too long", chatty(50))
    wait_status(api, run["run_id"], {"running"})
    t0 = time.monotonic()
    worker.stop(timeout=30)
    assert time.monotonic() - t0 < 15, worker.log()[-20000:]
    info = wait_status(api, run["run_id"], {"interrupted"}, timeout=5)
    assert info["error"] is None or "stopped" in (info["error"] or "")


def test_rabbitmq_as_the_broker(own_cluster, llm, user_id, own_redis):
    amqp = {"AUTOBOTS_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "AUTOBOTS_REDIS_URL": own_redis}
    try:
        api = own_cluster.api("api", **amqp)
        own_cluster.worker("w", **amqp)
    except RuntimeError as exc:
        pytest.fail(f"RabbitMQ on 127.0.0.1:5672 is needed for this test: {exc}")
    llm.queue("Through RabbitMQ. TERMINATE")
    r = api.post(
        "/api/messages", {"message": wf.message(user_id, "hi"), "flow_config": wf.autonomous(wf.assistant())}
    )
    assert r.status_code == 200 and r.json()["message"] == "Through RabbitMQ.", r.text


def test_serve_with_several_api_processes(own_cluster, llm, user_id):
    api = start_api(own_cluster.root / "multi", own_cluster.env, workers=2)
    own_cluster.apis.append(api)
    own_cluster.worker("w")
    llm.queue(*[f"Answer {i}. TERMINATE" for i in range(6)])
    for i in range(6):
        r = api.post(
            "/api/messages",
            {"message": wf.message(user_id, f"q{i}"), "flow_config": wf.autonomous(wf.assistant())},
        )
        assert r.status_code == 200, r.text
    assert "Booting worker" in api.log() and api.log().count("Booting worker") >= 2


def test_the_distributed_mode_refuses_what_it_cannot_run(tmp_path, pg_url):
    """SQLite, a broker that is not Redis with no Redis named, and `--workers` with no broker
    each stop the start with a message saying what to set."""
    import subprocess
    import sys

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        import os

        full = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOBOTS_", "OPENAI_"))}
        return subprocess.run(
            [sys.executable, "-m", "autobots", *args],
            cwd=tmp_path,
            env={**full, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    sqlite = run(["worker"], {"AUTOBOTS_BROKER_URL": "redis://127.0.0.1:6379/12"})
    assert sqlite.returncode != 0 and "PostgreSQL" in sqlite.stderr
    amqp = run(
        ["worker"],
        {"AUTOBOTS_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "AUTOBOTS_DATABASE_URL": pg_url},
    )
    assert amqp.returncode != 0 and "AUTOBOTS_REDIS_URL" in amqp.stderr
    no_secret = run(
        ["worker"], {"AUTOBOTS_BROKER_URL": "redis://127.0.0.1:6379/12", "AUTOBOTS_DATABASE_URL": pg_url}
    )
    assert no_secret.returncode != 0 and "AUTOBOTS_SECRET_KEY" in no_secret.stderr
    no_broker = run(["worker"], {})
    assert no_broker.returncode == 2 and "runs.broker_url" in no_broker.stderr
    many = run(["serve", "--workers", "2"], {})
    assert many.returncode == 2 and "--workers" in many.stderr


def test_an_inline_key_reaches_the_worker_sealed_and_is_kept_nowhere(cluster, llm, user_id, shared_redis):
    inline = "sk-inline-" + uuid.uuid4().hex
    agent = wf.assistant(model="some-model")
    agent["config"]["llm_config"]["config_list"][0].update({"api_key": inline, "base_url": llm.base_url})
    llm.queue("Keyed. TERMINATE")
    r = cluster.apis[0].post(
        "/api/messages", {"message": wf.message(user_id, "with my key"), "flow_config": wf.autonomous(agent)}
    )
    assert r.status_code == 200, r.text
    assert llm.served[-1].authorization == f"Bearer {inline}"  # the worker called with it
    stored = redis.Redis.from_url(shared_redis)
    for key in stored.scan_iter("*"):
        kind = stored.type(key)
        values = {
            b"stream": lambda k: repr(stored.xrange(k)),
            b"list": lambda k: repr(stored.lrange(k, 0, -1)),
            b"string": lambda k: repr(stored.get(k)),
        }.get(kind, lambda k: "")(key)
        assert inline not in values, key
    stored_columns = (
        ("runs", "flow"),
        ("sessions", "flow_config"),
        ("messages", "content"),
        ("messages", "metadata"),
        ("run_events", "data"),
    )
    for table, column in stored_columns:
        rows = cluster.sql(f"SELECT CAST({column} AS TEXT) FROM {table}")
        assert not any(inline in (row[0] or "") for row in rows), table
    assert all(inline not in a.log() for a in cluster.apis) and all(
        inline not in w.log() for w in cluster.workers
    )


def test_a_run_no_worker_takes_fails_saying_so(own_cluster, llm, user_id):
    api = own_cluster.api("api", AUTOBOTS_RUNS__QUEUED_TIMEOUT_S="2")  # and no worker at all
    t0 = time.monotonic()
    r = api.post(
        "/api/messages",
        {"message": wf.message(user_id, "anyone?"), "flow_config": wf.autonomous(wf.assistant())},
    )
    assert r.status_code == 503 and "no worker took the run" in r.json()["message"], r.text
    assert time.monotonic() - t0 < 15
    run_id = r.json()["data"]["run_id"]
    assert api.get(f"/api/runs/{run_id}").json()["data"]["status"] == "failed"
    assert llm.served == []
