"""When the LLM fails or a run will not stop: clear answers, nothing lost, no key leaked."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from autobots.settings import default_config_path
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server

USER_KEY = "sk-user-OWNSECRET-9876543210"


def stored_bytes(server: RunningServer) -> bytes:
    data = b""
    for path in server.db_path.parent.glob("database.sqlite*"):
        data += path.read_bytes()
    return data


def test_llm_endpoint_failure_is_502_and_keeps_the_question(server, llm, user_id):
    llm.responder = lambda body: Reply(f"Incorrect API key provided: {SERVER_KEY}", status=401)
    body = {"message": wf.message(user_id, "will this fail?"), "flow_config": wf.autonomous(wf.assistant())}
    r = server.post("/api/messages", body)
    assert r.status_code == 502, r.text
    payload = r.json()
    assert payload["status"] is False and "LLM endpoint failed" in payload["message"]
    assert "HTTP 401" in payload["message"]
    assert SERVER_KEY not in r.text
    sid = payload["data"]["user_message"]["session_id"]
    msgs = server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [(m["role"], m["content"]) for m in msgs] == [("user", "will this fail?")]
    with sqlite3.connect(server.db_path) as db:
        status, error = db.execute(
            "SELECT status, error FROM runs WHERE run_id = ?", (payload["data"]["run_id"],)
        ).fetchone()
    assert status == "failed" and "401" in error
    assert SERVER_KEY.encode() not in stored_bytes(server)
    assert SERVER_KEY not in server.log()
    assert server.get("/api/health").status_code == 200


def test_unreachable_endpoint_is_502(server, llm, user_id):
    agent = wf.assistant()
    agent["config"]["llm_config"]["config_list"][0].update(
        {"base_url": "http://127.0.0.1:9/v1", "api_key": "x"}
    )
    agent["config"]["llm_config"]["timeout"] = 5
    body = {"message": wf.message(user_id, "anyone there?"), "flow_config": wf.autonomous(agent)}
    r = server.post("/api/messages", body)
    assert r.status_code == 502 and "could not connect" in r.json()["message"]


def test_api_keys_are_used_but_never_stored_returned_logged_or_published(server, llm, user_id):
    llm.queue("Secret kept. TERMINATE")
    agent = wf.assistant()
    agent["config"]["llm_config"]["config_list"][0].update({"api_key": USER_KEY, "base_url": llm.base_url})
    flow = wf.autonomous(agent)
    r = server.post("/api/messages", {"message": wf.message(user_id, "use my key"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert llm.served[-1].authorization == f"Bearer {USER_KEY}"
    sid = r.json()["metadata"]["session_id"]
    session = {"user_id": user_id, "session_id": sid}
    published = server.post("/api/sessions/publish", {"user_id": user_id, "session": session})
    responses = [
        r.text,
        published.text,
        server.get("/api/sessions", user_id=user_id).text,
        server.get("/api/messages", user_id=user_id, session_id=sid).text,
        server.get("/api/gallery").text,
    ]
    for text in responses:
        assert USER_KEY not in text and SERVER_KEY not in text
    assert USER_KEY.encode() not in stored_bytes(server)
    assert USER_KEY not in server.log()


def test_server_key_is_never_sent_to_an_endpoint_the_request_chose(server, llm, user_id):
    other = ScriptedLLM().start()
    try:
        other.queue("Hello. TERMINATE")
        agent = wf.assistant(model="some-model")
        agent["config"]["llm_config"]["config_list"][0].update({"api_key": None, "base_url": other.base_url})
        r = server.post(
            "/api/messages", {"message": wf.message(user_id, "hi"), "flow_config": wf.autonomous(agent)}
        )
        assert r.status_code == 200, r.text
        assert SERVER_KEY not in other.served[0].authorization
    finally:
        other.stop()


@pytest.fixture(scope="module")
def capped_server(
    llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("capped")
    config = json.loads(Path(default_config_path()).read_text())
    config["limits"] = {"max_llm_calls": 3, "max_run_seconds": 1.5}
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(workdir, env=env, config=config_path)
    yield srv
    srv.stop()


def endless_flow():
    return wf.autonomous(
        wf.assistant(max_consecutive_auto_reply=100),
        sender=wf.userproxy(max_consecutive_auto_reply=100, default_auto_reply="Go on."),
    )


def test_call_cap_ends_an_endless_chat_and_keeps_what_was_said(capped_server, llm, user_id):
    llm.responder = lambda body: "Still thinking..."
    r = capped_server.post(
        "/api/messages", {"message": wf.message(user_id, "loop forever"), "flow_config": endless_flow()}
    )
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 3
    meta = r.json()["metadata"]["metadata"]
    assert meta["limit_reached"]["kind"] == "max_llm_calls"
    assert "stopped early" in r.json()["message"] and "3 LLM calls" in r.json()["message"]
    assert meta["usage"]["llm_calls"] == 3
    assert sum(1 for m in meta["messages"] if m["sender"] == "primary_assistant") == 3


def test_time_cap_ends_a_slow_chat(capped_server, llm, user_id):
    llm.latency = 1.0
    llm.responder = lambda body: "Slowly..."
    r = capped_server.post(
        "/api/messages", {"message": wf.message(user_id, "be slow"), "flow_config": endless_flow()}
    )
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    assert meta["limit_reached"]["kind"] == "max_run_seconds"
    assert "time cap of 1.5 s" in r.json()["message"]
    # The first call's answer is kept; the second was still running when the cap (1.5 s) hit.
    assert [m["content"] for m in meta["messages"]][:2] == ["be slow", "Slowly..."]
    assert meta["timing"]["duration_s"] < 2.5


def test_time_cap_ends_a_run_whose_call_hangs(capped_server, llm, user_id):
    """One LLM call that never answers in time cannot hold a run past its wall-time cap."""
    llm.queue("First answer, quickly.", Reply("too late", delay=30))
    r = capped_server.post(
        "/api/messages", {"message": wf.message(user_id, "hang"), "flow_config": endless_flow()}
    )
    assert r.status_code == 200, r.text
    meta = r.json()["metadata"]["metadata"]
    assert meta["limit_reached"]["kind"] == "max_run_seconds"
    assert meta["timing"]["duration_s"] < 2.5
    assert r.json()["message"].startswith("Go on.")  # the last thing said, the proxy's turn
    assert "First answer, quickly." in [m["content"] for m in meta["messages"]]
    with sqlite3.connect(capped_server.db_path) as db:
        status = db.execute("SELECT status FROM runs WHERE run_id = ?", (meta["run_id"],)).fetchone()
    assert status == ("completed",)
    assert capped_server.get("/api/health").status_code == 200


def test_groupchat_speaker_selection_respects_the_cap(capped_server, llm, user_id):
    llm.responder = lambda body: "planner"
    flow = wf.groupchat(wf.assistant("planner"), wf.assistant("critic"), method="auto", max_round=50)
    r = capped_server.post("/api/messages", {"message": wf.message(user_id, "talk"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 3
    assert r.json()["metadata"]["metadata"]["limit_reached"]["kind"] == "max_llm_calls"
