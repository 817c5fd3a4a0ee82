"""Outbound calls and stored credentials, each test written as the attack or the heavy use that
found the hole: a workflow's `base_url` aimed at the server's own API, a key in a URL, endpoints
outside the allowlist, a provider whose error body carries a key and a page of HTML, a redirect to
another host, a provider that hangs, and a follow-up that lost the user's own key.

All through the real server (gunicorn), the scripted LLM and small local HTTP servers; nothing is
monkeypatched.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import create_key
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server

LEAKED = "sk-leak-USERINFO-0123456789abcdef"
PROVIDER_ECHO = "sk-echo-PROVIDERQUOTED-0123456789"
CRED_KEY = "sk-cred-STOREDONCE-0123456789abcd2f9a"


def stored_bytes(server: RunningServer) -> bytes:
    return b"".join(p.read_bytes() for p in server.db_path.parent.glob("database.sqlite*"))


def flow_with(entry: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """An autonomous flow whose assistant's single config_list entry is `entry`."""
    agent = wf.assistant()
    agent["config"]["llm_config"]["config_list"] = [{"model": "gpt-4o-mini", **entry}]
    if timeout is not None:
        agent["config"]["llm_config"]["timeout"] = timeout
    return wf.autonomous(agent)


ENTRY_FIELD = "flow_config.agents[1].agent.config.llm_config.config_list[0]"


@dataclass
class Spy:
    """A plain HTTP server that records every request and answers each with one canned reply."""

    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Spy:
        spy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                spy.requests.append((self.command, self.path))
                self.send_response(spy.status)
                for name, value in spy.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(spy.body)))
                self.end_headers()
                self.wfile.write(spy.body)

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def spies() -> Iterator[list[Spy]]:
    made: list[Spy] = []
    yield made
    for spy in made:
        spy.stop()


def spy(spies: list[Spy], **kwargs: Any) -> Spy:
    made = Spy(**kwargs).start()
    spies.append(made)
    return made


# SSRF: the server's own API, and keys in URLs ------------------------------------------------


def test_a_base_url_at_the_servers_own_api_is_refused_before_anything_is_stored(server, llm, user_id):
    port = server.url.rsplit(":", 1)[1]
    log_before = len(server.log())
    for base_url in (
        f"{server.url}/api/messages/delete?",
        f"{server.url}/api/messages/delete",
        f"http://localhost:{port}/api/sessions",
        f"http://[::1]:{port}/api",
    ):
        body = {
            "message": wf.message(user_id, "delete things", session_id="ssrf"),
            "flow_config": flow_with({"base_url": base_url, "api_key": None}),
        }
        r = server.post("/api/messages", body)
        assert r.status_code == 400, (base_url, r.text)
        assert f"{ENTRY_FIELD}.base_url" in r.json()["message"]
        assert server.post("/api/runs", body).status_code == 400
    # Nothing was stored: no session, no message; and the server never called itself.
    assert server.get("/api/messages", user_id=user_id, session_id="ssrf").status_code == 404
    assert all(s["session_id"] != "ssrf" for s in server.get("/api/sessions", user_id=user_id).json()["data"])
    new_log = server.log()[log_before:]
    # Its request lines (web/requestlog.py) show no request it made to itself.
    assert "path=/api/messages/delete" not in new_log and "method=POST path=/api/sessions " not in new_log
    assert "method=POST path=/api/messages status=400" in new_log  # what the lines look like
    assert llm.arrived == 0


