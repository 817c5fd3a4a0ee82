"""Sign-in with API keys (`auth.mode: token`): every endpoint tried without credentials, with bad
and revoked keys, and by another user; an admin acting for a user; keys never stored, logged or
returned. All through the real server, with keys made by `python -m autobots keys create`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import cli, create_key
from tests.support.scripted_llm import Reply, ScriptedLLM
from tests.support.server import RunningServer, start_server
from tests.support.sse import read_events


@dataclass
class Team:
    server: RunningServer
    workdir: Path
    alice: str
    bob: str
    admin: str
    seen: list[str]  # every response body, to check that no key ever comes back

    def call(self, method: str, path: str, key: str | None = None, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        r = requests.request(method, self.server.url + path, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]
        self.seen.append(r.text)
        return r


@pytest.fixture(scope="module")
def team(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    workdir = tmp_path_factory.mktemp("token")
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    alice = create_key(workdir, "alice@example.com", name="alice laptop")
    bob = create_key(workdir, "bob@example.com")
    admin = create_key(workdir, "root@example.com", admin=True)
    srv = start_server(workdir, env=env)
    yield Team(srv, workdir, alice, bob, admin, [])
    srv.stop()


FLOW = wf.autonomous(wf.assistant())


def ask(team: Team, key: str, text: str, session_id: str | None = None) -> requests.Response:
    message = {"role": "user", "content": text, **({"session_id": session_id} if session_id else {})}
    return team.call("POST", "/api/messages", key, json={"message": message, "flow_config": FLOW})


def test_keys_look_like_keys_and_list_without_the_key(team: Team) -> None:
    assert team.alice.startswith("autobots_sk_") and len(team.alice) >= len("autobots_sk_") + 40
    out = cli(team.workdir, "keys", "list")
    assert out.returncode == 0, out.stderr
    assert "alice@example.com" in out.stdout and "alice laptop" in out.stdout and "(admin)" in out.stdout
    for key in (team.alice, team.bob, team.admin):
        assert key not in out.stdout and key[12:30] not in out.stdout


def test_without_credentials_only_the_page_health_and_gallery_answer(team: Team) -> None:
    for path in ("/", "/api/health", "/api/gallery", "/api/auth", "/api/openapi.json"):
        assert team.call("GET", path).status_code == 200, path
    protected = [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/messages?session_id=x"),
        ("POST", "/api/messages"),
        ("POST", "/api/messages/delete"),
        ("POST", "/api/sessions/publish"),
        ("POST", "/api/cleardb"),
        ("POST", "/api/runs"),
        ("GET", "/api/runs/x"),
        ("GET", "/api/runs/x/events"),
        ("POST", "/api/runs/x/cancel"),
        ("POST", "/api/runs/x/input"),
        ("GET", "/api/sessions/x/files/a.txt"),
        ("GET", "/api/me"),
        ("GET", "/api/examples"),
        ("DELETE", "/api/gallery/x"),
        ("GET", "/api/credentials"),
        ("POST", "/api/credentials"),
        ("DELETE", "/api/credentials/x"),
    ]
    for method, path in protected:
        r = team.call(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert r.json()["status"] is False


def test_bad_and_revoked_keys_are_401(team: Team) -> None:
    for bad in ("nope", "autobots_sk_" + "A" * 43, team.alice[:-1] + ("B" if team.alice[-1] != "B" else "C")):
        r = team.call("GET", "/api/sessions", bad)
        assert r.status_code == 401 and "not valid" in r.json()["message"]
        assert team.call("GET", "/api/sessions", headers={"X-API-Key": bad}).status_code == 401
    doomed = create_key(team.workdir, "carol@example.com")
    assert team.call("GET", "/api/sessions", doomed).status_code == 200
    assert team.call("GET", "/api/sessions", headers={"X-API-Key": doomed}).status_code == 200
    out = cli(team.workdir, "keys", "revoke", doomed)
    assert out.returncode == 0 and "revoked" in out.stdout and doomed not in out.stdout
    r = team.call("GET", "/api/sessions", doomed)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_user_id_may_be_left_out_and_must_be_the_principal(team: Team, llm: ScriptedLLM) -> None:
    llm.queue("4 TERMINATE")
    r = ask(team, team.alice, "2+2?")
    assert r.status_code == 200, r.text
    saved = r.json()["data"]
    assert saved["user_id"] == "alice@example.com"
    sid = saved["session_id"]
    listed = team.call("GET", "/api/sessions", team.alice).json()["data"]
    assert [s["session_id"] for s in listed] == [sid]
    same = team.call("GET", "/api/sessions?user_id=alice@example.com", team.alice)
    assert same.status_code == 200 and len(same.json()["data"]) == 1
    r = team.call("GET", "/api/sessions?user_id=bob@example.com", team.alice)
    assert r.status_code == 403 and "bob@example.com" in r.json()["message"]
    body = {"message": {**wf.message("bob@example.com", "as bob"), "session_id": sid}, "flow_config": FLOW}
    assert team.call("POST", "/api/messages", team.alice, json=body).status_code == 403
    me = team.call("GET", "/api/me", team.alice).json()["data"]
    assert me["user_id"] == "alice@example.com" and me["is_admin"] is False
    assert me["today"]["runs"] >= 1 and me["today"]["llm_calls"] >= 1 and me["today"]["total_tokens"] > 0


def test_another_users_resources_answer_like_missing_ones(team: Team, llm: ScriptedLLM) -> None:
    llm.queue("hello TERMINATE")
    saved = ask(team, team.alice, "private question").json()["data"]
    sid, answer_id, run_id = saved["session_id"], saved["msg_id"], saved["metadata"]["run_id"]
    published = team.call(
        "POST", "/api/sessions/publish", team.alice, json={"session": {"session_id": sid}, "tags": ["t"]}
    )
    assert published.status_code == 200, published.text
    gallery_id = published.json()["data"]["id"]

    def bob(method: str, path: str, **kw: object) -> requests.Response:
        return team.call(method, path, team.bob, **kw)

    missing = {
        "messages": bob("GET", f"/api/messages?session_id={sid}"),
        "delete message": bob("POST", "/api/messages/delete", json={"msg_id": answer_id, "session_id": sid}),
        "publish": bob("POST", "/api/sessions/publish", json={"session": {"session_id": sid}}),
        "cleardb": bob("POST", "/api/cleardb", json={"session_id": sid}),
        "run": bob("GET", f"/api/runs/{run_id}"),
        "events": bob("GET", f"/api/runs/{run_id}/events"),
        "cancel": bob("POST", f"/api/runs/{run_id}/cancel"),
        "input": bob("POST", f"/api/runs/{run_id}/input", json={"text": "x"}),
        "file": bob("GET", f"/api/sessions/{sid}/files/answer.txt"),
    }
    for what, r in missing.items():
        assert r.status_code == 404, (what, r.status_code, r.text)
    # The same answers as for ids that exist nowhere: nothing tells Bob that Alice's ids exist.
    assert bob("GET", "/api/runs/no-such-run").json()["message"] == missing["run"].json()["message"].replace(
        run_id, "no-such-run"
    )
    assert sid not in str(bob("GET", "/api/sessions").json()["data"])
    # Session ids are per user: Bob asking "in" Alice's session id gets a session of his own.
    llm.queue("yours TERMINATE")
    own = ask(team, team.bob, "let me in", session_id=sid)
    assert own.status_code == 200 and own.json()["data"]["user_id"] == "bob@example.com"
    assert [m["content"] for m in bob("GET", f"/api/messages?session_id={sid}").json()["data"]] == [
        "let me in",
        "yours",
    ]
    # Alice's things are untouched by all of that, and the gallery is for everyone.
    messages = team.call("GET", f"/api/messages?session_id={sid}", team.alice).json()["data"]
    assert [m["msg_id"] for m in messages][-1] == answer_id
    assert team.call("GET", f"/api/runs/{run_id}", team.alice).json()["data"]["status"] == "completed"
    for key in (team.bob, None):
        item = team.call("GET", f"/api/gallery?gallery_id={gallery_id}", key)
        assert item.status_code == 200 and item.json()["data"]["session"]["session_id"] == sid


def test_a_run_is_streamed_and_cancelled_only_by_its_owner(team: Team, llm: ScriptedLLM) -> None:
    llm.queue(Reply("slow answer TERMINATE", delay=3.0))
    body = {"message": {"role": "user", "content": "take your time"}, "flow_config": FLOW}
    started = team.call("POST", "/api/runs", team.alice, json=body)
    assert started.status_code == 202, started.text
    run_id = started.json()["data"]["run_id"]
    assert team.call("POST", f"/api/runs/{run_id}/cancel", team.bob).status_code == 404
    assert team.call("GET", f"/api/runs/{run_id}", team.alice).json()["data"]["status"] in (
        "queued",
        "running",
    )
    r = team.call("POST", f"/api/runs/{run_id}/cancel", team.alice)
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    url = f"{team.server.url}/api/runs/{run_id}/events"
    events = list(read_events(url, headers={"Authorization": f"Bearer {team.alice}"}))
    assert events[-1].type == "status" and events[-1].data["status"] == "cancelled"
    with pytest.raises(requests.HTTPError):
        list(read_events(url, headers={"Authorization": f"Bearer {team.bob}"}))


def test_an_admin_acts_for_a_user_by_naming_them(team: Team, llm: ScriptedLLM) -> None:
    llm.queue("done TERMINATE")
    saved = ask(team, team.alice, "for the admin").json()["data"]
    sid, run_id = saved["session_id"], saved["metadata"]["run_id"]
    # Without naming anyone the admin sees their own (empty) data, never Alice's.
    assert sid not in str(team.call("GET", "/api/sessions", team.admin).json()["data"])
    assert team.call("GET", f"/api/runs/{run_id}", team.admin).status_code == 404
    listed = team.call("GET", "/api/sessions?user_id=alice@example.com", team.admin)
    assert listed.status_code == 200 and sid in str(listed.json()["data"])
    r = team.call("GET", f"/api/messages?user_id=alice@example.com&session_id={sid}", team.admin)
    assert r.status_code == 200 and r.json()["data"][0]["content"] == "for the admin"
    r = team.call("GET", f"/api/runs/{run_id}?user_id=alice@example.com", team.admin)
    assert r.status_code == 200 and r.json()["data"]["user_id"] == "alice@example.com"
    assert team.call("GET", "/api/me", team.admin).json()["data"]["is_admin"] is True


def test_keys_are_nowhere_but_in_their_owners_hands(team: Team) -> None:
    time.sleep(0.5)  # the event writer stores the last events a few ms after a run
    stored = b"".join(p.read_bytes() for p in team.workdir.glob("database.sqlite*"))
    log = team.server.log()
    for key in (team.alice, team.bob, team.admin):
        secret = key[len("autobots_sk_") :]
        assert secret.encode() not in stored
        assert secret not in log
        assert not any(secret in body for body in team.seen)


def test_the_page_sign_in_cookie_works_only_from_the_page_itself(team: Team) -> None:
    signed = team.call("POST", "/api/auth/session", team.alice)
    assert signed.status_code == 200 and signed.json()["data"]["user"]["user_id"] == "alice@example.com"
    cookie = signed.cookies.get("autobots_session")
    assert cookie and team.alice not in signed.headers["Set-Cookie"]
    set_cookie = signed.headers["Set-Cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    jar = {"autobots_session": cookie}
    own = team.server.url
    body = {"session": {"flow_config": FLOW}}
    assert team.call("GET", "/api/sessions", cookies=jar).status_code == 200
    assert team.call("GET", "/api/auth", cookies=jar).json()["data"]["user"]["user_id"] == "alice@example.com"
    refused = {
        "other origin": team.call(
            "POST", "/api/sessions", cookies=jar, json=body, headers={"Origin": "http://127.0.0.1:1"}
        ),
        "no origin": team.call("POST", "/api/sessions", cookies=jar, json=body),
        "cross-site fetch": team.call(
            "GET", "/api/sessions", cookies=jar, headers={"Sec-Fetch-Site": "same-site"}
        ),
    }
    for what, r in refused.items():
        assert r.status_code == 403, (what, r.text)
    before = len(team.call("GET", "/api/sessions", team.alice).json()["data"])
    ok = team.call("POST", "/api/sessions", cookies=jar, json=body, headers={"Origin": own})
    assert ok.status_code == 200, ok.text
    assert len(team.call("GET", "/api/sessions", team.alice).json()["data"]) == before + 1
    # Signing out ends the cookie everywhere at once.
    out = team.call("DELETE", "/api/auth/session", cookies=jar, headers={"Origin": own})
    assert out.status_code == 200
    assert team.call("GET", "/api/sessions", cookies=jar).status_code == 401


def test_revoking_a_key_ends_its_page_sign_ins(team: Team) -> None:
    key = create_key(team.workdir, "dave@example.com")
    cookie = team.call("POST", "/api/auth/session", key).cookies["autobots_session"]
    assert team.call("GET", "/api/me", cookies={"autobots_session": cookie}).status_code == 200
    assert cli(team.workdir, "keys", "revoke", key).returncode == 0
    assert team.call("GET", "/api/me", cookies={"autobots_session": cookie}).status_code == 401
    assert team.call("POST", "/api/auth/session", "autobots_sk_wrong").status_code == 401
