"""Every list is bounded: `limit` (default 50, at most 500), an opaque `cursor`, and `next_cursor`
beside `data` in the envelope. And the gallery is public: it names a publisher, never an email,
holds no key or credential reference, and a publisher can take an item down."""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import workflows as wf
from tests.support.server import RunningServer


def new_session(server: RunningServer, user_id: str, session_id: str | None = None) -> Any:
    session: dict[str, Any] = {"user_id": user_id, "flow_config": wf.autonomous(wf.assistant())}
    if session_id:
        session["session_id"] = session_id
    r = server.post("/api/sessions", {"user_id": user_id, "session": session})
    assert r.status_code == 200, r.text
    return r.json()


def chat(server: RunningServer, user_id: str, session_id: str, text: str) -> None:
    body = {"message": wf.message(user_id, text, session_id), "flow_config": wf.autonomous(wf.assistant())}
    r = server.post("/api/messages", body)
    assert r.status_code == 200, r.text


def walk(server: RunningServer, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor; returns the pages' envelopes."""
    pages = []
    while True:
        r = server.get(path, **params)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        if pages[-1]["next_cursor"] is None:
            return pages
        params["cursor"] = pages[-1]["next_cursor"]


def test_sessions_page_newest_first_and_old_clients_get_the_first_page(server, user_id):
    ids = [f"s{i:02d}" for i in range(55)]
    for sid in ids:
        created = new_session(server, user_id, sid)
    assert len(created["data"]) == 50 and created["next_cursor"]  # POST answers with the first page
    first = server.get("/api/sessions", user_id=user_id).json()
    assert [s["session_id"] for s in first["data"]] == ids[::-1][:50]
    assert first["next_cursor"] and set(first) == {"status", "message", "data", "next_cursor"}

    pages = walk(server, "/api/sessions", user_id=user_id, limit=20)
    assert [len(p["data"]) for p in pages] == [20, 20, 15]
    assert [s["session_id"] for p in pages for s in p["data"]] == ids[::-1]

    # A cursor stays right while sessions are added: the next page is what it was.
    page1 = server.get("/api/sessions", user_id=user_id, limit=10).json()
    new_session(server, user_id, "added-meanwhile")
    page2 = server.get("/api/sessions", user_id=user_id, limit=10, cursor=page1["next_cursor"]).json()
    assert [s["session_id"] for s in page2["data"]] == ids[::-1][10:20]

    cleared = server.post("/api/cleardb", {"user_id": user_id, "session_id": "s00"}).json()
    assert len(cleared["data"]["sessions"]) == 50 and cleared["next_cursor"]


def test_messages_first_page_is_the_newest_in_order_and_cursors_lead_back(server, llm, user_id):
    llm.responder = lambda body: f"answer to {body['messages'][-1]['content'].split()[-1]} TERMINATE"
    sid = "long-" + uuid.uuid4().hex[:6]
    for i in range(13):
        chat(server, user_id, sid, f"question {i}")
    everything = [
        m["content"]
        for p in reversed(walk(server, "/api/messages", user_id=user_id, session_id=sid, limit=500))
        for m in p["data"]
    ]
    assert len(everything) == 26 and everything[0] == "question 0" and everything[-1].startswith("answer to")

    first = server.get("/api/messages", user_id=user_id, session_id=sid, limit=5).json()
    assert [m["content"] for m in first["data"]] == everything[-5:]  # the newest five, oldest first
    pages = walk(server, "/api/messages", user_id=user_id, session_id=sid, limit=5)
    assert [len(p["data"]) for p in pages] == [5, 5, 5, 5, 5, 1]
    # Put each page before the ones already read: the whole conversation, in order.
    assert [m["content"] for p in reversed(pages) for m in p["data"]] == everything

    chat(server, user_id, sid, "question later")  # new messages do not shift an older page
    again = server.get("/api/messages", user_id=user_id, session_id=sid, limit=5, cursor=first["next_cursor"])
    assert [m["content"] for m in again.json()["data"]] == everything[-10:-5]

    left = server.post(
        "/api/messages/delete", {"user_id": user_id, "msg_id": first["data"][0]["msg_id"], "session_id": sid}
    ).json()
    assert len(left["data"]) == 27 and left["next_cursor"] is None


BAD = {
    "limit 0": {"limit": 0},
    "limit 501": {"limit": 501},
    "limit not a number": {"limit": "ten"},
    "cursor not base64 JSON": {"cursor": "not-a-cursor"},
    "cursor of another list": {"cursor": base64.urlsafe_b64encode(b'["gallery","x",1]').decode().rstrip("=")},
    "cursor key out of range": {
        "cursor": base64.urlsafe_b64encode(b'["sessions",99999999999999999999999]').decode()
    },
    "cursor key a bool": {"cursor": base64.urlsafe_b64encode(b'["sessions",true]').decode()},
    "cursor empty": {"cursor": ""},
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_limit_or_cursor_is_a_400(server, user_id, case):
    new_session(server, user_id)
    for path, extra in (
        ("/api/sessions", {"user_id": user_id}),
        ("/api/gallery", {}),
        ("/api/messages", {"user_id": user_id, "session_id": "any"}),
    ):
        r = server.get(path, **extra, **BAD[case])
        assert r.status_code == 400, (path, r.text)
        body = r.json()
        assert body["status"] is False and ("limit" in body["message"] or "cursor" in body["message"])


def test_a_gallery_cursor_from_a_forged_timestamp_is_a_400(server):
    forged = base64.urlsafe_b64encode(json.dumps(["gallery", "yesterday", 1]).encode()).decode()
    assert server.get("/api/gallery", cursor=forged).status_code == 400


def publish(server: RunningServer, user_id: str, session_id: str, tags: list[str]) -> dict[str, Any]:
    r = server.post(
        "/api/sessions/publish",
        {"user_id": user_id, "session": {"user_id": user_id, "session_id": session_id}, "tags": tags},
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_the_gallery_pages_newest_first_by_tag(server, llm, user_id):
    sid = new_session(server, user_id)["data"][0]["session_id"]
    chat(server, user_id, sid, "something to publish")
    tag = "paged-" + uuid.uuid4().hex[:6]
    ids = [publish(server, user_id, sid, [tag])["id"] for _ in range(7)]
    pages = walk(server, "/api/gallery", tag=tag, limit=3)
    assert [len(p["data"]) for p in pages] == [3, 3, 1]
    assert [i["id"] for p in pages for i in p["data"]] == ids[::-1]
    first = server.get("/api/gallery").json()
    assert len(first["data"]) <= 50 and "next_cursor" in first
    one = server.get(f"/api/gallery/{ids[0]}").json()["data"]
    assert one["id"] == ids[0] and server.get("/api/gallery", gallery_id=ids[0]).json()["data"] == one


def test_a_published_copy_names_a_publisher_and_holds_no_email_or_secret(server, llm, user_id):
    sid = new_session(server, user_id)["data"][0]["session_id"]
    chat(server, user_id, sid, f"hello, I am {user_id}")
    # A stored workflow may hold what must never be published (a key, a credential's name).
    with sqlite3.connect(server.db_path) as db:
        (raw,) = db.execute(
            "SELECT flow_config FROM sessions WHERE user_id = ? AND session_id = ?", (user_id, sid)
        ).fetchone()
        flow = json.loads(raw)
        flow["receiver"]["config"]["llm_config"]["config_list"] = [
            {"model": "gpt-4o-mini", "credential": "my-openai"},
            {"model": "gpt-4o-mini", "api_key": "sk-live-SECRET", "base_url": "https://x.example"},
        ]
        db.execute(
            "UPDATE sessions SET flow_config = ? WHERE user_id = ? AND session_id = ?",
            (json.dumps(flow), user_id, sid),
        )
    item = publish(server, user_id, sid, ["public"])
    local = user_id.split("@")[0]
    assert item["publisher"] == local
    assert item["session"]["user_id"] == local and {m["user_id"] for m in item["messages"]} == {local}
    assert item["messages"][0]["content"] == f"hello, I am {local}"
    for text in (
        json.dumps(item),
        server.get(f"/api/gallery/{item['id']}").text,
        server.get("/api/gallery", tag="public").text,
        stored_gallery_row(server.db_path, item["id"]),
    ):
        assert user_id not in text and "sk-live-SECRET" not in text
        assert '"api_key"' not in text and '"credential"' not in text and "my-openai" not in text
    entries = item["session"]["flow_config"]["receiver"]["config"]["llm_config"]["config_list"]
    assert [e["model"] for e in entries] == ["gpt-4o-mini"] * 2 and entries[1][
        "base_url"
    ] == "https://x.example"


def test_the_publisher_is_the_users_display_name_when_set(server, llm, user_id):
    with sqlite3.connect(server.db_path) as db:
        db.execute(
            "INSERT INTO users (user_id, is_admin, display_name, created_at) VALUES (?, 0, 'Ada L.', '2026-01-01')",
            (user_id,),
        )
    sid = new_session(server, user_id)["data"][0]["session_id"]
    chat(server, user_id, sid, "q")
    item = publish(server, user_id, sid, [])
    assert item["publisher"] == "Ada L." and item["session"]["user_id"] == "Ada L."


def test_an_item_published_before_publishers_existed_shows_no_email(server):
    gallery_id = "legacy-" + uuid.uuid4().hex[:6]
    owner = "grace.hopper@example.com"
    session = {
        "session_id": "old",
        "user_id": owner,
        "name": None,
        "flow_config": {},
        "timestamp": "2025-01-01T00:00:00+00:00",
    }
    message = {
        "msg_id": "m1",
        "user_id": owner,
        "session_id": "old",
        "role": "user",
        "content": "hi",
        "timestamp": "2025-01-01T00:00:00+00:00",
    }
    with sqlite3.connect(server.db_path) as db:
        db.execute(
            "INSERT INTO gallery (gallery_id, owner_id, session, messages, tags, created_at) VALUES (?, ?, ?, ?, '[]', '2025-01-01 00:00:00.000000')",
            (gallery_id, owner, json.dumps(session), json.dumps([message])),
        )
    r = server.get(f"/api/gallery/{gallery_id}")
    assert r.status_code == 200 and owner not in r.text
    assert r.json()["data"]["publisher"] == "grace.hopper"


def test_only_the_publisher_can_unpublish(server, llm, user_id):
    sid = new_session(server, user_id)["data"][0]["session_id"]
    chat(server, user_id, sid, "take me down later")
    item = publish(server, user_id, sid, ["unpublish-" + user_id])
    other = "someone-else-" + user_id
    r = server.http.delete(f"{server.url}/api/gallery/{item['id']}", params={"user_id": other}, timeout=30)
    assert r.status_code == 404  # as if it did not exist
    nothing = f"nothing-{uuid.uuid4()}"
    missing = server.http.delete(f"{server.url}/api/gallery/{nothing}", params={"user_id": other}, timeout=30)
    assert missing.status_code == 404
    assert missing.json()["message"] == r.json()["message"].replace(item["id"], nothing)
    assert server.get(f"/api/gallery/{item['id']}").status_code == 200
    r = server.http.delete(f"{server.url}/api/gallery/{item['id']}", params={"user_id": user_id}, timeout=30)
    assert r.status_code == 200 and r.json()["data"] == {"id": item["id"]}
    assert server.get(f"/api/gallery/{item['id']}").status_code == 404
    assert server.get("/api/gallery", tag="unpublish-" + user_id).json()["data"] == []
    assert (
        server.get("/api/messages", user_id=user_id, session_id=sid).status_code == 200
    )  # the session stays


def stored_gallery_row(db_path: Path, gallery_id: str) -> str:
    with sqlite3.connect(db_path) as db:
        row = db.execute(
            "SELECT session, messages FROM gallery WHERE gallery_id = ?", (gallery_id,)
        ).fetchone()
    return json.dumps(row)


def test_last_messages_reads_only_the_newest_n_oldest_first(tmp_path: Path, user_id: str) -> None:
    from autobots.schemas.chat import Message, Session
    from autobots.storage.database import create_db_engine, make_session_factory, migrate
    from autobots.storage.repository import Repository

    engine = create_db_engine(f"sqlite:///{tmp_path / 'h.sqlite'}")
    migrate(engine)
    repo = Repository(make_session_factory(engine))
    repo.create_session(
        user_id, Session(session_id="s", user_id=user_id, flow_config=wf.autonomous(wf.assistant()))
    )
    for i in range(30):
        repo.save_message(Message(user_id=user_id, session_id="s", content=f"m{i}"))
    assert [m.content for m in repo.last_messages(user_id, "s", 4)] == ["m26", "m27", "m28", "m29"]
    assert [m.content for m in repo.last_messages(user_id, "s", 100)] == [f"m{i}" for i in range(30)]
    assert repo.last_messages(user_id, "s", 0) == [] and repo.last_messages("other", "s", 5) == []
    page = repo.messages_page(user_id, "s", 10)
    assert [m.content for m in page.items] == [f"m{i}" for i in range(20, 30)] and page.next_key is not None


def test_a_gallery_page_shows_each_items_first_messages_only(server, llm, user_id):
    """A long published session must not make every page of the gallery long: a list shows an
    item's first messages and how many it has; the item by its id has them all."""
    llm.responder = lambda body: "ok TERMINATE"
    sid = "long-" + uuid.uuid4().hex[:6]
    new_session(server, user_id, sid)
    for i in range(12):
        chat(server, user_id, sid, f"question {i}")
    tag = "long-" + uuid.uuid4().hex[:6]
    item = publish(server, user_id, sid, [tag])
    listed = server.get("/api/gallery", tag=tag).json()["data"][0]
    assert listed["id"] == item["id"] and listed["message_count"] == 24
    assert len(listed["messages"]) == 20 and listed["messages"][0]["content"] == "question 0"
    whole = server.get(f"/api/gallery/{item['id']}").json()["data"]
    assert len(whole["messages"]) == 24 and whole["message_count"] == 24
