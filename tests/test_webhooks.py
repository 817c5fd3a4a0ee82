"""Webhooks on the real server, to a real receiver (http.server on 127.0.0.1 in a thread): a run's
end is POSTed as a JSON summary signed with the key `python -m autobots webhooks secret` prints;
a receiver that fails twice gets three attempts, each stored and shown on the run; a host that is
not allowed is a 400 at submit; a name that resolves to loopback is refused at delivery; a
redirect is never followed; a cancelled run, a schedule's run and a run whose server was killed
(told of by the next server, which marks it interrupted) are told of too; and, on a real SQLite
file, each attempt is leased by one sender and a retry waits its backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import cli
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server
from tests.support.webhook_receiver import Receiver

FLOW = wf.autonomous(wf.assistant())


@dataclass
class Hooked:
    server: RunningServer
    workdir: Path


@pytest.fixture(scope="module")
def hooked(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hooked]:
    workdir = tmp_path_factory.mktemp("webhooks")
    env = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_SCHEDULES__TICK_S": "0.1",
        "AUTOBOTS_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1", "localhost"]',
        "AUTOBOTS_WEBHOOKS__BACKOFF_S": "0.3",
        "AUTOBOTS_WEBHOOKS__TIMEOUT_S": "3",
    }
    srv = start_server(workdir, env=env)
    yield Hooked(srv, workdir)
    srv.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def secret(hooked: Hooked) -> str:
    """The key, as an operator reads it: derived from the server's secret in its data dir."""
    out = cli(hooked.workdir, "webhooks", "secret")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def start(srv: RunningServer, user: str, text: str, url: str | None, **body: Any) -> Any:
    payload = {"message": wf.message(user, text), "flow_config": FLOW, **body}
    if url is not None:
        payload["webhook"] = {"url": url}
    return srv.post("/api/runs", payload)


def delivery(srv: RunningServer, run_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = srv.get(f"/api/runs/{run_id}").json()["data"]
        if run.get("webhook") and run["webhook"]["state"] == state:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id}'s webhook never got {state}: {run}")


