"""Per-user limits (`limits.per_user.*`): requests per minute, live runs at once, and a daily
budget that refuses a new run and stops a running one, keeping what was said. Set through
`AUTOBOTS_*` environment variables, as an operator would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import create_key
from tests.support.redis_db import RATE_LIMIT_DB, redis_url
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def limited(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_LIMITS__PER_USER__REQUESTS_PER_MINUTE": "30",
        "AUTOBOTS_LIMITS__PER_USER__LIVE_RUNS": "1",
        "AUTOBOTS_LIMITS__PER_USER__DAILY_BUDGET_USD": "0.05",
    }
    srv = start_server(tmp_path_factory.mktemp("limited"), env=env)
    yield srv
    srv.stop()


def priced_flow(endless: bool = False) -> dict:
    """gpt-4o-mini at $0.50 per 1k tokens either way: a call of some 30 tokens costs ~$0.015, so
    the $0.05 budget is crossed after a few calls."""
    assistant = wf.assistant(max_consecutive_auto_reply=50 if endless else 5)
    assistant["config"]["llm_config"]["config_list"][0]["price"] = [0.5, 0.5]
    sender = wf.userproxy(max_consecutive_auto_reply=50 if endless else 5, default_auto_reply="Go on.")
    return wf.autonomous(assistant, sender=sender)


def test_requests_per_minute_are_counted_per_user(limited: RunningServer, user_id: str) -> None:
    codes = [limited.get("/api/sessions", user_id=user_id).status_code for _ in range(31)]
    assert codes[:30] == [200] * 30 and codes[30] == 429
    r = limited.get("/api/sessions", user_id=user_id)
    assert r.status_code == 429 and "requests_per_minute" in r.json()["message"]
    assert int(r.headers["Retry-After"]) >= 1
    # Another user, and the liveness check, are not held back by this one.
    assert limited.get("/api/sessions", user_id="other-" + user_id).status_code == 200
    assert limited.get("/api/health").status_code == 200


def test_live_runs_at_once(limited: RunningServer, llm: ScriptedLLM, user_id: str) -> None:
    llm.queue(Reply("slow TERMINATE", delay=2.0))
    body = {"message": wf.message(user_id, "first"), "flow_config": wf.autonomous(wf.assistant())}
    first = limited.post("/api/runs", body)
    assert first.status_code == 202, first.text
    second = limited.post("/api/runs", {**body, "message": wf.message(user_id, "second")})
    assert second.status_code == 429 and "live_runs" in second.json()["message"]
    assert int(second.headers["Retry-After"]) >= 1
    # Nothing of the refused run was stored.
    sid = first.json()["data"]["session_id"]
    stored = limited.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [m["content"] for m in stored] == ["first"]
    limited.post(f"/api/runs/{first.json()['data']['run_id']}/cancel")


def test_daily_budget_stops_a_run_midway_and_refuses_the_next(
    limited: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    llm.responder = lambda body: "Still thinking about it, let me go on with more detail..."
    r = limited.post(
        "/api/messages", {"message": wf.message(user_id, "go on"), "flow_config": priced_flow(True)}
    )
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    assert meta["limit_reached"]["kind"] == "daily_budget_usd"
    assert "daily budget" in r.json()["message"]
    calls = sum(1 for s in llm.served if "go on" in json.dumps(s.body))
    assert 2 <= calls < 50  # stopped by the budget, not by the reply cap
    assert meta["usage"]["llm_calls"] == calls
    assert any(m["content"].startswith("Still thinking") for m in meta["messages"])
    me = limited.get("/api/me", user_id=user_id).json()["data"]
    assert float(me["today"]["cost_usd"]) >= 0.05 and me["limits"]["daily_budget_usd"] == 0.05
    refused = limited.post(
        "/api/messages", {"message": wf.message(user_id, "more"), "flow_config": priced_flow()}
    )
    assert refused.status_code == 429 and "daily_budget_usd" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) > 0
    # Someone else's budget is their own.
    llm.responder = None
    llm.queue("fine TERMINATE")
    other = limited.post(
        "/api/messages", {"message": wf.message("rich-" + user_id, "hi"), "flow_config": priced_flow()}
    )
    assert other.status_code == 200, other.text


def test_request_counts_are_shared_by_processes_through_redis(
    llm_server: ScriptedLLM, tmp_path, user_id: str
) -> None:
    """Two API processes with `limits.per_user.storage_url` on the same Redis count one budget of
    requests per user between them."""
    url = redis_url(RATE_LIMIT_DB)
    env = {
        "AUTOBOTS_LIMITS__PER_USER__REQUESTS_PER_MINUTE": "10",
        "AUTOBOTS_LIMITS__PER_USER__STORAGE_URL": url,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_server(tmp_path / "a", env=env)
    second = start_server(tmp_path / "b", env=env)
    try:
        codes = [
            (first if i % 2 else second).get("/api/sessions", user_id=user_id).status_code for i in range(10)
        ]
        assert codes == [200] * 10
        assert first.get("/api/sessions", user_id=user_id).status_code == 429
        assert second.get("/api/sessions", user_id=user_id).status_code == 429
    finally:
        first.stop()
        second.stop()


def test_deleting_a_session_gives_no_budget_back(
    limited: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """The attack the audit found: spend the budget, delete the chat, spend again."""
    llm.responder = lambda body: "Still thinking about it, let me go on with more detail..."
    r = limited.post(
        "/api/messages", {"message": wf.message(user_id, "spend"), "flow_config": priced_flow(True)}
    )
    assert r.json()["metadata"]["metadata"]["limit_reached"]["kind"] == "daily_budget_usd"
    spent = limited.get("/api/me", user_id=user_id).json()["data"]["today"]
    sid = r.json()["metadata"]["session_id"]
    assert limited.post("/api/cleardb", {"user_id": user_id, "session_id": sid}).status_code == 200
    after = limited.get("/api/me", user_id=user_id).json()["data"]["today"]
    assert after["cost_usd"] == spent["cost_usd"] and after["llm_calls"] == spent["llm_calls"]
    assert after["runs"] == spent["runs"] and after["total_tokens"] == spent["total_tokens"]
    again = limited.post(
        "/api/messages", {"message": wf.message(user_id, "more"), "flow_config": priced_flow()}
    )
    assert again.status_code == 429 and "daily_budget_usd" in again.json()["message"]


def test_simultaneous_starts_cannot_slip_past_the_live_run_cap(
    limited: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    llm.responder = lambda body: Reply("slow TERMINATE", delay=2.0)
    body = {"message": wf.message(user_id, "at once"), "flow_config": wf.autonomous(wf.assistant())}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: limited.post("/api/runs", body).status_code, range(8)))
    assert sorted(codes) == [202] + [429] * 7, codes


@pytest.fixture(scope="module")
def guarded(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    env = {"AUTOBOTS_AUTH__MODE": "token", "AUTOBOTS_LIMITS__PER_USER__REQUESTS_PER_MINUTE": "5"}
    srv = start_server(tmp_path_factory.mktemp("guarded"), env=env)
    yield srv
    srv.stop()


def test_a_signed_in_users_requests_are_counted_per_user(guarded: RunningServer, tmp_path) -> None:
    key = create_key(guarded.db_path.parent, "counted@example.com")
    other = create_key(guarded.db_path.parent, "other@example.com")
    codes = [
        requests.get(
            guarded.url + "/api/sessions", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code
        for _ in range(6)
    ]
    assert codes == [200] * 5 + [429]
    ok = requests.get(guarded.url + "/api/sessions", headers={"Authorization": f"Bearer {other}"}, timeout=30)
    assert ok.status_code == 200


def test_failed_sign_ins_are_rate_limited_too(guarded: RunningServer) -> None:
    codes = [
        requests.get(
            guarded.url + "/api/sessions", headers={"Authorization": "Bearer nope"}, timeout=30
        ).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]


def test_a_malformed_origin_with_a_cookie_is_a_403_never_a_500(guarded: RunningServer) -> None:
    for path in ("/api/sessions", "/api/gallery", "/api/runs/x/events", "/"):
        r = requests.get(
            guarded.url + path,
            cookies={"autobots_session": "abc"},
            headers={"Origin": "http://[::1"},
            timeout=30,
        )
        assert r.status_code in (200, 401, 403, 429), (path, r.status_code)
    assert "Traceback" not in guarded.log()
