"""Schedules (`/api/schedules`) on the real server: create, list, read, change and delete with
every bad field refused by name; another user's schedule answers as a missing one; an `every_s:
10` schedule fires on time, its run an ordinary run of the workflow in the schedule's session
(answered by the scripted LLM); a deleted workflow and a revoked key stop it, saying why; and, in
the distributed mode with two API processes and a worker, each due time fires exactly once.

The waits are real: the ticker runs every 0.1-0.2 s here, and a schedule fires at its due time."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.auth import cli, create_key
from tests.support.cluster import cluster_env, start_api, start_worker
from tests.support.redis_db import redis_url
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server
from tests.support.webhook_receiver import Receiver
from tests.test_distributed import reachable_root
from tests.test_postgres import fresh_database

SCHEDULES_REDIS_DB = 14  # of the suite's Redis databases: this module's cluster only
FAST = {"AUTOBOTS_SCHEDULES__TICK_S": "0.2"}
LIMITED = {"AUTOBOTS_LIMITS__PER_USER__LIVE_RUNS": "1"}


@pytest.fixture(scope="module")
def sched_server(
    llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("schedules")
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url, **FAST, **LIMITED}
    srv = start_server(workdir, env=env)
    yield srv
    srv.stop()


def flow(name: str) -> dict[str, Any]:
    team = wf.autonomous(wf.assistant())
    team["name"] = name
    return team


def save_workflow(server: RunningServer, user: str, name: str, **kw: Any) -> str:
    r = server.post("/api/workflows", {"user_id": user, "workflow": flow(name)}, **kw)
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["id"])


def create(server: RunningServer, body: dict[str, Any], **kw: Any) -> requests.Response:
    return server.post("/api/schedules", body, **kw)


def wait_for(server: RunningServer, sid: str, done: Any, timeout: float, **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = server.get(f"/api/schedules/{sid}", **params)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        if done(data):
            return data
        time.sleep(0.1)
    raise AssertionError(f"schedule {sid} never got there: {data}")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_create_list_get_change_delete_and_bad_fields(sched_server: RunningServer, user_id: str) -> None:
    srv = sched_server
    wid = save_workflow(srv, user_id, "morning report")
    body = {"user_id": user_id, "workflow_id": wid, "message": "report", "every_s": 3600}
    r = create(srv, body)
    assert r.status_code == 200, r.text
    first = r.json()["data"]
    assert first["state"] == "active" and first["every_s"] == 3600 and first["cron"] is None
    assert first["tz"] == "UTC" and first["fire_count"] == 0 and first["last_run_id"] is None
    assert first["session_id"].startswith("schedule-")
    due = when(first["next_fire_at"]) - when(first["created_at"])
    assert timedelta(seconds=3599) <= due <= timedelta(seconds=3601)
    second = create(srv, {**body, "workflow_id": "builtin:autonomous", "every_s": 60}).json()["data"]

    # The list pages newest first.
    page = srv.get("/api/schedules", user_id=user_id, limit=1).json()
    assert [s["id"] for s in page["data"]] == [second["id"]] and page["next_cursor"]
    rest = srv.get("/api/schedules", user_id=user_id, limit=1, cursor=page["next_cursor"]).json()
    assert [s["id"] for s in rest["data"]] == [first["id"]] and rest["next_cursor"] is None
    assert srv.get("/api/schedules", user_id=user_id, cursor="nonsense").status_code == 400

    # A cron expression replaces the interval; its next time is read in the schedule's zone.
    r = srv.http.patch(
        f"{srv.url}/api/schedules/{first['id']}",
        json={"user_id": user_id, "cron": "0 7 * * *", "tz": "Europe/Paris", "message": "the report"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    changed = r.json()["data"]
    assert (
        changed["cron"] == "0 7 * * *" and changed["every_s"] is None and changed["message"] == "the report"
    )
    local = when(changed["next_fire_at"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (7, 0)
    paused = srv.http.patch(
        f"{srv.url}/api/schedules/{first['id']}", json={"user_id": user_id, "enabled": False}, timeout=30
    ).json()["data"]
    assert paused["state"] == "paused" and paused["next_fire_at"] is None
    assert srv.get(f"/api/schedules/{first['id']}", user_id=user_id).json()["data"]["state"] == "paused"

    bad = {
        "every_s": ({**body, "every_s": 5}, "every_s"),
        "both": ({**body, "cron": "* * * * *"}, "cron"),
        "neither": ({k: v for k, v in body.items() if k != "every_s"}, "cron"),
        "cron": ({**body, "every_s": None, "cron": "61 * * * *"}, "cron"),
        "six fields": ({**body, "every_s": None, "cron": "0 0 7 * * *"}, "cron"),
        "tz": ({**body, "tz": "Mars/Olympus"}, "tz"),
        "workflow": ({**body, "workflow_id": "wf_missing"}, "workflow_id"),
        "typo": ({**body, "evry_s": 10}, "evry_s"),
    }
    for case, (payload, field) in bad.items():
        r = create(srv, payload)
        assert r.status_code == 400, (case, r.text)
        assert field in r.json()["message"], (case, r.text)
    listed = srv.get("/api/schedules", user_id=user_id).json()["data"]
    assert len(listed) == 2  # nothing stored by a refused request

    # Another user: the schedule is a 404, and a workflow of the first user's is as a missing one.
    other = f"other-{uuid.uuid4().hex[:6]}@example.com"
    path = f"{srv.url}/api/schedules/{first['id']}"
    assert srv.get(f"/api/schedules/{first['id']}", user_id=other).status_code == 404
    assert srv.http.patch(path, json={"user_id": other, "message": "x"}, timeout=30).status_code == 404
    assert srv.http.delete(path, params={"user_id": other}, timeout=30).status_code == 404
    assert srv.get("/api/schedules", user_id=other).json()["data"] == []
    theirs = create(srv, {**body, "user_id": other})
    missing = create(srv, {**body, "user_id": other, "workflow_id": "wf_" + uuid.uuid4().hex})
    assert theirs.status_code == missing.status_code == 400
    unknown = missing.json()["message"].split("workflow ")[-1].split(" ")[0]
    assert theirs.json()["message"].replace(wid, "?") == missing.json()["message"].replace(unknown, "?")

    assert srv.http.delete(path, params={"user_id": user_id}, timeout=30).status_code == 200
    assert srv.get(f"/api/schedules/{first['id']}", user_id=user_id).status_code == 404


def test_every_10_s_fires_on_time_as_an_ordinary_run_in_its_session(
    sched_server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    srv = sched_server
    wid = save_workflow(srv, user_id, "ticker")
    llm.queue("Scheduled answer. TERMINATE")
    created = create(
        srv, {"user_id": user_id, "workflow_id": wid, "message": "what time is it?", "every_s": 10}
    ).json()["data"]
    fired = wait_for(srv, created["id"], lambda s: s["fire_count"] >= 1, timeout=20, user_id=user_id)
    late = when(fired["last_fired_at"]) - when(created["created_at"])
    assert timedelta(seconds=10) <= late <= timedelta(seconds=11.5), late
    assert when(fired["next_fire_at"]) - when(created["created_at"]) == timedelta(seconds=20)
    assert fired["last_error"] is None

    run_id = fired["last_run_id"]
    deadline = time.monotonic() + 20
    while (run := srv.get(f"/api/runs/{run_id}", user_id=user_id).json()["data"])["status"] != "completed":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run["session_id"] == created["session_id"] and run["workflow_id"] == wid
    said = srv.get("/api/messages", user_id=user_id, session_id=created["session_id"]).json()["data"]
    assert [m["content"] for m in said][:2] == ["what time is it?", "Scheduled answer."]
    history = srv.get("/api/runs", user_id=user_id, workflow=wid).json()["data"]
    assert run_id in [h["run_id"] for h in history]
    assert any("what time is it?" in s.last_user_text for s in llm.served)

    # Deleted, it stops: its next due time (created + 20 s) passes and starts no run.
    path = f"{srv.url}/api/schedules/{created['id']}"
    assert srv.http.delete(path, params={"user_id": user_id}, timeout=30).status_code == 200
    second_due = when(created["created_at"]) + timedelta(seconds=20)
    time.sleep(max(0.0, (second_due - datetime.now(UTC)).total_seconds()) + 1.5)
    runs = srv.get("/api/runs", user_id=user_id).json()["data"]
    assert [r["run_id"] for r in runs if r["session_id"] == created["session_id"]] == [run_id]


def test_due_times_missed_while_down_fire_once(
    sched_server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """A schedule whose due time passed long ago (an hour of every_s 60, as after a server was
    down) fires once, not 60 times, and keeps its phase."""
    srv = sched_server
    wid = save_workflow(srv, user_id, "catch up")
    created = create(
        srv, {"user_id": user_id, "workflow_id": wid, "message": "catch-up", "every_s": 60}
    ).json()
    sid = created["data"]["id"]
    missed = datetime.now(UTC) - timedelta(seconds=3600 + 30)
    with sqlite3.connect(srv.db_path) as db:
        db.execute(
            "UPDATE schedules SET next_fire_at = ? WHERE schedule_id = ?",
            (missed.replace(tzinfo=None).isoformat(sep=" "), sid),
        )
    fired = wait_for(srv, sid, lambda s: s["fire_count"] >= 1, timeout=10, user_id=user_id)
    time.sleep(1)
    again = srv.get(f"/api/schedules/{sid}", user_id=user_id).json()["data"]
    assert again["fire_count"] == 1
    following = when(again["next_fire_at"])
    assert datetime.now(UTC) < following <= datetime.now(UTC) + timedelta(seconds=60)
    assert (following - missed).total_seconds() % 60 == 0  # the same phase as before
    assert fired["last_run_id"] is not None


def test_a_schedule_that_cannot_run_says_why(
    sched_server: RunningServer, llm: ScriptedLLM, user_id: str
) -> None:
    """A deleted workflow stops the schedule, with its reason; a firing the owner's limit refuses
    (here: one live run at most, and the owner's run waits for input) starts no run, is recorded
    on the schedule, and the schedule goes on."""
    srv = sched_server
    wid = save_workflow(srv, user_id, "doomed")
    busy = f"busy-{uuid.uuid4().hex[:6]}@example.com"
    busy_wid = save_workflow(srv, busy, "limited")
    llm.queue("Which city?")
    waiting = srv.post(
        "/api/runs",
        {
            "message": wf.message(busy, "plan"),
            "flow_config": wf.autonomous(wf.assistant(), sender=wf.userproxy(human_input_mode="ALWAYS")),
        },
    ).json()["data"]
    doomed = create(srv, {"user_id": user_id, "workflow_id": wid, "message": "never", "every_s": 10}).json()
    limited = create(
        srv, {"user_id": busy, "workflow_id": busy_wid, "message": "refused", "every_s": 10}
    ).json()
    sid = doomed["data"]["id"]
    assert srv.http.delete(f"{srv.url}/api/workflows/{wid}", params={"user_id": user_id}, timeout=30).ok
    stopped = wait_for(srv, sid, lambda s: s["state"] == "stopped", timeout=20, user_id=user_id)
    assert wid in stopped["stopped_reason"] and "deleted" in stopped["stopped_reason"]
    assert stopped["fire_count"] == 0 and stopped["last_run_id"] is None and stopped["next_fire_at"] is None

    refused = wait_for(srv, limited["data"]["id"], lambda s: s["last_error"], timeout=20, user_id=busy)
    assert "live_runs" in refused["last_error"] and refused["state"] == "active"
    assert refused["fire_count"] == 0 and refused["last_run_id"] is None
    assert when(refused["next_fire_at"]) - when(refused["created_at"]) == timedelta(seconds=20)
    assert not any(m in s.last_user_text for s in llm.served for m in ("never", "refused"))
    srv.post(f"/api/runs/{waiting['run_id']}/cancel")

    # Pointing it at a workflow that exists restarts it.
    other = save_workflow(srv, user_id, "replacement")
    r = srv.http.patch(
        f"{srv.url}/api/schedules/{sid}", json={"user_id": user_id, "workflow_id": other}, timeout=30
    )
    assert r.status_code == 200 and r.json()["data"]["state"] == "active" and r.json()["data"]["next_fire_at"]


def test_a_revoked_key_stops_the_schedule(
    llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir: Path = tmp_path_factory.mktemp("schedules-token")
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
        **FAST,
    }
    srv = start_server(workdir, env=env)  # its start makes the database the keys go in
    try:
        with ThreadPoolExecutor(2) as pool:
            made = [pool.submit(create_key, workdir, "alice@example.com", name=n) for n in ("cron", "phone")]
            creator, reader = (m.result() for m in made)
        as_creator = {"headers": {"Authorization": f"Bearer {creator}"}}
        wid = save_workflow(srv, "alice@example.com", "nightly", **as_creator)
        r = create(srv, {"workflow_id": wid, "message": "nightly check", "every_s": 10}, **as_creator)
        assert r.status_code == 200, r.text
        sid = r.json()["data"]["id"]
        out = cli(workdir, "keys", "revoke", creator)
        assert out.returncode == 0, out.stderr
        srv.http.headers["Authorization"] = f"Bearer {reader}"
        stopped = wait_for(srv, sid, lambda s: s["state"] == "stopped", timeout=20)
        assert "revoked" in stopped["stopped_reason"] and stopped["fire_count"] == 0
        assert srv.get("/api/runs").json()["data"] == []  # it started no run
    finally:
        srv.stop()


def test_each_due_time_fires_exactly_once_with_two_api_processes_and_a_worker(
    llm: ScriptedLLM, user_id: str
) -> None:
    url = redis_url(SCHEDULES_REDIS_DB)
    redis.Redis.from_url(url).flushdb()
    receiver = Receiver().start()
    with fresh_database() as pg, reachable_root() as root:
        env = {
            **cluster_env(pg, url, llm.base_url, SERVER_KEY),
            "AUTOBOTS_SCHEDULES__TICK_S": "0.05",
            "AUTOBOTS_WEBHOOKS__ALLOWED_HOSTS": '["127.0.0.1"]',
        }
        with ThreadPoolExecutor(3) as pool:  # three processes starting at once, as a deployment does
            starting = [
                pool.submit(start_api, root / "api1", env),
                pool.submit(start_api, root / "api2", env),
                pool.submit(start_worker, root / "w1", env),
            ]
            wait(starting)
        procs: list[Any] = [f.result() for f in starting if f.exception() is None]
        try:
            assert len(procs) == 3, [f.exception() for f in starting]
            api1 = procs[0]
            wid = save_workflow(api1, user_id, "exactly once")
            body = {"user_id": user_id, "workflow_id": wid, "message": "once-marker", "every_s": 10}
            r = create(api1, {**body, "webhook": {"url": receiver.url()}})
            assert r.status_code == 200, r.text
            created = r.json()["data"]
            # Three tickers (two API processes and the worker) race for every due time.
            fired = wait_for(api1, created["id"], lambda s: s["fire_count"] >= 2, timeout=35, user_id=user_id)
            time.sleep(1.5)  # time for a second firing of the same due time, were there one
            started = _runs_of(pg, created["session_id"])
            assert len(started) == 2, started
            # One run per due time (created + 10 s, + 20 s), none early.
            origin = when(created["created_at"]).replace(tzinfo=None)
            for n, moment in enumerate(started, start=1):
                assert origin + timedelta(seconds=10 * n) <= moment < origin + timedelta(seconds=10 * (n + 1))
            deadline = time.monotonic() + 20
            while sum("once-marker" in s.last_user_text for s in llm.served) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(0.5)
            assert sum("once-marker" in s.last_user_text for s in llm.served) == 2
            again = api1.get(f"/api/schedules/{created['id']}", user_id=user_id).json()["data"]
            run_ids = _run_ids(pg, created["session_id"])
            assert again["fire_count"] == 2 and fired["last_run_id"] in run_ids
            # Each run (ended on the worker) told of once, by whichever process leased it.
            told = [json.loads(g.body)["run_id"] for g in receiver.wait(2)]
            time.sleep(1)
            assert sorted(told) == sorted(run_ids) and len(receiver.received) == 2
        finally:
            receiver.stop()
            for proc in procs:
                proc.kill()  # SIGKILL: nothing of the cluster outlives the test


def _runs_of(pg: str, session_id: str) -> list[datetime]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg)
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                text("SELECT started_at FROM runs WHERE session_id = :s ORDER BY started_at"),
                {"s": session_id},
            )
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def _run_ids(pg: str, session_id: str) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(pg)
    try:
        with engine.begin() as conn:
            return [
                r[0]
                for r in conn.execute(
                    text("SELECT run_id FROM runs WHERE session_id = :s"), {"s": session_id}
                )
            ]
    finally:
        engine.dispose()
