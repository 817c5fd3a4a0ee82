"""`GET /api/runs/<id>/wait`: a run waiting for the embedded model is told why and for how long.

A keyless server on the small embedded model (SmolLM2-135M), for real: its first run waits for
the model server to start and load ("loading"), a later one waits behind other callers' long
replies ("queued", with the requests ahead and an estimate); another user asking about the run
gets the same 404 as for a run that does not exist.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.support import workflows as wf
from tests.support.server import RunningServer
from tests.test_embedded_api import SMALL, embedded_assistant, keyless_server

NO_EOS = {"0": -100, "2": -100, "4": -100}


def _start(server: RunningServer, user_id: str, question: str) -> str:
    flow = wf.autonomous(embedded_assistant(SMALL), sender=wf.userproxy(max_consecutive_auto_reply=0))
    r = server.post("/api/runs", {"message": wf.message(user_id, question), "flow_config": flow})
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["run_id"])


def _watch(server: RunningServer, user_id: str, run_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """The run's wait answers until it ends."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = server.get(f"/api/runs/{run_id}/wait", user_id=user_id)
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        seen.append(data)
        if data["status"] not in ("queued", "running"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end: {seen[-3:]}")


def busy_model(server: RunningServer, calls: int, tokens: int) -> list[threading.Thread]:
    """Other callers' long replies, straight to the model server."""
    state = json.loads((server.db_path.parent / "model-server" / "state.json").read_text())

    def call() -> None:
        httpx.post(
            f"http://127.0.0.1:{state['port']}/v1/chat/completions",
            headers={"Authorization": f"Bearer {state['api_key']}"},
            json={
                "model": SMALL,
                "messages": [{"role": "user", "content": "Tell me a long story about a ship."}],
                "max_tokens": tokens,
                "logit_bias": NO_EOS,
            },
            timeout=120,
            trust_env=False,
        )

    threads = [threading.Thread(target=call) for _ in range(calls)]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    return threads


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = keyless_server(tmp_path_factory.mktemp("embedded-wait"), default_model=SMALL)
    yield srv
    srv.stop()


def test_a_run_waiting_for_the_model_is_told_why_and_how_long(fresh_server: RunningServer) -> None:
    user = f"waiter-{uuid.uuid4().hex[:8]}"
    # The first run starts the model server: it waits for the model to load.
    first = _start(fresh_server, user, "Say hello.")
    seen = _watch(fresh_server, user, first)
    models = [s["model"] for s in seen if s["model"]]
    loading = [m for m in models if m["state"] == "loading"]
    assert loading, [s["status"] for s in seen]
    assert all(m["estimate_s"] > 0 and m["loading"]["model"] == SMALL for m in loading), loading
    assert seen[-1]["status"] == "completed" and seen[-1]["model"] is None

    # Two long replies of others hold the model: the next run's call queues behind them.
    busy = busy_model(fresh_server, calls=2, tokens=300)
    second = _start(fresh_server, user, "Say hi.")
    seen = _watch(fresh_server, user, second)
    for thread in busy:
        thread.join(120)
    queued = [s["model"] for s in seen if s["model"] and s["model"]["state"] == "queued"]
    assert queued, [s["model"] and s["model"]["state"] for s in seen]
    # Both, or (if the run's call came late) the second, were ahead of it.
    assert 1 <= min(m["ahead"] for m in queued) <= max(m["ahead"] for m in queued) <= 2, queued
    assert all(m["estimate_s"] > 0 for m in queued)
    assert set(queued[0]) >= {"state", "ahead", "estimate_s", "loading"}


def test_another_users_run_is_a_404_like_a_missing_one(fresh_server: RunningServer) -> None:
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    run_id = _start(fresh_server, owner, "Say hi.")
    mine = fresh_server.get(f"/api/runs/{run_id}/wait", user_id=owner)
    assert mine.status_code == 200 and mine.json()["data"]["run_id"] == run_id
    theirs = fresh_server.get(f"/api/runs/{run_id}/wait", user_id="someone-else")
    missing = fresh_server.get("/api/runs/no-such-run/wait", user_id="someone-else")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"].replace(run_id, "X") == missing.json()["message"].replace(
        "no-such-run", "X"
    )
    _watch(fresh_server, owner, run_id)
