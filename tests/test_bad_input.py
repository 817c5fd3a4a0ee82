"""Bad input gets a clear 4xx naming what is wrong, and nothing is stored half-way."""

from __future__ import annotations

import copy
import sqlite3

import pytest

from tests.support import workflows as wf


def counts(server) -> tuple[int, int, int]:
    with sqlite3.connect(server.db_path) as db:
        return tuple(
            db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sessions", "messages", "runs")
        )


def good_body(user_id):
    return {"message": wf.message(user_id, "hello"), "flow_config": wf.autonomous(wf.assistant())}


def broken(user_id, change):
    body = copy.deepcopy(good_body(user_id))
    change(body)
    return body


CASES = {
    "missing message": (lambda b: b.pop("message"), "message"),
    "missing content": (lambda b: b["message"].pop("content"), "message.content"),
    "content not a string": (lambda b: b["message"].__setitem__("content", {"x": 1}), "message.content"),
    "missing user_id": (lambda b: b["message"].pop("user_id"), "message.user_id"),
    "unknown workflow type": (
        lambda b: b["flow_config"].__setitem__("type", "swarm"),
        "'autonomous', 'sequential' or 'groupchat'",
    ),
    "unknown agent type": (
        lambda b: b["flow_config"]["agents"][1]["agent"].__setitem__("type", "robot"),
        "'assistant', 'userproxy' or 'groupchat'",
    ),
    "receiver names no agent": (
        lambda b: b["flow_config"].__setitem__("receiver", wf.assistant("ghost")),
        "receiver 'ghost' names no agent",
    ),
    "bad speaker selection": (
        lambda b: b["flow_config"]["agents"][1]["agent"]["config"].__setitem__(
            "speaker_selection_method", "vote"
        ),
        "'auto', 'round_robin' or 'random'",
    ),
    "temperature wrong type": (
        lambda b: b["flow_config"]["agents"][1]["agent"]["config"]["llm_config"].__setitem__(
            "temperature", "hot"
        ),
        "temperature",
    ),
    "agent name with spaces": (
        lambda b: b["flow_config"]["agents"][1]["agent"]["config"].__setitem__("name", "bad name"),
        "config.name",
    ),
    # The spec's own `name` (it overrides config.name) has no pattern of its own: AutoGen's rule
    # (no whitespace in the name of an agent with an LLM) was a 500 from inside its constructor.
    "agent spec name with spaces": (
        lambda b: b["flow_config"]["agents"][1]["agent"].__setitem__("name", "my helper"),
        "agent 'my helper': an agent with an llm_config may not have whitespace in its name",
    ),
    "two agents with one name": (
        lambda b: b["flow_config"]["agents"].append(copy.deepcopy(b["flow_config"]["agents"][1])),
        "used twice",
    ),
    "assistant role for the question": (lambda b: b["message"].__setitem__("role", "assistant"), "role"),
    "no reachable endpoint": (
        lambda b: b["flow_config"]["agents"][1]["agent"]["config"]["llm_config"]["config_list"][
            0
        ].__setitem__("base_url", "ftp://example"),
        "base_url",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_message_body_is_a_clear_400_and_stores_nothing(server, llm, user_id, case):
    change, expected = CASES[case]
    before = counts(server)
    r = server.post("/api/messages", broken(user_id, change))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] is False
    assert expected in body["message"], body["message"]
    assert "Traceback" not in r.text
    assert counts(server) == before
    assert llm.served == []


def test_malformed_json(server):
    before = counts(server)
    r = server.post(
        "/api/messages", data='{"message": {"user_id": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    assert counts(server) == before


def test_empty_and_non_object_bodies(server):
    r = server.post("/api/messages", data="", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = server.post("/api/messages", json=[1, 2, 3])
    assert r.status_code == 400 and r.json()["status"] is False


def test_ten_megabyte_body_is_refused(server, user_id):
    before = counts(server)
    body = good_body(user_id)
    body["message"]["content"] = "x" * (10 * 1024 * 1024)
    r = server.post("/api/messages", body)
    assert r.status_code == 413
    assert r.json() == {"status": False, "message": "request body too large", "data": None}
    assert counts(server) == before
    assert server.get("/api/health").status_code == 200


def test_missing_query_parameters(server):
    r = server.get("/api/messages", user_id="someone")
    assert r.status_code == 400 and "session_id" in r.json()["message"]
    assert server.get("/api/sessions").status_code == 400


def test_unknown_ids_are_404(server, user_id):
    assert server.get("/api/messages", user_id=user_id, session_id="nope").status_code == 404
    r = server.post("/api/cleardb", {"user_id": user_id, "session_id": "nope"})
    assert r.status_code == 404 and r.json()["status"] is False
    assert server.get("/api/gallery", gallery_id="nope").status_code == 404


def test_unknown_route_and_method_are_json(server):
    r = server.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["status"] is False
    r = server.http.delete(server.url + "/api/messages")
    assert r.status_code == 405 and r.json()["status"] is False


def test_unknown_extra_fields_are_ignored(server, llm, user_id):
    llm.queue("Fine. TERMINATE")
    body = good_body(user_id)
    body["extra"] = 1
    body["message"]["personalize"] = False
    body["flow_config"]["agents"][1]["agent"]["skills"] = []
    body["flow_config"]["agents"][1]["agent"]["config"]["unknown_knob"] = "x"
    r = server.post("/api/messages", body)
    assert r.status_code == 200, r.text


def test_sender_and_receiver_without_name_field_are_accepted(server, llm, user_id):
    llm.queue("Fine. TERMINATE")
    flow = wf.autonomous(wf.assistant())
    flow["receiver"] = {"type": "assistant", "config": flow["receiver"]["config"]}
    flow["sender"] = {"name": "userproxy", **flow["sender"]}
    r = server.post("/api/messages", {"message": wf.message(user_id, "hi"), "flow_config": flow})
    assert r.status_code == 200, r.text


def test_deeply_nested_json_is_a_400_not_a_crash(server, user_id):
    before = counts(server)
    r = server.post("/api/messages", data="[" * 200_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    body = good_body(user_id)
    body["message"]["metadata"] = "[" * 200_000
    r = server.post("/api/messages", body)
    assert r.status_code == 400 and "metadata" in r.json()["message"], r.text
    assert counts(server) == before
    assert server.get("/api/health").status_code == 200


OTHER_ENDPOINTS = {
    "session without flow_config": (
        "/api/sessions",
        lambda u: {"user_id": u, "session": {"user_id": u}},
        "flow_config",
    ),
    "session with unknown workflow type": (
        "/api/sessions",
        lambda u: {
            "user_id": u,
            "session": {"user_id": u, "flow_config": {**wf.autonomous(wf.assistant()), "type": "swarm"}},
        },
        "'autonomous', 'sequential' or 'groupchat'",
    ),
    "session user_id a number": (
        "/api/sessions",
        lambda u: {"user_id": 7, "session": {"user_id": u}},
        "user_id",
    ),
    "publish without session": ("/api/sessions/publish", lambda u: {"user_id": u}, "session"),
    "publish tags not a list": (
        "/api/sessions/publish",
        lambda u: {"user_id": u, "session": {"user_id": u, "session_id": "s"}, "tags": "maths"},
        "tags",
    ),
    "delete without msg_id": ("/api/messages/delete", lambda u: {"user_id": u}, "msg_id"),
    "delete msg_id a list": ("/api/messages/delete", lambda u: {"user_id": u, "msg_id": ["a"]}, "msg_id"),
    "cleardb without session_id": ("/api/cleardb", lambda u: {"user_id": u}, "session_id"),
    "cleardb user_id empty": ("/api/cleardb", lambda u: {"user_id": "", "session_id": "s"}, "user_id"),
}


@pytest.mark.parametrize("case", list(OTHER_ENDPOINTS))
def test_bad_bodies_on_other_endpoints_are_clear_400s(server, user_id, case):
    path, make, expected = OTHER_ENDPOINTS[case]
    with sqlite3.connect(server.db_path) as db:
        published_before = db.execute("SELECT count(*) FROM gallery").fetchone()[0]
    before = counts(server)
    r = server.post(path, make(user_id))
    assert r.status_code == 400, r.text
    assert r.json()["status"] is False and expected in r.json()["message"], r.json()["message"]
    assert counts(server) == before
    with sqlite3.connect(server.db_path) as db:
        assert db.execute("SELECT count(*) FROM gallery").fetchone()[0] == published_before


def test_a_post_without_any_body_is_fine_where_none_is_needed(server, llm, user_id):
    """`curl -X POST .../cancel` sends no Content-Length at all: only body-taking routes refuse it."""
    import http.client
    from urllib.parse import urlparse

    llm.queue("Done. TERMINATE")
    r = server.post("/api/runs", good_body(user_id))
    run_id = r.json()["data"]["run_id"]
    url = urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", f"/api/runs/{run_id}/cancel")
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    conn.close()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/api/cleardb")
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 400 and b"request body is empty" in reply.read()
    conn.close()