def test_a_finished_run_is_posted_signed(
    hooked: Hooked, receiver: Receiver, llm: ScriptedLLM, user_id: str
) -> None:
    llm.queue("The answer is 391. TERMINATE")
    r = start(hooked.server, user_id, "what is 17*23?", receiver.url())
    assert r.status_code == 202, r.text
    run_id = r.json()["data"]["run_id"]
    (got,) = receiver.wait(1)
    key = secret(hooked)
    expected = "sha256=" + hmac.new(key.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Autobots-Signature"] == expected
    assert abs(int(got.headers["X-Autobots-Timestamp"]) - time.time()) < 30
    summary = json.loads(got.body)
    assert summary["run_id"] == run_id and summary["status"] == "completed"
    assert summary["answer"] == "The answer is 391."
    assert summary["delivery_id"] == got.headers["X-Autobots-Delivery"]
    assert summary["session_id"] == r.json()["data"]["session_id"]
    assert summary["usage"]["total_tokens"] == sum(
        llm.counted()[k] for k in ("prompt_tokens", "completion_tokens")
    )
    assert summary["timing"]["duration_s"] >= 0 and summary["workflow"]["name"] == FLOW["name"]
    run = delivery(hooked.server, run_id, "delivered")
    (attempt,) = run["webhook"]["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["duration_s"] >= 0
    # The key is nowhere but where the operator asked for it.
    assert key not in json.dumps(run) and key not in hooked.server.log()
    assert len(key) >= 32


def outcome(metrics: str, name: str) -> float:
    """`autobots_webhook_deliveries_total{outcome=name}` in a /metrics page (0 before the first)."""
    for line in metrics.splitlines():
        if line.startswith("autobots_webhook_deliveries_total{") and f'outcome="{name}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_receiver_that_fails_twice_gets_three_attempts(
    hooked: Hooked, receiver: Receiver, user_id: str
) -> None:
    receiver.answers = [(500, {}), (503, {})]
    page = hooked.server.get("/metrics").text
    before = {k: outcome(page, k) for k in ("retried", "delivered")}
    run_id = start(hooked.server, user_id, "retry me", receiver.url()).json()["data"]["run_id"]
    got = receiver.wait(3)
    assert len({g.headers["X-Autobots-Delivery"] for g in got}) == 1  # one delivery, three tries
    assert got[1].at - got[0].at >= 0.3 and got[2].at - got[1].at >= 0.6  # the backoff doubles
    assert got[0].body == got[2].body
    run = delivery(hooked.server, run_id, "delivered")
    codes = [a["status_code"] for a in run["webhook"]["attempts"]]
    assert codes == [500, 503, 200]
    assert [a["error"] is None for a in run["webhook"]["attempts"]] == [False, False, True]
    time.sleep(1)
    assert len(receiver.received) == 3
    # Every attempt is counted by outcome (`GET /metrics`, from loopback).
    counted = hooked.server.get("/metrics").text
    assert before["retried"] + 2 == outcome(counted, "retried")
    assert before["delivered"] + 1 == outcome(counted, "delivered")


def test_a_host_not_allowed_is_refused_at_submit(hooked: Hooked, user_id: str) -> None:
    for url in (
        "http://example.com/hook",
        "http://10.0.0.1/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/hook",
        "http://127.0.0.1:notaport/hook",
    ):
        r = start(hooked.server, user_id, "never run", url)
        assert r.status_code == 400, (url, r.text)
        assert "webhook.url" in r.json()["message"], r.text
    assert hooked.server.get("/api/runs", user_id=user_id).json()["data"] == []  # nothing stored


def test_a_redirect_is_not_followed(hooked: Hooked, receiver: Receiver, user_id: str) -> None:
    moved = (302, {"Location": receiver.url("/elsewhere")})
    receiver.answers = [moved, moved, moved]
    run_id = start(hooked.server, user_id, "redirect me", receiver.url()).json()["data"]["run_id"]
    run = delivery(hooked.server, run_id, "failed")
    attempts = run["webhook"]["attempts"]
    assert [a["status_code"] for a in attempts] == [302, 302, 302]
    assert all("redirect" in a["error"] for a in attempts)
    assert [g.path for g in receiver.received] == ["/hook"] * 3


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(
    hooked: Hooked, receiver: Receiver, user_id: str
) -> None:
    # `localhost` is allowed by name, and resolves to 127.0.0.1: only an allowed IP literal may
    # be a local address, so the delivery refuses to connect.
    r = start(hooked.server, user_id, "to localhost", receiver.url(host="localhost"))
    assert r.status_code == 202, r.text
    run = delivery(hooked.server, r.json()["data"]["run_id"], "failed")
    attempts = run["webhook"]["attempts"]
    assert len(attempts) == 3 and all(a["status_code"] is None for a in attempts)
    assert "127.0.0.1" in attempts[0]["error"] and "private or local" in attempts[0]["error"]
    assert receiver.received == []


def test_a_cancelled_run_is_told_of(
    hooked: Hooked, receiver: Receiver, llm: ScriptedLLM, user_id: str
) -> None:
    llm.queue(Reply("too late", delay=10))
    run_id = start(hooked.server, user_id, "cancel me", receiver.url()).json()["data"]["run_id"]
    time.sleep(0.5)
    assert hooked.server.post(f"/api/runs/{run_id}/cancel").status_code == 200
    (got,) = receiver.wait(1)
    assert json.loads(got.body)["status"] == "cancelled"


def test_a_schedule_s_runs_are_told_of(hooked: Hooked, receiver: Receiver, llm: ScriptedLLM) -> None:
    user = f"sched-{uuid.uuid4().hex[:6]}@example.com"
    srv = hooked.server
    team = dict(FLOW, name="hooked schedule")
    wid = srv.post("/api/workflows", {"user_id": user, "workflow": team}).json()["data"]["id"]
    bad = srv.post(
        "/api/schedules",
        {
            "user_id": user,
            "workflow_id": wid,
            "message": "m",
            "every_s": 10,
            "webhook": {"url": "http://example.com/"},
        },
    )
    assert bad.status_code == 400 and "webhook.url" in bad.json()["message"]
    llm.queue("Scheduled. TERMINATE")
    r = srv.post(
        "/api/schedules",
        {
            "user_id": user,
            "workflow_id": wid,
            "message": "hooked",
            "every_s": 10,
            "webhook": {"url": receiver.url()},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["webhook"] == {"url": receiver.url()}
    (got,) = receiver.wait(1, timeout=25)
    summary = json.loads(got.body)
    schedule = srv.get(f"/api/schedules/{r.json()['data']['id']}", user_id=user).json()["data"]
    assert summary["run_id"] == schedule["last_run_id"] and summary["status"] == "completed"
    assert summary["session_id"] == schedule["session_id"] and summary["workflow"]["id"] == wid
    assert summary["answer"] == "Scheduled."


def test_a_run_whose_server_died_is_told_of_by_the_next_one(
    llm_server: ScriptedLLM, llm: ScriptedLLM, receiver: Receiver, tmp_path: Path, user_id: str
) -> None:
    """No process ends the run: its server is killed mid-call. The next server's start marks it
    interrupted, and that server's ticker sends the delivery the first one stored with the run."""
    env = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_SCHEDULES__TICK_S": "0.1",
        "AUTOBOTS_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
    }
    llm.queue(Reply("never said", delay=60))
    first = start_server(tmp_path, env=env)
    try:
        run_id = start(first, user_id, "die mid-run", receiver.url()).json()["data"]["run_id"]
        deadline = time.monotonic() + 20
        while not llm.max_in_flight:  # the call is in flight
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.kill()  # no goodbye: nothing of it ends the run or sends anything
    assert receiver.received == []
    second = start_server(tmp_path, env=env)
    try:
        (got,) = receiver.wait(1)
        summary = json.loads(got.body)
        assert summary["run_id"] == run_id and summary["status"] == "interrupted"
        run = delivery(second, run_id, "delivered")
        assert [a["status_code"] for a in run["webhook"]["attempts"]] == [200]
    finally:
        second.stop()


def test_each_attempt_is_leased_once_and_waits_its_backoff(tmp_path: Path) -> None:
    """The lease on a real SQLite file: one holder per attempt, and an id read before another
    sender's failed attempt (several senders list what is deliverable, then lease one by one)
    is not tried again before that attempt's backoff has passed."""
    from datetime import UTC, datetime, timedelta

    from autobots.schemas.chat import Message, Session
    from autobots.schemas.workflow import AgentWorkFlowConfig
    from autobots.storage.database import create_db_engine, make_session_factory, migrate
    from autobots.storage.repository import Repository
    from autobots.storage.webhooks import PENDING, WebhookRepository

    engine = create_db_engine(f"sqlite:///{tmp_path / 'hooks.sqlite'}")
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    hooks = WebhookRepository.alongside(repo)
    session = Session(user_id="u@example.com", flow_config=AgentWorkFlowConfig.model_validate(FLOW))
    message = Message(user_id="u@example.com", session_id=session.session_id, content="hi")
    repo.start_run("run-1", message, new_session=session, status="running", webhook="http://127.0.0.1/h")
    now = datetime.now(UTC)
    assert hooks.deliverable(now) == []  # the run has not ended
    assert repo.finish_run("run-1", "completed", usage={})
    (delivery_id,) = listed = hooks.deliverable(now)

    first = hooks.lease(delivery_id, "sender-a", now, now + timedelta(seconds=60))
    assert first is not None and first.attempts == []
    assert hooks.lease(delivery_id, "sender-b", now, now + timedelta(seconds=60)) is None  # held
    attempt = {"at": now.isoformat(), "status_code": 500, "error": "the receiver answered 500"}
    assert not hooks.record(delivery_id, "sender-b", attempt, PENDING, None)  # not its lease
    assert hooks.record(delivery_id, "sender-a", attempt, PENDING, now + timedelta(seconds=10))

    # sender-b still holds the list it read before: the backoff holds all the same.
    later = now + timedelta(seconds=1)
    assert hooks.lease(listed[0], "sender-b", later, later + timedelta(seconds=60)) is None
    assert hooks.deliverable(later) == []
    due = now + timedelta(seconds=10, milliseconds=1)
    second = hooks.lease(delivery_id, "sender-b", due, due + timedelta(seconds=60))
    assert second is not None and len(second.attempts) == 1
    engine.dispose()
