"""Signing in on the chat page, in a real headless Chromium, against a real server that signs
people in (`auth.mode: token`, keys made with `python -m autobots keys create`) and the scripted
LLM: the sign-in form, the user's name and Sign out in the header, a chat as that user, a wrong
key, the key kept nowhere (storage, cookies, URLs, logs), another origin's page refused by the
server's Origin check, a reload, a sign-in that ends under the page, and the oidc wording."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.browser_support import ChatPage, launch_browser, new_chat_page, two_turn_workflow
from tests.support import workflows as wf
from tests.support.auth import as_user, create_key
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server

SERVER_KEY = "sk-test-SIGNIN-SERVERSECRET-0123"
COOKIE = "autobots_session"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signin")


@pytest.fixture(scope="module")
def server(browser: Any, workdir: Path, llm_server: ScriptedLLM) -> Iterator[RunningServer]:
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    srv = start_server(workdir, env=env)
    yield srv
    srv.stop()


@pytest.fixture
def user(workdir: Path) -> tuple[str, str]:
    """A new user and its API key."""
    name = f"signin-{uuid.uuid4().hex[:8]}@example.com"
    return name, create_key(workdir, name)


@pytest.fixture
def chat(browser: Any, server: RunningServer, llm: ScriptedLLM) -> Iterator[ChatPage]:
    page = new_chat_page(browser, server, user_id=None)
    yield page
    page.page.context.close()
    # A refused call is logged by Chromium itself ("... status of 401"); nothing else may be.
    unexpected = [e for e in page.errors if "status of 401" not in e and "status of 403" not in e]
    assert not unexpected, unexpected


# helpers ------------------------------------------------------------------------------------


def sign_in(chat: ChatPage, key: str) -> None:
    page = chat.page
    dialog = page.locator("#signin-dialog")
    dialog.wait_for(state="visible")
    page.locator("#signin-secret").fill(key)
    page.locator("#signin-submit").click()
    dialog.wait_for(state="hidden")


def page_fetch(chat: ChatPage, path: str, method: str = "GET") -> dict[str, Any]:
    """A fetch from the page's own origin, as its scripts make them (the cookie goes along)."""
    return chat.page.evaluate(
        """async ([path, method]) => {
          const r = await fetch(path, {method, headers: {Accept: "application/json"}});
          return {status: r.status, body: await r.json().catch(() => null)};
        }""",
        [path, method],
    )


def session_cookie(chat: ChatPage) -> dict[str, Any] | None:
    return next((c for c in chat.page.context.cookies() if c["name"] == COOKIE), None)


