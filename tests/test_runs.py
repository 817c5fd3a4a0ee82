"""Live runs: 202 at once, events over SSE in order and resumable, cancel, human input, restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from autobots.services.runs import SEQ_SLACK
from autobots.settings import default_config_path
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import Reply
from tests.support.server import RunningServer, start_server
from tests.support.sse import read_events

INPUT_TIMEOUT_S = 2.0


def write_config(workdir: Path, **runs: float) -> Path:
    config = json.loads(Path(default_config_path()).read_text())
    config["runs"].update(runs)
    path = workdir / "config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def small_server(llm_server, tmp_path_factory) -> Iterator[RunningServer]:
    """One run at a time, and humans get INPUT_TIMEOUT_S to answer."""
    workdir = tmp_path_factory.mktemp("small")
    config = write_config(workdir, pool_size=1, input_timeout_s=INPUT_TIMEOUT_S)
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(workdir, env=env, config=config)
    yield srv
    srv.stop()


def start(server, user_id, content, flow, session_id=None):
    r = server.post("/api/runs", {"message": wf.message(user_id, content, session_id), "flow_config": flow})
    assert r.status_code == 202, r.text
    return r.json()["data"]


def all_events(server, run_id, after=None):
    return list(read_events(f"{server.url}/api/runs/{run_id}/events", last_event_id=after))


def wait_status(server, run_id, wanted, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = server.get(f"/api/runs/{run_id}").json()["data"]
        if data["status"] in wanted:
            return data
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {wanted}: {data}")


def test_run_answers_at_once_and_streams_events_in_order(server, llm, user_id):
    llm.latency = 0.3
    llm.queue("Thinking about it.", "Done: 42. TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(default_auto_reply="go on"))
    t0 = time.monotonic()
    run = start(server, user_id, "What is the answer?", flow)
    assert time.monotonic() - t0 < 0.3  # did not wait for the LLM
    assert run["status"] == "queued" and run["session_id"]
    events = all_events(server, run["run_id"])
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["status", "status"] and events[1].data == {"status": "running"}
    assert kinds[-2:] == ["final", "status"] and events[-1].data == {"status": "completed"}
    said = [e.data for e in events if e.type == "message"]
    assert [m["sender"] for m in said] == ["userproxy", "primary_assistant", "userproxy", "primary_assistant"]
    calls = [e.data for e in events if e.type == "llm_call"]
    assert len(calls) == 2 and sum(c["total_tokens"] for c in calls) == sum(
        llm.counted()[k] for k in ("prompt_tokens", "completion_tokens")
    )
    # Each message event comes right after the call that produced it.
    assert kinds.index("llm_call") < kinds.index("message", kinds.index("llm_call"))
    final = events[-2].data["message"]
    assert final["content"] == "Done: 42."
    info = server.get(f"/api/runs/{run['run_id']}").json()["data"]
    assert info["status"] == "completed" and info["assistant_msg_id"] == final["msg_id"]
    assert info["usage"]["llm_calls"] == 2


def test_events_resume_after_last_event_id_without_gaps_or_duplicates(server, llm, user_id):
    llm.latency = 0.2
    llm.queue("one", "two", "three TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(default_auto_reply="more"))
    run = start(server, user_id, "count", flow)
    url = f"{server.url}/api/runs/{run['run_id']}/events"
    first = []
    for event in read_events(url):
        first.append(event)
        if event.type == "message" and event.data["sender"] == "primary_assistant":
            break  # the client drops mid-run
    rest = list(read_events(url, last_event_id=first[-1].id))
    combined = first + rest
    assert [e.id for e in combined] == list(range(1, len(combined) + 1))
    assert combined[-1].data == {"status": "completed"}
    # A finished run replays in full.
    replay = all_events(server, run["run_id"])
    assert [(e.id, e.type) for e in replay] == [(e.id, e.type) for e in combined]


def test_cancel_stops_the_run_within_two_seconds_and_keeps_what_was_said(server, llm, user_id):
    llm.responder = lambda body: Reply("Still working...", delay=0.2 if len(body["messages"]) < 4 else 30)
    flow = wf.autonomous(
        wf.assistant(max_consecutive_auto_reply=50),
        sender=wf.userproxy(max_consecutive_auto_reply=50, default_auto_reply="Go on."),
    )
    run = start(server, user_id, "work forever", flow)
    url = f"{server.url}/api/runs/{run['run_id']}/events"
    for event in read_events(url):
        if event.type == "message" and event.data["sender"] == "primary_assistant":
            break
    time.sleep(0.3)  # the next LLM call (30 s) is now pending
    t0 = time.monotonic()
    r = server.post(f"/api/runs/{run['run_id']}/cancel")
    info = wait_status(server, run["run_id"], {"cancelled"}, timeout=5)
    assert time.monotonic() - t0 < 2
    assert r.status_code == 200
    msgs = server.get("/api/messages", user_id=user_id, session_id=run["session_id"]).json()["data"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    # The answer is the last thing said (here the proxy's "Go on."), with the cancel note.
    assert msgs[1]["content"].startswith("Go on.") and "cancelled" in msgs[1]["content"]
    assert msgs[1]["metadata"]["status"] == "cancelled"
    assert any(m["content"] == "Still working..." for m in msgs[1]["metadata"]["messages"])
    events = all_events(server, run["run_id"])
    assert events[-1].data == {"status": "cancelled"}
    assert info["status"] == "cancelled"
    # Cancelling again changes nothing.
    assert server.post(f"/api/runs/{run['run_id']}/cancel").json()["data"]["status"] == "cancelled"


def test_human_input_pauses_and_resumes_the_run(server, llm, user_id):
    llm.queue("Which city?", "Paris it is. TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
    run = start(server, user_id, "Plan a trip", flow)
    info = wait_status(server, run["run_id"], {"awaiting_input"})
    assert info["input_prompt"]
    bad = server.post(f"/api/runs/{run['run_id']}/input", {"text": 5})
    assert bad.status_code == 400
    r = server.post(f"/api/runs/{run['run_id']}/input", {"text": "Paris"})
    assert r.status_code == 200
    # ALWAYS asks again after the answer; an empty reply ends it as NEVER would.
    wait_status(server, run["run_id"], {"awaiting_input"})
    server.post(f"/api/runs/{run['run_id']}/input", {"text": ""})
    wait_status(server, run["run_id"], {"completed"})
    events = all_events(server, run["run_id"])
    assert [e.data["status"] for e in events if e.type == "status"][:4] == [
        "queued",
        "running",
        "awaiting_input",
        "running",
    ]
    requests_ = [e.data for e in events if e.type == "input_request"]
    assert requests_ and requests_[0]["agent"] == "userproxy"
    said = [(e.data["sender"], e.data["content"]) for e in events if e.type == "message"]
    assert ("userproxy", "Paris") in said
    assert llm.served[1].body["messages"][-1]["content"] == "Paris"


def test_human_input_not_answered_behaves_as_never(server, llm, user_id):
    """The blocking endpoint has nobody to ask: the run goes on without waiting."""
    llm.queue("Which city?", "I will pick Rome. TERMINATE")
    flow = wf.autonomous(
        wf.assistant(), sender=wf.userproxy(human_input_mode="TERMINATE", default_auto_reply="you choose")
    )
    t0 = time.monotonic()
    r = server.post("/api/messages", {"message": wf.message(user_id, "Plan a trip"), "flow_config": flow})
    assert r.status_code == 200 and time.monotonic() - t0 < 10
    assert r.json()["message"] == "I will pick Rome."


def test_input_to_a_run_that_is_not_waiting_is_409(server, llm, user_id):
    llm.queue("Hi. TERMINATE")
    run = start(server, user_id, "hi", wf.autonomous(wf.assistant()))
    wait_status(server, run["run_id"], {"completed"})
    r = server.post(f"/api/runs/{run['run_id']}/input", {"text": "late"})
    assert r.status_code == 409 and r.json()["status"] is False


def test_unknown_run_is_404(server):
    assert server.get("/api/runs/nope").status_code == 404
    assert server.get("/api/runs/nope/events").status_code == 404
    assert server.post("/api/runs/nope/cancel").status_code == 404
    r = server.post("/api/runs/nope/input", {"text": "hello"})
    assert r.status_code == 404 and "not found" in r.json()["message"]


def test_bad_run_request_is_400_and_stores_nothing(server, user_id):
    r = server.post("/api/runs", {"message": wf.message(user_id, "x"), "flow_config": {"type": "nope"}})
    assert r.status_code == 400
    assert server.get("/api/sessions", user_id=user_id).json()["data"] == []


def test_failed_run_reports_the_error(server, llm, user_id):
    llm.responder = lambda body: Reply("upstream broke", status=500)
    run = start(server, user_id, "fail please", wf.autonomous(wf.assistant()))
    info = wait_status(server, run["run_id"], {"failed"}, timeout=30)
    assert "HTTP 500" in info["error"]
    events = all_events(server, run["run_id"])
    assert events[-2].type == "error" and events[-1].data == {"status": "failed"}


def test_token_deltas_are_streamed_when_the_model_streams(server, llm, user_id):
    llm.queue("The quick brown fox. TERMINATE")
    agent = wf.assistant()
    agent["config"]["llm_config"]["stream"] = True
    run = start(server, user_id, "say it", wf.autonomous(agent))
    events = all_events(server, run["run_id"])
    tokens = [e.data for e in events if e.type == "token"]
    assert "".join(t["delta"] for t in tokens) == "The quick brown fox. TERMINATE"
    assert {t["agent"] for t in tokens} == {"primary_assistant"}
    first_message = next(
        i for i, e in enumerate(events) if e.type == "message" and e.data["sender"] == "primary_assistant"
    )
    assert max(i for i, e in enumerate(events) if e.type == "token") < first_message
    usage = events[-2].data["message"]["metadata"]["usage"]
    assert usage["completion_tokens"] == llm.counted()["completion_tokens"]


def test_restart_marks_runs_in_flight_interrupted_and_keeps_what_was_said(llm, tmp_path, user_id):
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    llm.responder = lambda body: Reply("Partial thought.", delay=0.1 if len(body["messages"]) < 4 else 60)
    first = start_server(tmp_path, env=env)
    flow = wf.autonomous(
        wf.assistant(max_consecutive_auto_reply=50),
        sender=wf.userproxy(max_consecutive_auto_reply=50, default_auto_reply="Go on."),
    )
    seen = []
    try:
        run = start(first, user_id, "think hard", flow)
        for event in read_events(f"{first.url}/api/runs/{run['run_id']}/events"):
            seen.append(event)
            if event.type == "message" and event.data["sender"] == "primary_assistant":
                break
        time.sleep(0.3)
    finally:
        first.kill()  # no goodbye: master and worker die mid-run
    second = start_server(tmp_path, env=env)
    try:
        info = second.get(f"/api/runs/{run['run_id']}").json()["data"]
        assert info["status"] == "interrupted"
        msgs = second.get("/api/messages", user_id=user_id, session_id=run["session_id"]).json()["data"]
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert "interrupted" in msgs[1]["content"] and msgs[1]["content"].startswith("Go on.")
        said = msgs[1]["metadata"]["messages"]
        assert [m["content"] for m in said][:2] == ["think hard", "Partial thought."]
        assert msgs[1]["metadata"]["usage"]["llm_calls"] >= 1
        # The recovered answer is built like any other: it says what ran and what was asked for.
        recovered = msgs[1]["metadata"]
        assert recovered["workflow"] == {"name": "autonomous test", "type": "autonomous"}
        assert recovered["models"]["requested"] == ["gpt-4o-mini"]
        assert recovered["limit_reached"] is None and recovered["files"] == [] and recovered["parts"] == {}
        events = all_events(second, run["run_id"])
        assert events[-1].data == {"status": "interrupted"}
        # A client reconnecting with the last id it saw gets the ending, numbered past any id
        # the dead server may have sent but not stored.
        resumed = all_events(second, run["run_id"], after=seen[-1].id)
        assert [e.type for e in resumed][-2:] == ["final", "status"]
        stored_before = max(e.id for e in seen + resumed[:-2])
        assert resumed[-2].id == stored_before + SEQ_SLACK + 1
        assert resumed[-2].data["message"]["msg_id"] == msgs[1]["msg_id"]
        # Nothing of the first server is left running: its worker died with it.
        served = len(llm.served)
        time.sleep(0.5)
        assert len(llm.served) == served
    finally:
        second.stop()


def test_sigterm_ends_runs_waiting_for_a_human_as_interrupted(llm, tmp_path, user_id):
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    llm.queue("Which city?")
    first = start_server(tmp_path, env=env)
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
    try:
        run = start(first, user_id, "Plan a trip", flow)
        wait_status(first, run["run_id"], {"awaiting_input"})
        t0 = time.monotonic()
        first.stop()  # SIGTERM, as a service manager stops it
        # The worker did not sit out gunicorn's graceful timeout waiting for the human.
        assert "SIGKILL" not in first.log() and time.monotonic() - t0 < 8
    finally:
        first.kill()
    second = start_server(tmp_path, env=env)
    try:
        info = second.get(f"/api/runs/{run['run_id']}").json()["data"]
        assert info["status"] == "interrupted"
        msgs = second.get("/api/messages", user_id=user_id, session_id=run["session_id"]).json()["data"]
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert "Which city?" in msgs[1]["content"] and "interrupted" in msgs[1]["content"]
        events = all_events(second, run["run_id"])
        assert [e.type for e in events][-2:] == ["final", "status"]
        assert events[-1].data == {"status": "interrupted"}
        assert [e.id for e in events] == list(range(1, len(events) + 1))  # ended cleanly, no gap
        assert len(llm.served) == 1
    finally:
        second.stop()


def test_many_concurrent_runs_all_complete(server, llm, user_id):
    llm.latency = 0.3
    llm.responder = lambda body: "ok TERMINATE"
    runs = [start(server, user_id, f"q{i}", wf.autonomous(wf.assistant())) for i in range(20)]
    results: dict[str, str] = {}

    def follow(run_id):
        results[run_id] = [e for e in read_events(f"{server.url}/api/runs/{run_id}/events")][-1].data[
            "status"
        ]

    threads = [threading.Thread(target=follow, args=(r["run_id"],)) for r in runs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(results.values()) == {"completed"} and len(results) == 20
    assert time.monotonic() - t0 < 5  # they ran side by side, not one after another
    assert llm.max_in_flight > 5
    assert requests.get(server.url + "/api/health", timeout=5).status_code == 200


def test_a_late_call_after_cancel_adds_nothing_after_the_cancelled_status(server, llm, user_id):
    llm.responder = lambda body: Reply("Working.", delay=0.1 if len(body["messages"]) < 4 else 1.5)
    flow = wf.autonomous(
        wf.assistant(max_consecutive_auto_reply=50),
        sender=wf.userproxy(max_consecutive_auto_reply=50, default_auto_reply="Go on."),
    )
    run = start(server, user_id, "work", flow)
    url = f"{server.url}/api/runs/{run['run_id']}/events"
    live = []
    for event in read_events(url):
        live.append(event)
        if event.type == "message" and event.data["sender"] == "primary_assistant":
            break
    time.sleep(0.3)  # the second call (1.5 s) is pending
    server.post(f"/api/runs/{run['run_id']}/cancel")
    # A listener still connected gets the ending and its stream closes at the terminal status,
    # though the worker is still waiting for the LLM.
    rest = list(read_events(url, last_event_id=live[-1].id, timeout=10))
    assert rest[-1].data == {"status": "cancelled"}
    deadline = time.monotonic() + 10
    while len(llm.served) < 2 and time.monotonic() < deadline:  # the pending call returns
        time.sleep(0.05)
    time.sleep(0.5)
    events = all_events(server, run["run_id"])
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["final", "status"] and events[-1].data == {"status": "cancelled"}
    assert [e.data["status"] for e in events if e.type == "status"] == ["queued", "running", "cancelled"]
    assert kinds.count("llm_call") == 1  # the late call is not reported after the end
    assert server.get(f"/api/runs/{run['run_id']}").json()["data"]["status"] == "cancelled"


def test_prompts_have_ids_and_a_second_answer_is_refused(server, llm, user_id):
    llm.queue("Which city?", "Paris it is. TERMINATE")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
    run = start(server, user_id, "Plan a trip", flow)
    info = wait_status(server, run["run_id"], {"awaiting_input"})
    prompt_id = info["input_prompt_id"]
    assert prompt_id and "Provide feedback to primary_assistant" in info["input_prompt"]
    url = f"{server.url}/api/runs/{run['run_id']}/input"
    wrong = server.post(f"/api/runs/{run['run_id']}/input", {"text": "Rome", "prompt_id": "not-it"})
    assert wrong.status_code == 409 and "no longer waiting" in wrong.json()["message"]
    first = requests.post(url, json={"text": "Paris", "prompt_id": prompt_id}, timeout=10)
    again = requests.post(url, json={"text": "Paris", "prompt_id": prompt_id}, timeout=10)
    assert first.status_code == 200 and again.status_code == 409
    nxt = wait_status(server, run["run_id"], {"awaiting_input"})
    assert nxt["input_prompt_id"] not in (None, prompt_id)
    # An answer meant for the first prompt is not taken as the answer to the second.
    late = server.post(f"/api/runs/{run['run_id']}/input", {"text": "Rome", "prompt_id": prompt_id})
    assert late.status_code == 409
    server.post(f"/api/runs/{run['run_id']}/input", {"text": "", "prompt_id": nxt["input_prompt_id"]})
    wait_status(server, run["run_id"], {"completed"})
    events = all_events(server, run["run_id"])
    asked = [e.data["prompt_id"] for e in events if e.type == "input_request"]
    assert asked == [prompt_id, nxt["input_prompt_id"]]
    said = [(e.data["sender"], e.data["content"]) for e in events if e.type == "message"]
    assert ("userproxy", "Paris") in said and ("userproxy", "Rome") not in said
    assert len(llm.served) == 2


def test_always_mode_with_no_human_stops_as_never_would(server, llm, user_id):
    """NEVER with max_consecutive_auto_reply=1: one auto-reply, then the chat ends (2 calls).
    ALWAYS with nobody to answer (the blocking endpoint) must do the same."""
    llm.responder = lambda body: "Still thinking."
    flow = wf.autonomous(
        wf.assistant(),
        sender=wf.userproxy(human_input_mode="ALWAYS", max_consecutive_auto_reply=1, default_auto_reply="go"),
    )
    r = server.post("/api/messages", {"message": wf.message(user_id, "Think"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert len(llm.served) == 2
    said = r.json()["data"]["metadata"]["messages"]
    assert [(m["sender"], m["content"]) for m in said] == [
        ("userproxy", "Think"),
        ("primary_assistant", "Still thinking."),
        ("userproxy", "go"),
        ("primary_assistant", "Still thinking."),
    ]


def test_an_empty_answer_acts_as_never(server, llm, user_id):
    llm.responder = lambda body: "Still thinking."
    flow = wf.autonomous(
        wf.assistant(),
        sender=wf.userproxy(human_input_mode="ALWAYS", max_consecutive_auto_reply=1, default_auto_reply="go"),
    )
    run = start(server, user_id, "Think", flow)
    for _ in range(2):
        info = wait_status(server, run["run_id"], {"awaiting_input"})
        r = server.post(
            f"/api/runs/{run['run_id']}/input", {"text": "", "prompt_id": info["input_prompt_id"]}
        )
        assert r.status_code == 200
    info = wait_status(server, run["run_id"], {"completed"})
    assert len(llm.served) == 2
    events = all_events(server, run["run_id"])
    assert sum(e.type == "input_request" for e in events) == 2
    said = [(e.data["sender"], e.data["content"]) for e in events if e.type == "message"]
    assert said[-2:] == [("userproxy", "go"), ("primary_assistant", "Still thinking.")]


def test_an_unanswered_prompt_times_out_and_the_run_goes_on_as_never(small_server, llm, user_id):
    llm.responder = lambda body: "Still thinking."
    flow = wf.autonomous(
        wf.assistant(),
        sender=wf.userproxy(human_input_mode="ALWAYS", max_consecutive_auto_reply=1, default_auto_reply="go"),
    )
    run = start(small_server, user_id, "Think", flow)
    first = wait_status(small_server, run["run_id"], {"awaiting_input"})
    events = all_events(small_server, run["run_id"])  # follows the run to its end
    assert events[-1].data == {"status": "completed"}
    assert len(llm.served) == 2
    statuses = [e.data["status"] for e in events if e.type == "status"]
    assert statuses == [
        "queued",
        "running",
        "awaiting_input",
        "running",
        "awaiting_input",
        "running",
        "completed",
    ]
    asked = [e.data["prompt_id"] for e in events if e.type == "input_request"]
    expired = [e.data["prompt_id"] for e in events if e.type == "input_timeout"]
    assert asked == expired and asked[0] == first["input_prompt_id"]
    # Too late: the prompt expired.
    r = small_server.post(f"/api/runs/{run['run_id']}/input", {"text": "late", "prompt_id": asked[0]})
    assert r.status_code == 409


def test_terminate_mode_pauses_at_the_auto_reply_limit_and_takes_the_answer(server, llm, user_id):
    llm.queue("Draft one.", "Draft two.", "Short. TERMINATE")
    flow = wf.autonomous(
        wf.assistant(),
        sender=wf.userproxy(
            human_input_mode="TERMINATE", max_consecutive_auto_reply=1, default_auto_reply="go"
        ),
    )
    run = start(server, user_id, "Write", flow)
    info = wait_status(server, run["run_id"], {"awaiting_input"})
    assert "Please give feedback to primary_assistant" in info["input_prompt"]
    assert len(llm.served) == 2  # one auto-reply, then it asks
    server.post(
        f"/api/runs/{run['run_id']}/input", {"text": "Make it shorter", "prompt_id": info["input_prompt_id"]}
    )
    # The termination message asks again; no answer ends the chat.
    again = wait_status(server, run["run_id"], {"awaiting_input"})
    server.post(f"/api/runs/{run['run_id']}/input", {"text": "", "prompt_id": again["input_prompt_id"]})
    done = wait_status(server, run["run_id"], {"completed"})
    assert llm.served[2].body["messages"][-1]["content"] == "Make it shorter"
    msgs = server.get("/api/messages", user_id=user_id, session_id=run["session_id"]).json()["data"]
    assert msgs[-1]["content"] == "Short." and done["usage"]["llm_calls"] == 3


def test_terminate_mode_with_no_answer_at_the_limit_stops_as_never(server, llm, user_id):
    llm.responder = lambda body: "Draft."
    flow = wf.autonomous(
        wf.assistant(),
        sender=wf.userproxy(
            human_input_mode="TERMINATE", max_consecutive_auto_reply=1, default_auto_reply="go"
        ),
    )
    run = start(server, user_id, "Write", flow)
    info = wait_status(server, run["run_id"], {"awaiting_input"})
    server.post(f"/api/runs/{run['run_id']}/input", {"text": "", "prompt_id": info["input_prompt_id"]})
    wait_status(server, run["run_id"], {"completed"})
    assert len(llm.served) == 2


def test_cancel_while_waiting_for_a_human(server, llm, user_id):
    llm.queue("Which city?")
    flow = wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS"))
    run = start(server, user_id, "Plan a trip", flow)
    wait_status(server, run["run_id"], {"awaiting_input"})
    r = server.post(f"/api/runs/{run['run_id']}/cancel")
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    assert r.json()["data"]["input_prompt"] is None
    events = all_events(server, run["run_id"])
    assert events[-1].data == {"status": "cancelled"}
    assert server.post(f"/api/runs/{run['run_id']}/input", {"text": "Paris"}).status_code == 409
    msgs = server.get("/api/messages", user_id=user_id, session_id=run["session_id"]).json()["data"]
    assert "Which city?" in msgs[-1]["content"] and msgs[-1]["metadata"]["status"] == "cancelled"
    time.sleep(0.3)
    assert len(llm.served) == 1  # the woken worker asks the LLM nothing more


def test_a_run_waits_queued_for_a_free_worker_and_can_be_cancelled_there(small_server, llm, user_id):
    llm.responder = lambda body: Reply("Slow answer. TERMINATE", delay=1.5)
    busy = start(small_server, user_id, "slow", wf.autonomous(wf.assistant()))
    wait_status(small_server, busy["run_id"], {"running"})
    waiting = start(small_server, user_id, "next", wf.autonomous(wf.assistant()))
    third = start(small_server, user_id, "after", wf.autonomous(wf.assistant()))
    assert small_server.get(f"/api/runs/{waiting['run_id']}").json()["data"]["status"] == "queued"
    r = small_server.post(f"/api/runs/{waiting['run_id']}/cancel")
    assert r.json()["data"]["status"] == "cancelled"
    events = all_events(small_server, waiting["run_id"])
    assert [e.data["status"] for e in events if e.type == "status"] == ["queued", "cancelled"]
    msgs = small_server.get("/api/messages", user_id=user_id, session_id=waiting["session_id"]).json()["data"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and "cancelled" in msgs[1]["content"]
    assert wait_status(small_server, busy["run_id"], {"completed"})["usage"]["llm_calls"] == 1
    assert wait_status(small_server, third["run_id"], {"completed"})["usage"]["llm_calls"] == 1
    assert len(llm.served) == 2  # the cancelled run never called the LLM
    assert small_server.get(f"/api/runs/{waiting['run_id']}").json()["data"]["status"] == "cancelled"


def test_deleting_a_session_mid_run_cancels_it_and_other_runs_keep_their_records(server, llm, user_id):
    """`/api/cleardb` while a run of the session is waiting on its LLM: the run is cancelled, the
    session is gone, and another session's run that finishes meanwhile keeps every event and call."""

    def respond(body):
        text = str(body["messages"])
        return (
            Reply("late answer TERMINATE", delay=3.0)
            if "doomed" in text
            else Reply("kept TERMINATE", delay=1.5)
        )

    llm.responder = respond
    doomed = start(server, user_id, "doomed question", wf.autonomous(wf.assistant()))
    wait_status(server, doomed["run_id"], {"running"})
    other = start(server, user_id, "other question", wf.autonomous(wf.assistant()))
    time.sleep(0.5)  # both calls are now in flight
    r = server.post("/api/cleardb", {"user_id": user_id, "session_id": doomed["session_id"]})
    assert r.status_code == 200, r.text
    assert doomed["session_id"] not in [s["session_id"] for s in r.json()["data"]["sessions"]]
    assert server.get(f"/api/runs/{doomed['run_id']}").status_code == 404
    assert server.get("/api/messages", user_id=user_id, session_id=doomed["session_id"]).status_code == 404

    done = wait_status(server, other["run_id"], {"completed"})
    assert done["status"] == "completed"
    time.sleep(3.0)  # the deleted run's late call returns and its worker ends
    events = all_events(server, other["run_id"])
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["final", "status"] and "llm_call" in kinds and "message" in kinds
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert server.get(f"/api/runs/{other['run_id']}").json()["data"]["usage"]["llm_calls"] == 1
    assert "could not store" not in server.log()
    assert server.get(f"/api/runs/{doomed['run_id']}").status_code == 404