def test_a_key_in_a_urls_userinfo_is_refused_and_kept_nowhere(server, llm, user_id):
    host = llm.base_url.removeprefix("http://")
    body = {
        "message": wf.message(user_id, "use the key in my URL", session_id="userinfo"),
        "flow_config": flow_with({"base_url": f"http://x:{LEAKED}@{host}"}),
    }
    seen = []
    for path in ("/api/messages", "/api/runs"):
        r = server.post(path, body)
        seen.append(r.text)
        assert r.status_code == 400, r.text
        assert f"{ENTRY_FIELD}.base_url" in r.json()["message"] and "credential" in r.json()["message"]
    # Nor can a session be made directly with such a flow: the same 400, nothing stored.
    created = server.post(
        "/api/sessions",
        {"user_id": user_id, "session": {"user_id": user_id, "flow_config": body["flow_config"]}},
    )
    assert created.status_code == 400 and "credential" in created.json()["message"]
    listed = server.get("/api/sessions", user_id=user_id)
    assert listed.json()["data"] == []
    seen += [created.text, listed.text]
    assert llm.arrived == 0
    for text in seen:
        assert LEAKED not in text
    assert LEAKED.encode() not in stored_bytes(server)
    assert LEAKED not in server.log()
    assert server.get("/api/messages", user_id=user_id, session_id="userinfo").status_code == 404


# The allowlist in a shared server ----------------------------------------------------------


@dataclass
class TokenServer:
    server: RunningServer
    workdir: Path
    ada: str
    bob: str
    seen: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, key: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"}
        r = requests.request(method, self.server.url + path, headers=headers, timeout=120, **kwargs)
        self.seen.append(r.text)
        return r

    def ask(
        self, key: str, text: str, flow: dict[str, Any] | None, session_id: str | None = None
    ) -> requests.Response:
        message: dict[str, Any] = {"role": "user", "content": text}
        if session_id:
            message["session_id"] = session_id
        body: dict[str, Any] = {"message": message}
        if flow is not None:
            body["flow_config"] = flow
        return self.call("POST", "/api/messages", key, json=body)