def api_sessions(server: RunningServer, key: str) -> list[dict[str, Any]]:
    r = requests.get(server.url + "/api/sessions", headers=as_user(server, key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


# signing in, chatting, signing out ----------------------------------------------------------


def test_sign_in_chat_and_sign_out(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM, user: tuple[str, str]
) -> None:
    name, key = user
    page = chat.open().page
    dialog = page.locator("#signin-dialog")
    dialog.wait_for(state="visible")
    assert page.locator("label[for=signin-secret]").inner_text() == "API key"
    assert page.locator("#signin-secret").get_attribute("type") == "password"
    assert not page.locator("#account").is_visible()
    page.keyboard.press("Escape")  # cannot be dismissed without signing in
    assert dialog.is_visible()

    sign_in(chat, key)
    account = page.locator("#account")
    account.wait_for()
    assert page.locator("#account-name").inner_text() == name
    assert page.locator("#sign-out").is_visible()
    assert page.locator("#user-id-label").inner_text() == name
    assert not page.locator("#change-user").is_visible()  # the user is the signed-in one
    assert page.locator(".toast", has_text=f"Signed in as {name}").count() == 1

    # A chat as that user: the first agent message streams in while the run goes on.
    llm.queue(Reply("First part, no end yet.", delay=0.3), Reply("Second part. TERMINATE", delay=2.5))
    chat.paste_workflow(two_turn_workflow())
    chat.send("hello as a signed-in user")
    live = chat.live_run()
    live.wait_for()
    live.locator(".step[data-sender=primary_assistant]", has_text="First part").wait_for()
    run_id = live.get_attribute("data-run-id")
    assert run_id
    status = requests.get(f"{server.url}/api/runs/{run_id}", headers=as_user(server, key), timeout=30)
    assert status.json()["data"]["status"] in ("queued", "running")  # streamed, not at the end
    answer = chat.wait_for_answer()
    assert "Second part." in answer.inner_text()
    session_id = chat.current_session_id()
    assert [s["session_id"] for s in api_sessions(server, key)] == [session_id]
    assert page.locator(f".session-item[data-session-id='{session_id}']").count() == 1

    # Sign out: the form is back, the page forgot the chats, the cookie no longer works.
    page.locator("#sign-out").click()
    dialog.wait_for(state="visible")
    assert page.locator("#signin-secret").input_value() == ""
    assert not page.locator("#account").is_visible()
    assert page.locator(".session-item").count() == 0
    assert page.locator("#thread article").count() == 0
    assert page.evaluate("location.hash") in ("", "#/")
    assert session_cookie(chat) is None
    refused = page_fetch(chat, "/api/sessions")
    assert refused["status"] == 401, refused
    assert page_fetch(chat, "/api/auth")["body"]["data"]["user"] is None


def test_a_wrong_key_shows_the_servers_message_and_signs_nobody_in(
    chat: ChatPage, server: RunningServer, user: tuple[str, str]
) -> None:
    _, key = user
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    expected = requests.post(
        server.url + "/api/auth/session", headers={"Authorization": f"Bearer {wrong}"}, timeout=30
    ).json()["message"]
    assert "not valid" in expected  # why it failed, not a generic "send a key"
    page = chat.open().page
    page.locator("#signin-dialog").wait_for(state="visible")

    page.locator("#signin-submit").click()  # empty: nothing is sent
    assert page.locator("#signin-error").inner_text() == "Paste your API key."

    page.locator("#signin-secret").fill(wrong)
    page.locator("#signin-submit").click()
    error = page.locator("#signin-error")
    error.filter(has_text=expected).wait_for()
    assert error.inner_text() == expected
    assert page.locator("#signin-dialog").is_visible()
    assert page.locator("#signin-secret").input_value() == ""  # dropped, even when refused
    assert page.locator("#signin-secret").get_attribute("aria-invalid") == "true"
    assert not page.locator("#account").is_visible()
    assert session_cookie(chat) is None
    assert page_fetch(chat, "/api/auth")["body"]["data"]["user"] is None
    assert page_fetch(chat, "/api/sessions")["status"] == 401

    # The right key after a wrong one works.
    sign_in(chat, key)
    page.locator("#account").wait_for()
    assert page.locator("#signin-error").inner_text() == ""


def test_the_key_is_kept_nowhere(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM, user: tuple[str, str]
) -> None:
    name, key = user
    urls: list[str] = []
    console: list[str] = []
    chat.page.on("request", lambda request: urls.append(request.url))
    chat.page.on("console", lambda msg: console.append(msg.text))
    page = chat.open().page
    sign_in(chat, key)
    page.locator("#account").wait_for()
    llm.responder = lambda _body: "Done. TERMINATE"
    chat.choose_example("General assistant")
    chat.send("anything")
    chat.wait_for_answer()

    def check() -> None:
        stored = page.evaluate(
            """() => ({
              local: Object.entries(localStorage),
              session: Object.entries(sessionStorage),
              cookie: document.cookie,
              url: location.href,
              history: history.state,
              inputs: [...document.querySelectorAll("input, textarea")].map((el) => el.value),
            })"""
        )
        assert key not in json.dumps(stored), stored
        assert stored["cookie"] == ""  # the sign-in cookie is HttpOnly: scripts cannot read it
        assert key not in page.url

    check()
    cookie = session_cookie(chat)
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] != key
    page.reload()
    page.locator("#account-name", has_text=name).wait_for()
    check()
    assert urls and not [u for u in urls if key in u]
    assert not [m for m in console if key in m]
    assert key not in server.log()


# another origin ---------------------------------------------------------------------------


class _OtherOrigin:
    """A page on 127.0.0.1 at another port: the same *site* as the server, another origin."""

    def __init__(self) -> None:
        self.html = b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(outer.html)))
                self.end_headers()
                self.wfile.write(outer.html)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _OtherOrigin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


ATTACK = """<!doctype html><title>another origin</title><script>
const SERVER = %(server)s;
window.results = {};
(async () => {
  try {
    const r = await fetch(SERVER + "/api/sessions", {
      method: "POST", credentials: "include", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(%(session)s),
    });
    results.json = r.status;
  } catch (err) {
    results.json = "failed: " + err;
  }
  // A "simple" request needs no CORS preflight, so the browser does send it, with the cookie
  // (same site): only the server's Origin check stands between it and the user's run.
  try {
    await fetch(SERVER + "/api/runs/" + %(run_id)s + "/cancel", {method: "POST", mode: "no-cors", credentials: "include"});
    results.cancel = "sent";
  } catch (err) {
    results.cancel = "failed: " + err;
  }
  results.done = true;
})();
</script>"""


