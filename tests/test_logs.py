"""`serve --log-format json`: what a log collector reads on the server's stderr.

A real server (gunicorn, as users run it) answers requests and chats whose content is a unique
marker, with an inline API key; then every line it wrote to stderr must be one JSON object with
time, level, logger and event; each request is one line with method, path (no query string),
status and duration_ms, under the request's id (the client's `X-Request-ID` when sane, echoed
back); a run's lines carry its run_id; and neither the marker, the reply, the keys nor the query
string appear anywhere (every line is at INFO or above).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import free_port
from tests.support.sse import read_events


@dataclass
class JsonServer:
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path

    def lines(self) -> list[str]:
        return [line for line in self.stderr.read_text(errors="replace").splitlines() if line.strip()]


@pytest.fixture
def json_server(llm_server: ScriptedLLM, tmp_path: Path) -> Iterator[JsonServer]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AUTOBOTS_"))}
    env.update(
        {
            "AUTOBOTS_DATABASE_URL": f"sqlite:///{tmp_path / 'database.sqlite'}",
            "OPENAI_API_KEY": SERVER_KEY,
            "OPENAI_BASE_URL": llm_server.base_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    stderr = tmp_path / "stderr.log"
    with (tmp_path / "stdout.log").open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autobots", "serve", "--port", str(port), "--log-format", "json"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    server = JsonServer(f"http://127.0.0.1:{port}", proc, stderr)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, stderr.read_text()
        try:
            if requests.get(server.url + "/api/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, stderr.read_text()
        time.sleep(0.2)
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_json_lines_hold_requests_and_runs_but_no_content(
    json_server: JsonServer, llm: ScriptedLLM, user_id: str
) -> None:
    marker, said = f"MARKER-{uuid.uuid4().hex}", f"REPLY-{uuid.uuid4().hex}"
    inline_key, in_query = f"sk-inline-{uuid.uuid4().hex}", f"QUERY-{uuid.uuid4().hex}"
    assistant = wf.assistant()
    assistant["config"]["llm_config"]["config_list"] = [
        {"model": "gpt-4o-mini", "api_key": inline_key, "base_url": llm.base_url}
    ]
    flow = wf.autonomous(assistant)
    llm.queue(f"{said} TERMINATE", f"{said} again. TERMINATE")
    url = json_server.url

    r = requests.post(
        url + "/api/messages",
        json={"message": wf.message(user_id, marker), "flow_config": flow},
        headers={"X-Request-ID": "req-abc.123"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-ID"] == "req-abc.123"
    blocking_run = r.json()["data"]["metadata"]["run_id"]
    health = requests.get(
        url + "/api/health", params={"q": in_query}, headers={"X-Request-ID": "no spaces, please"}, timeout=10
    )
    generated = health.headers["X-Request-ID"]
    assert generated != "no spaces, please" and len(generated) == 32
    started = requests.post(
        url + "/api/runs", json={"message": wf.message(user_id, marker), "flow_config": flow}, timeout=30
    )
    assert started.status_code == 202, started.text
    live_run = started.json()["data"]["run_id"]
    events = list(read_events(url + f"/api/runs/{live_run}/events"))
    assert (events[-1].type, events[-1].data["status"]) == ("status", "completed")
    assert requests.get(url + "/api/nowhere", timeout=10).status_code == 404
    json_server.process.send_signal(signal.SIGTERM)
    json_server.process.wait(20)

    lines = json_server.lines()
    parsed: list[dict[str, Any]] = []
    for line in lines:
        entry = json.loads(line)  # every line: one JSON object
        assert {"time", "level", "logger", "event"} <= entry.keys(), line
        parsed.append(entry)
    requests_logged = [e for e in parsed if e["logger"] == "autobots.http" and e["event"] == "request"]
    for entry in requests_logged:
        assert {"method", "path", "status", "duration_ms", "request_id"} <= entry.keys(), entry
        assert "?" not in entry["path"]
    by_path = {(e["method"], e["path"]): e for e in requests_logged}
    assert by_path[("POST", "/api/messages")]["request_id"] == "req-abc.123"
    assert by_path[("POST", "/api/messages")]["user_id"] == user_id  # named in the body
    assert by_path[("POST", "/api/runs")]["user_id"] == user_id
    assert by_path[("POST", "/api/messages")]["status"] == 200
    assert by_path[("GET", "/api/health")]["request_id"] == generated
    assert by_path[("GET", "/api/nowhere")]["status"] == 404
    stream = by_path[("GET", f"/api/runs/{live_run}/events")]  # the asyncio front door's stream
    assert stream["status"] == 200
    run_ends = {e.get("run_id"): e for e in parsed if e["event"] == "run ended"}
    assert run_ends[blocking_run]["status"] == "completed" and run_ends[live_run]["status"] == "completed"

    whole = "\n".join(lines)
    for secret in (marker, said, inline_key, SERVER_KEY, in_query):
        assert secret not in whole
    assert all(e["level"] in ("INFO", "WARNING", "ERROR", "CRITICAL") for e in parsed)
