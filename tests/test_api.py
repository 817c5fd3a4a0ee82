"""Every endpoint, as the old clients call it: envelope {status, message, data}."""

from __future__ import annotations

import uuid

from tests.support import workflows as wf


def new_session(server, user_id, flow=None, session_id=None):
    session = {"user_id": user_id, "flow_config": flow or wf.autonomous(wf.assistant())}
    if session_id:
        session["session_id"] = session_id
    return server.post("/api/sessions", {"user_id": user_id, "session": session})


def chat(server, llm, user_id, session_id, text, reply):
    llm.queue(reply)
    body = {"message": wf.message(user_id, text, session_id), "flow_config": wf.autonomous(wf.assistant())}
    r = server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_and_openapi(server):
    r = server.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] is True and r.json()["data"]["database"] == "ok"
    spec = server.get("/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/messages",
        "/api/sessions",
        "/api/sessions/publish",
        "/api/gallery",
        "/api/messages/delete",
        "/api/cleardb",
    ):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert "AgentWorkFlowConfig" in schemas and "Message" in schemas
    assert "api_key" not in str(schemas.get("Message"))


def test_sessions_create_and_list(server, user_id):
    r = new_session(server, user_id, session_id="s-1-" + user_id)
    assert r.status_code == 200 and r.json()["status"] is True
    r2 = new_session(server, user_id)
    sessions = r2.json()["data"]
    assert len(sessions) == 2
    assert sessions[1]["session_id"] == "s-1-" + user_id  # newest first
    assert sessions[0]["flow_config"]["type"] == "autonomous"
    listed = server.get("/api/sessions", user_id=user_id).json()["data"]
    assert [s["session_id"] for s in listed] == [s["session_id"] for s in sessions]
    assert server.get("/api/sessions", user_id="nobody-" + user_id).json()["data"] == []


def test_session_ids_are_per_user(server, llm, user_id):
    """Creating a session tells nobody which ids other users have: the same id is another
    user's own, separate session."""
    sid = "shared-name-" + uuid.uuid4().hex[:6]
    other = "intruder-" + user_id
    assert new_session(server, user_id, session_id=sid).status_code == 200
    chat(server, llm, user_id, sid, "mine", "only mine TERMINATE")
    r = new_session(server, other, session_id=sid)
    assert r.status_code == 200 and [s["session_id"] for s in r.json()["data"]] == [sid]
    assert server.get("/api/messages", user_id=other, session_id=sid).json()["data"] == []
    chat(server, llm, other, sid, "theirs", "only theirs TERMINATE")
    mine = server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    theirs = server.get("/api/messages", user_id=other, session_id=sid).json()["data"]
    assert [m["content"] for m in mine] == ["mine", "only mine"]
    assert [m["content"] for m in theirs] == ["theirs", "only theirs"]
    assert server.post("/api/cleardb", {"user_id": other, "session_id": sid}).status_code == 200
    assert len(server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]) == 2


def test_messages_are_saved_listed_and_deleted(server, llm, user_id):
    sid = new_session(server, user_id).json()["data"][0]["session_id"]
    chat(server, llm, user_id, sid, "first question", "first answer TERMINATE")
    chat(server, llm, user_id, sid, "second question", "second answer TERMINATE")
    msgs = server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("assistant", "second answer"),
    ]
    assert msgs[1]["metadata"]["usage"]["llm_calls"] == 1
    r = server.post(
        "/api/messages/delete", {"user_id": user_id, "msg_id": msgs[0]["msg_id"], "session_id": sid}
    )
    assert r.status_code == 200
    assert [m["content"] for m in r.json()["data"]] == ["first answer", "second question", "second answer"]
    again = server.post(
        "/api/messages/delete", {"user_id": user_id, "msg_id": msgs[0]["msg_id"], "session_id": sid}
    )
    assert again.status_code == 404
    other = server.post("/api/messages/delete", {"user_id": "x" + user_id, "msg_id": msgs[1]["msg_id"]})
    assert other.status_code == 404
    assert len(server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]) == 3


def test_message_to_new_session_creates_it(server, llm, user_id):
    llm.queue("Hello. TERMINATE")
    body = {"message": wf.message(user_id, "hi"), "flow_config": wf.autonomous(wf.assistant())}
    r = server.post("/api/messages", body)
    sid = r.json()["metadata"]["session_id"]
    assert [s["session_id"] for s in server.get("/api/sessions", user_id=user_id).json()["data"]] == [sid]


def test_publish_and_gallery(server, llm, user_id):
    sid = new_session(server, user_id).json()["data"][0]["session_id"]
    chat(server, llm, user_id, sid, "what is 2+2?", "4 TERMINATE")
    session = {"user_id": user_id, "session_id": sid, "flow_config": {}}
    tag = "maths-" + user_id
    r = server.post("/api/sessions/publish", {"user_id": user_id, "session": session, "tags": [tag, "demo"]})
    assert r.status_code == 200, r.text
    item = r.json()["data"]
    assert item["session"]["session_id"] == sid
    assert [m["content"] for m in item["messages"]] == ["what is 2+2?", "4"]
    assert sorted(item["tags"]) == sorted([tag, "demo"])

    one = server.get("/api/gallery", gallery_id=item["id"]).json()["data"]
    assert one["id"] == item["id"] and one["messages"] == item["messages"]
    tagged = server.get("/api/gallery", tag=tag).json()["data"]
    assert [i["id"] for i in tagged] == [item["id"]]
    r2 = server.post("/api/sessions/publish", {"user_id": user_id, "session": session, "tags": [tag]})
    newest = server.get("/api/gallery", tag=tag).json()["data"]
    assert [i["id"] for i in newest] == [r2.json()["data"]["id"], item["id"]]
    assert item["id"] in [i["id"] for i in server.get("/api/gallery").json()["data"]]
    assert server.get("/api/gallery", gallery_id=str(uuid.uuid4())).status_code == 404


def test_publishing_someone_elses_session_is_refused(server, llm, user_id):
    sid = new_session(server, user_id).json()["data"][0]["session_id"]
    thief = "thief-" + user_id
    r = server.post(
        "/api/sessions/publish", {"user_id": thief, "session": {"user_id": thief, "session_id": sid}}
    )
    assert r.status_code == 404


def test_cleardb_deletes_the_session_but_keeps_gallery_items(server, llm, user_id):
    sid = new_session(server, user_id).json()["data"][0]["session_id"]
    chat(server, llm, user_id, sid, "keep me published", "ok TERMINATE")
    session = {"user_id": user_id, "session_id": sid}
    item = server.post("/api/sessions/publish", {"user_id": user_id, "session": session}).json()["data"]
    r = server.post("/api/cleardb", {"user_id": user_id, "session_id": sid})
    assert r.status_code == 200 and r.json()["data"] == {"sessions": []}  # as the original answered
    assert server.get("/api/messages", user_id=user_id, session_id=sid).status_code == 404
    kept = server.get("/api/gallery", gallery_id=item["id"]).json()["data"]
    assert [m["content"] for m in kept["messages"]] == ["keep me published", "ok"]
    assert server.post("/api/cleardb", {"user_id": user_id, "session_id": sid}).status_code == 404
