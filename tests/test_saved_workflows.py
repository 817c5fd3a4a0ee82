"""Saved workflows (`/api/workflows`) on the real server: create, list, versions, update, delete,
export and import; names unique per user; another user's answers as a missing one; the built-ins
read-only and copyable; and runs and sessions recording the workflow id and version they ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer

EXAMPLES = Path(__file__).resolve().parent.parent / "src" / "web" / "examples"


def team(name: str, system: str = "You are primary_assistant.") -> dict[str, Any]:
    flow = wf.autonomous(wf.assistant(system_message=system))
    flow["name"] = name
    return flow


def save(server: RunningServer, user: str, flow: dict[str, Any]) -> dict[str, Any]:
    r = server.post("/api/workflows", {"user_id": user, "workflow": flow})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def listed(server: RunningServer, user: str, limit: int = 50) -> list[dict[str, Any]]:
    """Every item of the list, page after page."""
    items, cursor = [], None
    while True:
        params: dict[str, Any] = {"user_id": user, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        r = server.get("/api/workflows", **params)
        assert r.status_code == 200, r.text
        items += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def test_create_get_versions_update_delete(server: RunningServer, user_id: str) -> None:
    created = save(server, user_id, team("Researcher", "v1 prompt"))
    wid = created["id"]
    assert created["name"] == "Researcher" and created["version"] == 1 and not created["builtin"]
    assert created["workflow"]["agents"][1]["agent"]["config"]["system_message"] == "v1 prompt"

    r = server.http.put(
        f"{server.url}/api/workflows/{wid}",
        json={"user_id": user_id, "workflow": team("Researcher 2", "v2 prompt")},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["version"] == 2 and r.json()["data"]["name"] == "Researcher 2"

    newest = server.get(f"/api/workflows/{wid}", user_id=user_id).json()["data"]
    assert newest["version"] == newest["latest_version"] == 2
    assert newest["workflow"]["agents"][1]["agent"]["config"]["system_message"] == "v2 prompt"
    older = server.get(f"/api/workflows/{wid}", user_id=user_id, version=1).json()["data"]
    assert older["version"] == 1 and older["latest_version"] == 2 and older["name"] == "Researcher 2"
    assert older["workflow"]["agents"][1]["agent"]["config"]["system_message"] == "v1 prompt"
    assert server.get(f"/api/workflows/{wid}", user_id=user_id, version=3).status_code == 404

    mine = [w for w in listed(server, user_id) if not w["builtin"]]
    assert [(w["id"], w["name"], w["version"], w["type"]) for w in mine] == [
        (wid, "Researcher 2", 2, "autonomous")
    ]

    r = server.http.delete(f"{server.url}/api/workflows/{wid}", params={"user_id": user_id}, timeout=60)
    assert r.status_code == 200 and r.json()["data"] == {"id": wid}
    assert server.get(f"/api/workflows/{wid}", user_id=user_id).status_code == 404
    assert server.get(f"/api/workflows/{wid}", user_id=user_id, version=1).status_code == 404
    r = server.http.delete(f"{server.url}/api/workflows/{wid}", params={"user_id": user_id}, timeout=60)
    assert r.status_code == 404


def test_names_are_unique_per_user(server: RunningServer, user_id: str) -> None:
    first = save(server, user_id, team("Writer"))
    r = server.post("/api/workflows", {"user_id": user_id, "workflow": team("Writer")})
    assert r.status_code == 409 and r.json()["status"] is False
    assert "already have a workflow named 'Writer'" in r.json()["message"]
    other = save(server, user_id, team("Editor"))
    r = server.http.put(
        f"{server.url}/api/workflows/{other['id']}",
        json={"user_id": user_id, "workflow": team("Writer")},
        timeout=60,
    )
    assert r.status_code == 409 and first["id"] in r.json()["message"]
    # Saving a workflow again under its own name is a new version, not a clash.
    r = server.http.put(
        f"{server.url}/api/workflows/{first['id']}",
        json={"user_id": user_id, "workflow": team("Writer", "better")},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["data"]["version"] == 2
    # Another user may use the same name.
    assert save(server, "other-" + user_id, team("Writer"))["name"] == "Writer"
    r = server.post("/api/workflows", {"user_id": user_id, "workflow": team("   ")})
    assert r.status_code == 400 and "workflow.name" in r.json()["message"]


def test_another_users_workflow_answers_as_missing(server: RunningServer, user_id: str) -> None:
    wid = save(server, user_id, team("Private"))["id"]
    intruder = "intruder-" + user_id
    missing = server.get("/api/workflows/wf_doesnotexist", user_id=intruder)
    theirs = server.get(f"/api/workflows/{wid}", user_id=intruder)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"].replace(wid, "X") == missing.json()["message"].replace(
        "wf_doesnotexist", "X"
    )
    assert server.get(f"/api/workflows/{wid}/export", user_id=intruder).status_code == 404
    r = server.http.put(
        f"{server.url}/api/workflows/{wid}", json={"user_id": intruder, "workflow": team("Taken")}, timeout=60
    )
    assert r.status_code == 404
    r = server.http.delete(f"{server.url}/api/workflows/{wid}", params={"user_id": intruder}, timeout=60)
    assert r.status_code == 404
    assert server.post(f"/api/workflows/{wid}/copy", {"user_id": intruder}).status_code == 404
    assert all(w["builtin"] for w in listed(server, intruder))
    r = server.post("/api/messages", {"message": wf.message(intruder, "hi"), "workflow_id": wid})
    assert r.status_code == 404
    assert server.get(f"/api/workflows/{wid}", user_id=user_id).status_code == 200


def test_builtins_are_listed_readable_read_only_and_copyable(server: RunningServer, user_id: str) -> None:
    stems = sorted(p.stem for p in EXAMPLES.glob("*.json"))
    items = listed(server, user_id, limit=4)  # paged across the built-ins and into the user's own
    builtins = [w for w in items if w["builtin"]]
    assert sorted(w["id"] for w in builtins) == sorted(f"builtin:{s}" for s in stems)
    assert items[: len(builtins)] == builtins  # the built-ins first

    on_disk = json.loads((EXAMPLES / "autonomous.json").read_text())
    got = server.get("/api/workflows/builtin:autonomous", user_id=user_id).json()["data"]
    assert got["builtin"] and got["version"] == 1 and got["name"] == on_disk["name"]
    assert (
        got["workflow"]["agents"][1]["agent"]["config"]["system_message"]
        == (on_disk["agents"][1]["agent"]["config"]["system_message"])
    )

    r = server.http.put(
        f"{server.url}/api/workflows/builtin:autonomous",
        json={"user_id": user_id, "workflow": team("Hijack")},
        timeout=60,
    )
    assert r.status_code == 403 and "built-in" in r.json()["message"] and "copy" in r.json()["message"]
    r = server.http.delete(
        f"{server.url}/api/workflows/builtin:autonomous", params={"user_id": user_id}, timeout=60
    )
    assert r.status_code == 403
    assert server.get("/api/workflows/builtin:autonomous", user_id=user_id).status_code == 200

    copy = server.post("/api/workflows/builtin:autonomous/copy", {"user_id": user_id}).json()["data"]
    assert copy["id"].startswith("wf_") and not copy["builtin"] and copy["name"] == on_disk["name"]
    assert (
        copy["workflow"]["agents"][1]["agent"]["config"]["system_message"]
        == (on_disk["agents"][1]["agent"]["config"]["system_message"])
    )
    renamed = server.post(
        "/api/workflows/builtin:sequential/copy", {"user_id": user_id, "name": "My sequence"}
    ).json()["data"]
    assert renamed["name"] == "My sequence" and renamed["type"] == "sequential"
    assert {copy["id"], renamed["id"]} <= {w["id"] for w in listed(server, user_id, limit=4)}
    assert server.get("/api/workflows/builtin:nope", user_id=user_id).status_code == 404
    assert server.get("/api/workflows/builtin:autonomous", user_id=user_id, version=2).status_code == 404


def test_export_and_import(server: RunningServer, user_id: str) -> None:
    wid = save(server, user_id, team("Exported team", "export me"))["id"]
    r = server.get(f"/api/workflows/{wid}/export", user_id=user_id)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Content-Disposition"] == 'attachment; filename="Exported_team.json"'
    exported = r.json()
    assert exported["name"] == "Exported team" and "status" not in exported  # the flow itself
    exported["name"] = "Imported team"
    r = server.post(f"/api/workflows:import?user_id={user_id}", exported)
    assert r.status_code == 200, r.text
    imported = r.json()["data"]
    assert imported["name"] == "Imported team" and imported["id"] != wid
    assert imported["workflow"]["agents"][1]["agent"]["config"]["system_message"] == "export me"
    again = server.post(f"/api/workflows:import?user_id={user_id}", exported)
    assert again.status_code == 409
    bad = server.post(f"/api/workflows:import?user_id={user_id}", {"type": "autonomous"})
    assert bad.status_code == 400 and bad.json()["status"] is False
    r = server.get("/api/workflows/builtin:groupchat/export", user_id=user_id)
    assert r.status_code == 200 and r.json()["type"] == "groupchat"


def test_keys_are_never_saved(server: RunningServer, user_id: str) -> None:
    flow = team("Keyed")
    flow["agents"][1]["agent"]["config"]["llm_config"]["config_list"][0]["api_key"] = "sk-inline-SECRET-1234"
    wid = save(server, user_id, flow)["id"]
    got = server.get(f"/api/workflows/{wid}", user_id=user_id).text
    exported = server.get(f"/api/workflows/{wid}/export", user_id=user_id).text
    assert "sk-inline-SECRET-1234" not in got + exported


def test_runs_and_sessions_record_the_workflow_and_version(
    server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    saved = save(server, user_id, team("Recorded", "first version"))
    wid = saved["id"]
    llm.queue("answer one TERMINATE")
    r = server.post("/api/messages", {"message": wf.message(user_id, "q1"), "workflow_id": wid})
    assert r.status_code == 200, r.text
    assert llm.served[-1].system.startswith("first version")
    reply = r.json()["data"]
    sid = reply["session_id"]
    run = server.get(f"/api/runs/{reply['metadata']['run_id']}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == (wid, 1)
    session = next(
        s for s in server.get("/api/sessions", user_id=user_id).json()["data"] if s["session_id"] == sid
    )
    assert (session["workflow_id"], session["workflow_version"]) == (wid, 1)

    server.http.put(
        f"{server.url}/api/workflows/{wid}",
        json={"user_id": user_id, "workflow": team("Recorded", "second version")},
        timeout=60,
    ).raise_for_status()
    # A follow-up with no workflow runs the session's own (version 1) and records it.
    llm.queue("answer two TERMINATE")
    r = server.post("/api/messages", {"message": wf.message(user_id, "q2", sid)})
    assert r.status_code == 200 and llm.served[-1].system.startswith("first version")
    run = server.get(f"/api/runs/{r.json()['data']['metadata']['run_id']}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == (wid, 1)

    # A live run of the newest version, and one of an older version asked for by number.
    llm.queue("answer three TERMINATE")
    r = server.post("/api/runs", {"message": wf.message(user_id, "q3", sid), "workflow_id": wid})
    assert r.status_code == 202, r.text
    run_id = r.json()["data"]["run_id"]
    run = server.get(f"/api/runs/{run_id}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == (wid, 2)
    llm.queue("answer four TERMINATE")
    body = {"message": wf.message(user_id, "q4"), "workflow_id": wid, "workflow_version": 1}
    r = server.post("/api/messages", body)
    assert r.status_code == 200 and llm.served[-1].system.startswith("first version")
    run = server.get(f"/api/runs/{r.json()['data']['metadata']['run_id']}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == (wid, 1)

    # A built-in runs too, and a bare flow_config records none.
    llm.queue("builtin answer TERMINATE")
    r = server.post(
        "/api/messages", {"message": wf.message(user_id, "q5"), "workflow_id": "builtin:autonomous"}
    )
    assert r.status_code == 200, r.text
    run = server.get(f"/api/runs/{r.json()['data']['metadata']['run_id']}", user_id=user_id).json()["data"]
    assert (run["workflow_id"], run["workflow_version"]) == ("builtin:autonomous", 1)
    llm.queue("bare answer TERMINATE")
    r = server.post("/api/messages", {"message": wf.message(user_id, "q6"), "flow_config": team("bare")})
    run = server.get(f"/api/runs/{r.json()['data']['metadata']['run_id']}", user_id=user_id).json()["data"]
    assert run["workflow_id"] is None and run["workflow_version"] is None


def test_bad_workflow_requests_are_clear_400s(server: RunningServer, user_id: str) -> None:
    wid = save(server, user_id, team("Refs"))["id"]
    both = {"message": wf.message(user_id, "x"), "workflow_id": wid, "flow_config": team("x")}
    r = server.post("/api/messages", both)
    assert r.status_code == 400 and "not both" in r.json()["message"]
    r = server.post("/api/messages", {"message": wf.message(user_id, "x"), "workflow_version": 2})
    assert r.status_code == 400 and "workflow_id" in r.json()["message"]
    r = server.post(
        "/api/messages", {"message": wf.message(user_id, "x"), "workflow_id": wid, "workflow_version": 9}
    )
    assert r.status_code == 404 and "version 9" in r.json()["message"]
    r = server.get("/api/workflows", user_id=user_id, cursor="bm9wZQ")
    assert r.status_code == 400 and "cursor" in r.json()["message"]
    # A workflow naming a credential the user does not have cannot be saved.
    flow = team("Missing credential")
    entry = flow["agents"][1]["agent"]["config"]["llm_config"]["config_list"][0]
    del entry["api_key"]
    entry["credential"] = "nope"
    r = server.post("/api/workflows", {"user_id": user_id, "workflow": flow})
    assert r.status_code == 400 and "credential" in r.json()["message"]


def test_a_session_created_from_a_saved_workflow_records_it(server: RunningServer, user_id: str) -> None:
    wid = save(server, user_id, team("Session team"))["id"]
    session = {"user_id": user_id, "session_id": "from-saved", "workflow_id": wid}
    r = server.post("/api/sessions", {"user_id": user_id, "session": session})
    assert r.status_code == 200, r.text
    made = next(s for s in r.json()["data"] if s["session_id"] == "from-saved")
    assert (made["workflow_id"], made["workflow_version"], made["flow_config"]["name"]) == (
        wid,
        1,
        "Session team",
    )
    neither = {"user_id": user_id, "session_id": "neither"}
    assert server.post("/api/sessions", {"user_id": user_id, "session": neither}).status_code == 400
