"""Run history: `GET /api/runs` by workflow, status and time expression, and the built-in skill
`past_runs`, on the real server and the scripted LLM; `parse_since` for every form at a fixed time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from autobots.services.errors import BadRequest
from autobots.services.history import SINCE_FORMS, Window, parse_since
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply, call, tool_reply

NOW = datetime(2025, 3, 10, 15, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "tz", "window"),
    [
        ("latest", None, Window(latest=True)),
        ("today", None, Window(utc(2025, 3, 10), utc(2025, 3, 11))),
        ("  Today ", None, Window(utc(2025, 3, 10), utc(2025, 3, 11))),
        ("yesterday", None, Window(utc(2025, 3, 9), utc(2025, 3, 10))),
        ("last week", None, Window(NOW - timedelta(days=7))),
        ("last 7 days", None, Window(NOW - timedelta(days=7))),
        ("last month", None, Window(NOW - timedelta(days=30))),
        ("last  30 days", None, Window(NOW - timedelta(days=30))),
        ("2025-02-28", None, Window(utc(2025, 2, 28), utc(2025, 3, 1))),
        ("2025-03-01T14:30", None, Window(utc(2025, 3, 1, 14), utc(2025, 3, 1, 15))),
        ("2025-03-01T14:30:00+02:00", None, Window(utc(2025, 3, 1, 12), utc(2025, 3, 1, 13))),
        # In Tokyo (UTC+9) it is already 11 March at 15:30 UTC.
        ("today", "Asia/Tokyo", Window(utc(2025, 3, 10, 15), utc(2025, 3, 11, 15))),
        ("yesterday", "America/New_York", Window(utc(2025, 3, 9, 5), utc(2025, 3, 10, 4))),
        ("2025-03-01T14:30", "Europe/Paris", Window(utc(2025, 3, 1, 13), utc(2025, 3, 1, 14))),
        (None, None, Window()),
    ],
)
def test_every_since_form(since: str | None, tz: str | None, window: Window) -> None:
    got = parse_since(since, tz, now=NOW)
    assert got.latest == window.latest
    assert (got.start and got.start.astimezone(UTC)) == window.start
    assert (got.end and got.end.astimezone(UTC)) == window.end


@pytest.mark.parametrize(
    "since", ["tomorrow", "last year", "2025-02-30", "3 days ago", "10:00x", "9999-12-31", "0001-01-01T00:00"]
)
def test_anything_else_is_refused_listing_the_accepted_forms(since: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_since(since, now=NOW)
    assert SINCE_FORMS in str(refused.value)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "America", "../etc/passwd", "\x00", "Europe/"])
def test_an_unknown_time_zone_is_refused(tz: str) -> None:
    with pytest.raises(BadRequest, match="unknown time zone"):
        parse_since("today", tz, now=NOW)


def ask(server, user_id: str, text: str, flow: dict[str, Any] | None = None, **extra: Any):
    body: dict[str, Any] = {"message": wf.message(user_id, text), **extra}
    if "workflow_id" not in extra:
        body["flow_config"] = flow or wf.autonomous(wf.assistant())
    return server.post("/api/messages", body)


def runs(server, user_id: str, **query: Any) -> list[dict[str, Any]]:
    r = server.get("/api/runs", user_id=user_id, **query)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_history_filters_by_status_time_and_workflow(server, llm, user_id) -> None:
    other = "other-" + user_id
    llm.queue("Paris. TERMINATE", "Rome. TERMINATE", failing(), "Berlin. TERMINATE")
    assert ask(server, user_id, "capital of France?").status_code == 200
    assert ask(server, other, "capital of Italy?").status_code == 200
    assert ask(server, user_id, "this one fails").status_code >= 400
    saved = server.post("/api/workflows", {"user_id": user_id, "workflow": wf.autonomous(wf.assistant())})
    assert saved.status_code == 200, saved.text
    workflow_id, name = saved.json()["data"]["id"], saved.json()["data"]["name"]
    assert ask(server, user_id, "capital of Germany?", workflow_id=workflow_id).status_code == 200

    mine = runs(server, user_id)
    assert [r["question"] for r in mine] == ["capital of Germany?", "this one fails", "capital of France?"]
    assert [r["status"] for r in mine] == ["completed", "failed", "completed"]
    assert mine[0]["answer"] == "Berlin." and mine[0]["workflow_id"] == workflow_id
    assert mine[2]["answer"] == "Paris." and mine[2]["usage"]["total_tokens"] > 0
    assert mine[2]["duration_s"] >= 0 and mine[2]["ended_at"] is not None
    assert mine[1]["error"] and mine[1]["answer"] is None
    assert [r["question"] for r in runs(server, other)] == ["capital of Italy?"]

    assert [r["status"] for r in runs(server, user_id, status="failed")] == ["failed"]
    assert [r["question"] for r in runs(server, user_id, since="latest")] == ["capital of Germany?"]
    assert len(runs(server, user_id, since="today")) == 3
    assert len(runs(server, user_id, since="last 7 days")) == 3
    assert len(runs(server, user_id, since="last month")) == 3
    assert runs(server, user_id, since="yesterday") == []
    today = datetime.now(UTC)
    assert len(runs(server, user_id, since=today.date().isoformat())) == 3
    assert len(runs(server, user_id, since=today.isoformat())) == 3
    assert runs(server, user_id, since=(today - timedelta(hours=3)).isoformat()) == []
    assert len(runs(server, user_id, since="today", tz="Europe/Paris")) in (0, 3)  # 3 unless near midnight
    assert len(runs(server, user_id, limit=1)) == 1
    by_id = runs(server, user_id, workflow=workflow_id)
    by_name = runs(server, user_id, workflow=name)
    assert [r["question"] for r in by_id] == [r["question"] for r in by_name] == ["capital of Germany?"]
    assert runs(server, other, workflow=name) == []

    bad = server.get("/api/runs", user_id=user_id, since="next tuesday")
    assert bad.status_code == 400 and SINCE_FORMS in bad.json()["message"], bad.text
    bad = server.get("/api/runs", user_id=user_id, since="today", tz="Nowhere/Land")
    assert bad.status_code == 400 and "unknown time zone" in bad.json()["message"]
    bad = server.get("/api/runs", user_id=user_id, status="sleeping")
    assert bad.status_code == 400


def failing() -> Reply:
    return Reply("endpoint down", status=500)


def test_past_runs_reads_only_the_users_own_runs(server, llm, user_id) -> None:
    other = "other-" + user_id
    llm.queue("The answer is 17. TERMINATE", "The secret is 99. TERMINATE")
    assert ask(server, user_id, "what is 8+9?").status_code == 200
    assert ask(server, other, "tell me the secret").status_code == 200

    def respond(body: dict[str, Any]) -> Any:
        results = [m for m in body["messages"] if m.get("role") == "tool"]
        if results:
            found = json.loads(results[-1]["content"])
            return f"Earlier you got: {found[0]['answer']} TERMINATE"
        return tool_reply(call("past_runs", workflow="", when="today"))

    llm.responder = respond
    flow = wf.autonomous(wf.assistant("historian", skills=["past_runs"]))
    r = ask(server, user_id, "what did I get earlier?", flow)
    assert r.status_code == 200, r.text
    tool_results = [m for m in llm.served[-1].body["messages"] if m.get("role") == "tool"]
    found = json.loads(tool_results[0]["content"])
    assert [f["question"] for f in found] == ["what is 8+9?"]  # neither the other user's nor this run
    assert "The secret is 99" not in tool_results[0]["content"]
    assert r.json()["metadata"]["content"] == "Earlier you got: The answer is 17."

    llm.reset()
    llm.responder = respond
    r = ask(server, other, "what did I get earlier?", flow)
    found = json.loads(next(m for m in llm.served[-1].body["messages"] if m.get("role") == "tool")["content"])
    assert [f["question"] for f in found] == ["tell me the secret"]

    # A bad time expression is the tool's error, listing the forms, and the run goes on.
    llm.reset()
    llm.responder = lambda body: (
        "Noted. TERMINATE"
        if any(m.get("role") == "tool" for m in body["messages"])
        else tool_reply(call("past_runs", when="a fortnight ago"))
    )
    r = ask(server, user_id, "history please", flow)
    assert r.status_code == 200, r.text
    error = next(m for m in llm.served[-1].body["messages"] if m.get("role") == "tool")["content"]
    assert (
        error.startswith("Error: when: 'a fortnight ago' is not a time expression") and SINCE_FORMS in error
    )