@pytest.fixture(scope="module")
def shared(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    workdir = tmp_path_factory.mktemp("outbound-token")
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    ada = create_key(workdir, "ada@example.com")
    bob = create_key(workdir, "bob@example.com")
    srv = start_server(workdir, env=env)
    yield TokenServer(srv, workdir, ada, bob)
    srv.stop()


def test_a_shared_server_calls_only_allowed_endpoints(shared, llm, spies):
    inside = spy(spies, body=b'{"error": {"message": "you reached me"}}', status=500)
    for base_url in (f"{inside.url}/v1", "http://10.0.0.1:8000/v1", "http://169.254.169.254/latest"):
        entry = {"base_url": base_url, "api_key": "sk-mine-0123456789"}
        r = shared.ask(shared.ada, "hi", flow_with(entry), session_id="outside")
        assert r.status_code == 400, (base_url, r.text)
        assert (
            f"{ENTRY_FIELD}.base_url" in r.json()["message"]
            and "not an allowed endpoint" in r.json()["message"]
        )
    assert inside.requests == [] and llm.arrived == 0
    assert shared.call("GET", "/api/messages?session_id=outside", shared.ada).status_code == 404
    # The server's configured endpoint works, named or left out.
    llm.queue("Named. TERMINATE", "Default. TERMINATE")
    named = shared.ask(shared.ada, "hi", flow_with({"base_url": llm.base_url, "api_key": None}))
    assert named.status_code == 200, named.text
    default = shared.ask(shared.ada, "hi", flow_with({"api_key": None}))
    assert default.status_code == 200, default.text
    assert [s.authorization for s in llm.served] == [f"Bearer {SERVER_KEY}"] * 2


# What reaches the user of an endpoint's failure -------------------------------------------


def test_a_providers_error_body_never_reaches_the_user(server, llm, user_id, spies):
    noise = "<html><body>" + "<div>upstream trace line</div>" * 300 + "</body></html>"
    llm.queue(Reply(f"Incorrect API key provided: {PROVIDER_ECHO}.\n\x1b[31m{noise}", status=401))
    r = server.post("/api/messages", {"message": wf.message(user_id, "fail"), "flow_config": flow_with({})})
    assert r.status_code == 502, r.text
    message = r.json()["message"]
    reason = message.split("HTTP 401: ", 1)[1]
    assert reason.startswith("Incorrect API key provided: sk-***.") and len(reason) <= 200
    assert PROVIDER_ECHO not in r.text and "<div>" not in message and "\x1b" not in message
    assert PROVIDER_ECHO not in server.log() and PROVIDER_ECHO.encode() not in stored_bytes(server)

    # Not JSON at all: the status's name, nothing of the body.
    html = spy(
        spies,
        status=401,
        headers={"Content-Type": "text/html"},
        body=f"<h1>{PROVIDER_ECHO}</h1>{noise}".encode(),
    )
    r = server.post(
        "/api/messages",
        {
            "message": wf.message(user_id, "fail"),
            "flow_config": flow_with({"base_url": f"{html.url}/v1", "api_key": "x"}),
        },
    )
    assert r.status_code == 502, r.text
    assert r.json()["message"] == "the LLM endpoint failed: HTTP 401: Unauthorized"
    assert len(html.requests) == 1


def test_a_redirect_to_another_host_is_not_followed(server, llm, user_id, spies):
    elsewhere = spy(spies, body=json.dumps({"choices": []}).encode())
    bouncer = spy(spies, status=301, headers={"Location": f"{elsewhere.url}/v1/chat/completions"}, body=b"")
    body = {
        "message": wf.message(user_id, "follow me"),
        "flow_config": flow_with({"base_url": f"{bouncer.url}/v1", "api_key": "sk-mine-0123456789"}),
    }
    r = server.post("/api/messages", body)
    assert r.status_code == 502, r.text
    assert "HTTP 301" in r.json()["message"] and elsewhere.url not in r.json()["message"]
    assert len(bouncer.requests) == 1 and elsewhere.requests == []


# A provider that hangs -------------------------------------------------------------------------


def test_a_hanging_provider_costs_one_timeout_not_three(server, llm, user_id):
    llm.queue(Reply("far too late", delay=30))
    body = {"message": wf.message(user_id, "anyone?"), "flow_config": flow_with({}, timeout=2)}
    started = time.monotonic()
    r = server.post("/api/messages", body)
    elapsed = time.monotonic() - started
    assert r.status_code == 502, r.text
    assert "no answer in time" in r.json()["message"]
    assert llm.arrived == 1  # the SDK's retries would have made it 3
    assert elapsed < 4, elapsed


def test_a_call_with_several_endpoints_keeps_to_one_timeout(server, llm, user_id):
    """AutoGen tries a config_list's next entry when one times out: all of them share the call's time."""
    llm.queue(Reply("late", delay=30), Reply("late too", delay=30))
    agent = wf.assistant()
    agent["config"]["llm_config"].update(
        {"timeout": 2, "config_list": [{"model": "gpt-4o-mini"}, {"model": "gpt-4o"}]}
    )
    started = time.monotonic()
    r = server.post(
        "/api/messages", {"message": wf.message(user_id, "anyone?"), "flow_config": wf.autonomous(agent)}
    )
    elapsed = time.monotonic() - started
    assert r.status_code == 502, r.text
    assert llm.arrived == 1 and elapsed < 4, (llm.arrived, elapsed)


# Stored credentials ---------------------------------------------------------------------------


def test_a_stored_credential_serves_the_session_and_its_follow_ups(shared, llm):
    team = shared
    stored = team.call(
        "POST",
        "/api/credentials",
        team.ada,
        json={"name": "my-openai", "base_url": llm.base_url, "api_key": CRED_KEY},
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["data"]["hint"] == "sk-…2f9a"
    again = team.call(
        "POST", "/api/credentials", team.ada, json={"name": "my-openai", "api_key": "sk-other-0123456789"}
    )
    assert again.status_code == 400 and "already" in again.json()["message"]
    elsewhere = team.call(
        "POST",
        "/api/credentials",
        team.ada,
        json={"name": "evil", "base_url": "http://10.1.2.3/v1", "api_key": CRED_KEY},
    )
    assert elsewhere.status_code == 400 and "base_url" in elsewhere.json()["message"]
    listed = team.call("GET", "/api/credentials", team.ada).json()["data"]
    assert [(c["name"], c["base_url"], c["hint"]) for c in listed] == [
        ("my-openai", llm.base_url, "sk-…2f9a")
    ]

    # Used by name; the follow-up without flow_config uses it again.
    llm.queue("First. TERMINATE", "Second. TERMINATE")
    flow = flow_with({"credential": "my-openai"})
    first = team.ask(team.ada, "hello", flow)
    assert first.status_code == 200, first.text
    session_id = first.json()["metadata"]["session_id"]
    follow_up = team.ask(team.ada, "and again", None, session_id=session_id)
    assert follow_up.status_code == 200, follow_up.text
    assert [s.authorization for s in llm.served] == [f"Bearer {CRED_KEY}"] * 2
    assert follow_up.json()["message"] == "Second."

    # Both a key and a credential, or a name nobody stored: a 400 before anything is stored.
    both = team.ask(
        team.ada, "x", flow_with({"credential": "my-openai", "api_key": "sk-mine-0123456789"}), "both"
    )
    assert both.status_code == 400 and "api_key or credential" in both.json()["message"]
    unknown = team.ask(team.ada, "x", flow_with({"credential": "nope"}), "unknown")
    assert unknown.status_code == 400 and f"{ENTRY_FIELD}.credential" in unknown.json()["message"]
    for sid in ("both", "unknown"):
        assert team.call("GET", f"/api/messages?session_id={sid}", team.ada).status_code == 404

    # Another user sees nothing of it, and cannot use or delete it: as if it did not exist.
    assert team.call("GET", "/api/credentials", team.bob).json()["data"] == []
    theirs = team.ask(team.bob, "use ada's key", flow)
    assert theirs.status_code == 400 and "no stored credential named 'my-openai'" in theirs.json()["message"]
    assert team.call("DELETE", "/api/credentials/my-openai", team.bob).status_code == 404
    assert len(llm.served) == 2

    # Published: neither the key nor the credential's name.
    published = team.call(
        "POST",
        "/api/sessions/publish",
        team.ada,
        json={"session": {"session_id": session_id}, "tags": ["creds"]},
    )
    assert published.status_code == 200, published.text
    gallery = team.call("GET", "/api/gallery?tag=creds", team.ada)
    for text in (published.text, gallery.text):
        assert CRED_KEY not in text and "my-openai" not in text

    # Deleted: gone from the list, and the session's next follow-up says which field names it.
    assert team.call("DELETE", "/api/credentials/my-openai", team.ada).status_code == 200
    assert team.call("GET", "/api/credentials", team.ada).json()["data"] == []
    after = team.ask(team.ada, "once more", None, session_id=session_id)
    assert after.status_code == 400 and f"{ENTRY_FIELD}.credential" in after.json()["message"]
    assert len(llm.served) == 2

    # The key was never stored in clear, logged or returned.
    assert CRED_KEY.encode() not in stored_bytes(team.server) and CRED_KEY[-20:].encode() not in stored_bytes(
        team.server
    )
    assert CRED_KEY not in team.server.log()
    assert all(CRED_KEY not in text for text in team.seen)


def test_the_generated_secret_is_private_and_kept_across_restarts(llm_server, llm, tmp_path, user_id):
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(tmp_path, env=env)
    try:
        r = srv.post("/api/credentials", {"user_id": user_id, "name": "mine", "api_key": CRED_KEY})
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
    secret = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    srv = start_server(tmp_path, env=env)
    try:
        llm.queue("Still mine. TERMINATE")
        body = {"message": wf.message(user_id, "hi"), "flow_config": flow_with({"credential": "mine"})}
        r = srv.post("/api/messages", body)
        assert r.status_code == 200, r.text
        assert llm.served[-1].authorization == f"Bearer {CRED_KEY}"
    finally:
        srv.stop()
    assert CRED_KEY.encode() not in secret.read_bytes()


def test_bad_credential_input_is_a_clear_400_never_a_500(server, user_id):
    def store(body: Any) -> requests.Response:
        return server.post("/api/credentials", body)

    ok = {"user_id": user_id, "name": "k", "api_key": "sk-mine-0123456789"}
    cases = [
        ({**ok, "name": "../etc"}, "name"),
        ({**ok, "name": ""}, "name"),
        ({k: v for k, v in ok.items() if k != "api_key"}, "api_key"),
        ({**ok, "api_key": ""}, "api_key"),
        ({**ok, "api_key": "sk-with space-0123"}, "api_key"),
        ({**ok, "api_key": "x" * 5000}, "api_key"),
        ({**ok, "key": "sk-typo-0123456789"}, "key"),
        ({**ok, "base_url": "ftp://example.com"}, "base_url"),
        ({**ok, "base_url": f"http://u:{LEAKED}@127.0.0.1:1/v1"}, "base_url"),
        ({**ok, "base_url": f"{server.url}/api"}, "base_url"),
        ([1, 2], "body"),
    ]
    for body, named in cases:
        r = store(body)
        assert r.status_code == 400, (body if named != "api_key" else named, r.text)
        assert named in r.json()["message"], r.text
        assert LEAKED not in r.text
    r = server.http.post(
        server.url + "/api/credentials", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert server.get("/api/credentials").status_code == 400  # auth.mode none: whose?
    assert server.get("/api/credentials", user_id=user_id).json()["data"] == []
    r = server.http.delete(server.url + "/api/credentials/nothing", params={"user_id": user_id})
    assert r.status_code == 404
    assert LEAKED not in server.log()


def test_a_session_cannot_store_a_workflow_that_calls_the_server_itself(server, llm, user_id):
    own = server.url + "/api/messages/delete"
    flow = flow_with({"base_url": own})
    r = server.post(
        "/api/sessions", {"user_id": user_id, "session": {"user_id": user_id, "flow_config": flow}}
    )
    assert r.status_code == 400 and "this server itself" in r.json()["message"]
    assert server.get("/api/sessions", user_id=user_id).json()["data"] == []


def test_an_endpoint_that_answers_no_chat_completion_is_a_502(server, llm, user_id):
    """An allowed endpoint that answers 200 with something else (a web page, an empty JSON
    object) is the endpoint's failure: a 502 that says so, never a 500."""
    for body in ("<html>not an LLM</html>", "{}"):
        llm.raw_reply = body
        r = server.post(
            "/api/messages",
            {"message": wf.message(user_id, "hi"), "flow_config": wf.autonomous(wf.assistant())},
        )
        assert r.status_code == 502, r.text
        assert "not an OpenAI chat completion" in r.json()["message"]
    llm.raw_reply = None


def test_every_spelling_of_this_server_is_refused(server, llm, user_id):
    """127.0.0.1 has many names; none of them lets a workflow call the server's own API."""
    port = server.url.rsplit(":", 1)[1]
    spellings = [
        f"http://2130706433:{port}/v1",
        f"http://0x7f000001:{port}/v1",
        f"http://0177.0.0.1:{port}/v1",
        f"http://127.1:{port}/v1",
        f"http://[::ffff:127.0.0.1]:{port}/v1",
        f"http://LOCALHOST:{port}/v1",
        f"http://localhost.:{port}/v1",
        f"http://0.0.0.0:{port}/v1",
        f"http://127.0.0.1:{port}/api/messages/delete?",
    ]
    for url in spellings:
        body = {"message": wf.message(user_id, "call yourself"), "flow_config": flow_with({"base_url": url})}
        r = server.post("/api/messages", body)
        assert r.status_code == 400, (url, r.status_code, r.text)
    assert server.get("/api/sessions", user_id=user_id).json()["data"] == []
