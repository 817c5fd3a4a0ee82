"""The OpenAI-compatible endpoint (`/v1`) with the real `openai` SDK as the client: any workflow
is a model; a completion runs it through the run machinery, the earlier messages its history;
usage is what the LLM endpoint counted; streaming; errors in OpenAI's shape; sign-in as the API."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import create_key
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server

USER = "guestuser@autobots.local"  # the config's default_user_id: a request naming nobody


def team(name: str, system: str) -> dict[str, Any]:
    flow = wf.autonomous(wf.assistant(system_message=system))
    flow["name"] = name
    return flow


def save(
    server: RunningServer, user: str, flow: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    r = server.post("/api/workflows", {"user_id": user, "workflow": flow}, headers=headers or {})
    if r.status_code == 409:  # saved by an earlier test of this module's server
        found = [w for w in server.get("/api/workflows", user_id=user, limit=500).json()["data"]]
        return str(next(w["id"] for w in found if w["name"] == flow["name"]))
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["id"])


def client(server: RunningServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_models_list_saved_workflows_and_builtins(server: RunningServer, user_id: str) -> None:
    wid = save(server, user_id, team("Model team", "you are a model"))
    ids = [m.id for m in client(server).models.list(extra_query={"user": user_id})]
    assert wid in ids and "builtin:autonomous" in ids
    assert wid not in [m.id for m in client(server).models.list()]  # the default user's list
    card = client(server).models.retrieve(wid, extra_query={"user": user_id})
    assert card.id == wid and card.object == "model"


def test_a_completion_runs_the_workflow_with_history_and_exact_usage(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    wid = save(server, user_id, team("Completion team", "you answer questions"))
    llm.queue("Paris is the capital. TERMINATE")
    before = len(llm.served)
    reply = client(server).chat.completions.create(
        model=wid,
        user=user_id,
        messages=[
            {"role": "system", "content": "not passed on"},
            {"role": "user", "content": "I am planning a trip to France."},
            {"role": "assistant", "content": "Lovely, where to?"},
            {"role": "user", "content": "What is the capital?"},
        ],
    )
    assert reply.object == "chat.completion" and reply.model == wid
    assert reply.choices[0].message.content == "Paris is the capital."
    assert reply.choices[0].finish_reason == "stop"
    counted = llm.counted(before)
    assert counted["calls"] == 1
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == counted["prompt_tokens"]
    assert reply.usage.completion_tokens == counted["completion_tokens"]
    assert reply.usage.total_tokens == counted["prompt_tokens"] + counted["completion_tokens"]
    sent = json.dumps(llm.served[-1].body["messages"])
    assert "I am planning a trip to France." in sent and "Lovely, where to?" in sent
    assert "What is the capital?" in sent and "not passed on" not in sent

    # The run went through the run machinery and recorded the workflow it ran.
    extra = reply.model_extra or {}
    run = server.get(f"/api/runs/{extra['autobots']['run_id']}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"], run["status"]) == (wid, 1, "completed")


def test_the_model_may_be_named_and_a_session_named_in_metadata_keeps_it(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    save(server, user_id, team("Named team", "named"))
    sid = "openai-session-" + user_id
    llm.queue("first TERMINATE", "second TERMINATE")
    for text in ("one", "two"):
        client(server).chat.completions.create(
            model="Named team",
            user=user_id,
            metadata={"session_id": sid},
            messages=[{"role": "user", "content": text}],
        )
    stored = server.get("/api/messages", user_id=user_id, session_id=sid).json()["data"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "one"),
        ("assistant", "first"),
        ("user", "two"),
        ("assistant", "second"),
    ]
    # A built-in by its name runs too.
    llm.queue("builtin says hi TERMINATE")
    name = json.loads((Path(__file__).parent.parent / "src/web/examples/autonomous.json").read_text())["name"]
    reply = client(server).chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "builtin says hi"


def test_streaming_chunks_inner_messages_and_usage(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    wid = save(server, user_id, team("Streaming team", "you stream"))
    llm.queue("Streamed answer here. TERMINATE")
    before = len(llm.served)
    stream = client(server).chat.completions.create(
        model=wid,
        user=user_id,
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed answer here."
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    inner = [(c.model_extra or {}).get("autobots_event") for c in chunks]
    said = [e["data"] for e in inner if e and e["type"] == "message"]
    assert any(m["content"] == "Streamed answer here. TERMINATE" for m in said)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    counted = llm.counted(before)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        counted["prompt_tokens"],
        counted["completion_tokens"],
    )
    # Without include_usage, no usage chunk.
    llm.queue("again TERMINATE")
    plain = list(
        client(server).chat.completions.create(
            model=wid, user=user_id, messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_errors_are_in_openais_shape(server: RunningServer, user_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).chat.completions.create(
            model="no-such-team", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.status_code == 404
    body = missing.value.body
    assert isinstance(body, dict) and body["code"] == "model_not_found" and "no-such-team" in body["message"]

    with pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(
            model="builtin:autonomous", messages=[{"role": "assistant", "content": "last is not the user"}]
        )
    assert bad.value.status_code == 400 and "last message" in str(bad.value.body)

    url = server.url + "/v1/chat/completions"
    for payload in ("{not json", json.dumps({"model": "builtin:autonomous"}), json.dumps([1])):
        r = requests.post(url, data=payload, headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) >= {"message", "type", "code"} and error["type"] == "invalid_request_error"
    r = requests.post(
        url,
        json={
            "model": "builtin:autonomous",
            "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
        },
        timeout=60,
    )
    assert r.status_code == 400 and "text" in r.json()["error"]["message"]
    # Another user's workflow is an unknown model.
    wid = save(server, user_id, team("Hidden team", "hidden"))
    r = requests.post(url, json={"model": wid, "messages": [{"role": "user", "content": "x"}]}, timeout=60)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.headers["Cache-Control"] == "no-store"


@pytest.fixture(scope="module")
def token_server(
    llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str, str]]:
    workdir = tmp_path_factory.mktemp("openai-token")
    alice = create_key(workdir, "alice@example.com")
    bob = create_key(workdir, "bob@example.com")
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    srv = start_server(workdir, env=env)
    yield srv, alice, bob
    srv.stop()


def test_sign_in_the_api_key_is_the_bearer_token(
    token_server: tuple[RunningServer, str, str], llm: ScriptedLLM
) -> None:
    srv, alice, bob = token_server
    for key in (None, "autobots_sk_not-a-real-key"):
        r = requests.post(
            srv.url + "/v1/chat/completions",
            json={"model": "builtin:autonomous", "messages": [{"role": "user", "content": "x"}]},
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=60,
        )
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "authentication_error" and r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        client(srv, "autobots_sk_wrong").models.list()

    wid = save(
        srv, "alice@example.com", team("Alice team", "alice's"), headers={"Authorization": f"Bearer {alice}"}
    )
    assert wid in [m.id for m in client(srv, alice).models.list()]
    assert wid not in [m.id for m in client(srv, bob).models.list()]
    with pytest.raises(openai.NotFoundError):
        client(srv, bob).chat.completions.create(model=wid, messages=[{"role": "user", "content": "x"}])
    llm.queue("for alice TERMINATE")
    reply = client(srv, alice).chat.completions.create(
        model="Alice team", user="someone-else", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "for alice"
    run_id = (reply.model_extra or {})["autobots"]["run_id"]
    run = requests.get(
        srv.url + f"/api/runs/{run_id}", headers={"Authorization": f"Bearer {alice}"}, timeout=60
    )
    assert run.status_code == 200 and run.json()["data"]["user_id"] == "alice@example.com"


def test_a_stream_whose_client_goes_away_cancels_the_run(
    llm_server: ScriptedLLM, llm: ScriptedLLM, tmp_path: Path
) -> None:
    """A streaming client that closes its connection mid-run will read no answer: the run is
    cancelled at the stream's next chunk (a heartbeat here, every 5 s), its LLM call abandoned,
    rather than run to its end for nobody. The heartbeat comes after gunicorn has given up on the
    request (3 s after the disconnect), so the stream is closed after its request was cancelled."""
    env = {
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        "AUTOBOTS_RUNS__HEARTBEAT_S": "5",
    }
    srv = start_server(tmp_path, env=env)
    try:
        wid = save(srv, USER, team("Abandoned stream team", "you are slow"))
        llm.queue(Reply("Too late. TERMINATE", delay=30.0))
        body = json.dumps(
            {"model": wid, "messages": [{"role": "user", "content": "take your time"}], "stream": True}
        ).encode()
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            got = b""
            while b"chatcmpl-" not in got or b"\n\n" not in got.split(b"chatcmpl-", 1)[1]:
                got += sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
        run_id = got.split(b"chatcmpl-", 1)[1].split(b'"', 1)[0].decode()
        # The socket is closed: at the next heartbeat the run is cancelled, long before the
        # LLM's 30 s answer would have come.
        deadline = time.monotonic() + 15
        status = ""
        while time.monotonic() < deadline:
            status = srv.get(f"/api/runs/{run_id}", user_id=USER).json()["data"]["status"]
            if status != "running":
                break
            time.sleep(0.2)
        assert status == "cancelled"
        # Closed in order, by the server: not by the garbage collector, nor with a traceback.
        assert "Traceback" not in srv.log() and "Exception ignored" not in srv.log()
    finally:
        srv.stop()