def test_another_origins_page_cannot_act_with_the_sign_in(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM, user: tuple[str, str]
) -> None:
    name, key = user
    page = chat.open().page
    sign_in(chat, key)
    page.locator("#account").wait_for()
    assert page_fetch(chat, "/api/me")["body"]["data"]["user_id"] == name  # the cookie works here

    # A run of the user's, going on while the other page tries to stop it.
    llm.responder = lambda _body: Reply("Not stopped. TERMINATE", delay=4.0)
    flow = wf.autonomous(wf.assistant())
    started = requests.post(
        server.url + "/api/runs",
        json={"message": {"role": "user", "content": "keep going"}, "flow_config": flow},
        headers=as_user(server, key),
        timeout=30,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["data"]["run_id"]
    before = {s["session_id"] for s in api_sessions(server, key)}
    evil_session = str(uuid.uuid4())
    body = {"session": {"session_id": evil_session, "name": "made elsewhere", "flow_config": flow}}

    with _OtherOrigin() as other:
        other.html = (
            ATTACK
            % {"server": json.dumps(server.url), "session": json.dumps(body), "run_id": json.dumps(run_id)}
        ).encode()
        evil = page.context.new_page()  # the same browser, signed in on the server
        answers: dict[str, Any] = {}
        evil.on("response", lambda r: answers.setdefault(r.url, r) if r.url.startswith(server.url) else None)
        evil.goto(other.url + "/")
        evil.wait_for_function("window.results && window.results.done === true")
        results = evil.evaluate("window.results")
        evil.wait_for_timeout(200)  # Playwright delivers the network events
        cancel = answers.get(f"{server.url}/api/runs/{run_id}/cancel")
        assert cancel is not None, (results, list(answers))
        status = cancel.status
        evil.close()

    # The JSON POST failed in the browser (its preflight is not allowed) or was refused.
    assert results["json"] == 403 or str(results["json"]).startswith("failed"), results
    # The cancel did reach the server, with the cookie (the same site), and the server refused it:
    # 403, the Origin check; without the cookie it would be 401 ("credentials required").
    assert results["cancel"] == "sent", results
    assert status == 403, status
    log = server.log()
    assert f"method=POST path=/api/runs/{run_id}/cancel status=403" in log  # its request line

    final = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        final = requests.get(
            f"{server.url}/api/runs/{run_id}", headers=as_user(server, key), timeout=30
        ).json()
        if final["data"]["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert final and final["data"]["status"] == "completed", final
    after = {s["session_id"] for s in api_sessions(server, key)}
    assert after == before and evil_session not in after
    # The page itself still works with the same sign-in.
    assert page_fetch(chat, "/api/sessions")["status"] == 200


# reloads, and a sign-in that ends ---------------------------------------------------------


def test_a_reload_keeps_the_sign_in_and_sign_out_ends_it_for_good(
    chat: ChatPage, server: RunningServer, user: tuple[str, str]
) -> None:
    name, key = user
    made = requests.post(
        server.url + "/api/sessions",
        json={"session": {"name": "Made through the API", "flow_config": wf.autonomous(wf.assistant())}},
        headers=as_user(server, key),
        timeout=30,
    )
    assert made.status_code == 200, made.text
    page = chat.open().page
    sign_in(chat, key)
    page.locator(".session-link", has_text="Made through the API").wait_for()

    page.reload()
    page.locator("#account-name", has_text=name).wait_for()
    page.locator(".session-link", has_text="Made through the API").wait_for()
    assert not page.locator("#signin-dialog").is_visible()
    cookie = session_cookie(chat)
    assert cookie is not None

    page.locator("#sign-out").click()
    page.locator("#signin-dialog").wait_for(state="visible")
    page.reload()
    page.locator("#signin-dialog").wait_for(state="visible")
    assert not page.locator("#account").is_visible()
    assert page.locator(".session-item").count() == 0

    # The old cookie, put back, is dead on the server: sign-out ended that sign-in everywhere.
    page.context.add_cookies([cookie])
    page.reload()
    page.locator("#signin-dialog").wait_for(state="visible")
    assert page_fetch(chat, "/api/auth")["body"]["data"]["user"] is None
    assert page_fetch(chat, "/api/sessions")["status"] == 401
    stale = requests.get(server.url + "/api/sessions", cookies={COOKIE: cookie["value"]}, timeout=30)
    assert stale.status_code == 401


def test_a_sign_in_ended_elsewhere_brings_the_form_back(
    chat: ChatPage, server: RunningServer, llm: ScriptedLLM, user: tuple[str, str]
) -> None:
    name, key = user
    page = chat.open().page
    sign_in(chat, key)
    page.locator("#account").wait_for()
    page.locator(".picker-card").first.wait_for()
    cookie = session_cookie(chat)
    assert cookie is not None
    # Signed out from another tab (or the sign-in expired): the page learns it from a 401.
    ended = requests.delete(
        server.url + "/api/auth/session",
        cookies={COOKIE: cookie["value"]},
        headers={"Origin": server.url},
        timeout=30,
    )
    assert ended.status_code == 200, ended.text
    chat.choose_example("General assistant")
    chat.send("are you there?")
    page.locator("#signin-dialog").wait_for(state="visible")
    assert "sign-in has ended" in page.locator("#signin-notice").inner_text()
    assert not page.locator("#account").is_visible()
    assert api_sessions(server, key) == []

    llm.responder = lambda _body: "Back again. TERMINATE"
    sign_in(chat, key)
    page.locator("#account-name", has_text=name).wait_for()
    assert not page.locator("#signin-notice").is_visible()
    chat.choose_example("General assistant")
    chat.send("are you there now?")
    assert "Back again." in chat.wait_for_answer().inner_text()


# oidc: the same form, for a bearer token ---------------------------------------------------


def test_oidc_mode_asks_for_a_bearer_token(browser: Any, tmp_path: Path, llm_server: ScriptedLLM) -> None:
    env = {
        "AUTOBOTS_AUTH__MODE": "oidc",
        "AUTOBOTS_AUTH__OIDC__ISSUER": "http://127.0.0.1:9/realms/test",
        "AUTOBOTS_AUTH__OIDC__AUDIENCE": "autobots",
        "AUTOBOTS_AUTH__OIDC__JWKS_URL": "http://127.0.0.1:9/jwks",
        "AUTOBOTS_AUTH__OIDC__JWKS_TIMEOUT_S": "1",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    srv = start_server(tmp_path, env=env)
    chat = new_chat_page(browser, srv, user_id=None)
    try:
        page = chat.open().page
        page.locator("#signin-dialog").wait_for(state="visible")
        assert page.locator("label[for=signin-secret]").inner_text() == "Bearer token"
        assert "bearer token" in page.locator("#signin-text").inner_text()
        token = "not.a-valid.jwt"
        expected = requests.post(
            srv.url + "/api/auth/session", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()["message"]
        page.locator("#signin-secret").fill(token)
        page.locator("#signin-submit").click()
        page.locator("#signin-error").filter(has_text=expected).wait_for()
        assert page.locator("#signin-dialog").is_visible()
        assert not page.locator("#account").is_visible()
    finally:
        chat.page.context.close()
        srv.stop()
    unexpected = [e for e in chat.errors if "status of 401" not in e]
    assert not unexpected, unexpected


# auth.mode none: the user-id dialog, with the server's default user ------------------------


def test_mode_none_offers_the_servers_default_user_id(
    browser: Any, tmp_path: Path, llm_server: ScriptedLLM
) -> None:
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(tmp_path, env=env)
    chat = new_chat_page(browser, srv, user_id=None)
    try:
        info = requests.get(srv.url + "/api/auth", timeout=30).json()["data"]
        assert info["mode"] == "none" and info["user"] is None
        default = info["default_user_id"]
        assert default
        page = chat.open().page
        page.locator("#user-dialog").wait_for(state="visible")
        assert not page.locator("#signin-dialog").is_visible()
        assert not page.locator("#account").is_visible()
        assert page.locator("#user-input").get_attribute("placeholder") == default
        page.locator("#user-use-default", has_text=default).click()
        page.locator("#user-dialog").wait_for(state="hidden")
        assert page.locator("#user-id-label").inner_text() == default
        assert page.evaluate("localStorage.getItem('autobots.user_id')") == default
        page.reload()
        page.locator("#user-id-label", has_text=default).wait_for()
        assert not page.locator("#user-dialog").is_visible()
        # Another id can still be chosen; the default is offered again.
        page.locator("#change-user").click()
        page.locator("#user-input").fill("someone-else@example.com")
        page.locator("#user-input").press("Enter")
        page.locator("#user-id-label", has_text="someone-else@example.com").wait_for()
    finally:
        chat.page.context.close()
        srv.stop()
    assert not chat.errors, chat.errors
