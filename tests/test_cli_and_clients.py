"""The command line (`python -m autobots run`) and the client scripts in src/web/testing/."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SERVER_KEY

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "src" / "web" / "testing"


def run_script(
    name: str, *args: str, url: str, user_id: str | None, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOBOTS_")}
    env.update({"AUTOBOTS_URL": url, **({"AUTOBOTS_USER_ID": user_id} if user_id else {}), **extra_env})
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_run_prints_each_message_and_the_cost(llm, tmp_path):
    llm.queue("Paris is the capital of France. TERMINATE")
    workflow = tmp_path / "wf.json"
    workflow.write_text((ROOT / "src/web/examples/autonomous.json").read_text())
    env = {
        **os.environ,
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm.base_url,
        "AUTOBOTS_DATABASE_URL": f"sqlite:///{tmp_path / 'database.sqlite'}",
    }
    out = subprocess.run(
        [sys.executable, "-m", "autobots", "run", str(workflow), "Capital of France?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "--- userproxy -> primary_assistant\nCapital of France?" in out.stdout
    assert "Paris is the capital of France." in out.stdout
    counted = llm.counted()
    assert (
        f"tokens: {counted['prompt_tokens']} prompt + {counted['completion_tokens']} completion" in out.stdout
    )
    assert "cost: $" in out.stdout and "LLM calls: 1" in out.stdout
    assert SERVER_KEY not in out.stdout + out.stderr


@pytest.mark.parametrize("content", [json.dumps({"type": "nonsense"}), "[1, 2]", "{not json"])
def test_cli_run_rejects_a_bad_workflow_file(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = subprocess.run(
        [sys.executable, "-m", "autobots", "run", str(bad), "hi"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "cannot use workflow" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["autoworkflow.py", "seqworkflow.py", "groupworkflow.py"])
def test_workflow_scripts_print_answer_cost_and_timing(server, llm, user_id, script):
    llm.responder = lambda body: "Here is my part. TERMINATE"
    out = run_script(script, "Plan a picnic", url=server.url, user_id=user_id)
    assert out.returncode == 0, out.stderr
    assert "=== answer\nHere is my part." in out.stdout
    assert "cost: $" in out.stdout and "time: " in out.stdout
    assert f"LLM calls: {llm.counted()['calls']}" in out.stdout


def test_session_scripts(server, llm, user_id):
    out = run_script("newsession.py", url=server.url, user_id=user_id)
    assert out.returncode == 0, out.stderr
    session_id = json.loads(out.stdout.splitlines()[1])["session_id"]

    llm.queue("Answer one. TERMINATE")
    out = run_script(
        "autoworkflow.py", "Question one", "--session-id", session_id, url=server.url, user_id=user_id
    )
    assert out.returncode == 0, out.stderr

    out = run_script("publish.py", session_id, "--tags", "demo,picnic", url=server.url, user_id=user_id)
    assert out.returncode == 0, out.stderr
    assert "tags: demo, picnic" in out.stdout and "[assistant] Answer one." in out.stdout

    msgs = server.get("/api/messages", user_id=user_id, session_id=session_id).json()["data"]
    out = run_script("deletemsg.py", session_id, msgs[0]["msg_id"], url=server.url, user_id=user_id)
    assert out.returncode == 0 and "Question one" not in out.stdout and "Answer one." in out.stdout

    out = run_script("cleardb.py", session_id, url=server.url, user_id=user_id)
    assert out.returncode == 0 and session_id not in out.stdout

    out = run_script("cleardb.py", session_id, url=server.url, user_id=user_id)
    assert out.returncode == 1 and "error 404" in out.stderr


def test_scripts_report_an_unreachable_server(user_id):
    out = run_script("newsession.py", url="http://127.0.0.1:9", user_id=user_id)
    assert out.returncode == 1 and "cannot reach" in out.stderr


def test_scripts_default_to_the_configs_default_user(server, llm):
    """The original scripts' defaults come from config.json's `default_user_id`."""
    default_user = json.loads((ROOT / "src/web/config.json").read_text())["default_user_id"]
    llm.queue("Hello. TERMINATE")
    out = run_script("autoworkflow.py", "Hi there", url=server.url, user_id=None)
    assert out.returncode == 0, out.stderr
    sessions = server.get("/api/sessions", user_id=default_user).json()["data"]
    session_id = out.stdout.split("session: ")[1].split()[0]
    assert session_id in [s["session_id"] for s in sessions]


@pytest.fixture(scope="module")
def token_server(llm_server, tmp_path_factory):
    from tests.support.auth import create_key
    from tests.support.server import start_server

    workdir = tmp_path_factory.mktemp("scripts-token")
    key = create_key(workdir, "scripter@example.com")
    env = {
        "AUTOBOTS_AUTH__MODE": "token",
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm_server.base_url,
    }
    srv = start_server(workdir, env=env)
    yield srv, key
    srv.stop()


def test_scripts_sign_in_with_an_api_key(token_server, llm):
    srv, key = token_server
    llm.queue("Signed answer. TERMINATE")
    out = run_script("autoworkflow.py", "Who am I?", url=srv.url, user_id=None, AUTOBOTS_API_KEY=key)
    assert out.returncode == 0, out.stderr
    assert "Signed answer." in out.stdout and key not in out.stdout + out.stderr
    listed = srv.http.get(srv.url + "/api/sessions", headers={"Authorization": f"Bearer {key}"}).json()[
        "data"
    ]
    assert len(listed) == 1 and listed[0]["user_id"] == "scripter@example.com"
    refused = run_script("newsession.py", url=srv.url, user_id=None)
    assert refused.returncode == 1 and "error 401" in refused.stderr


def test_cli_names_the_bad_field_as_the_page_does(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"type": "autonomous", "agents": [{"agent": {"type": "robot", "config": {"name": "x"}}}]})
    )
    out = subprocess.run(
        [sys.executable, "-m", "autobots", "run", str(bad), "hi"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: cannot use workflow {bad}: agents.0.agent.type: Input should be")


def test_serve_prints_the_chat_pages_url(server):
    port = server.url.rsplit(":", 1)[1]
    assert f"the chat page will be at http://127.0.0.1:{port}/" in server.log()


def test_cli_run_has_the_servers_time_cap_and_stores_its_events(llm, tmp_path):
    """`run` goes through the server's run machinery: its wall-time cap ends a hung call, and the
    run's events are stored as a server's are."""
    from tests.support.scripted_llm import Reply

    llm.queue("First, quickly.", Reply("too late", delay=20))
    workflow = tmp_path / "wf.json"
    flow = {
        "type": "autonomous",
        "agents": [
            {
                "agent": {
                    "type": "userproxy",
                    "config": {
                        "name": "userproxy",
                        "llm_config": False,
                        "max_consecutive_auto_reply": 5,
                        "default_auto_reply": "Go on.",
                    },
                },
                "link": {"agent_type": "sender"},
            },
            {
                "agent": {
                    "type": "assistant",
                    "config": {
                        "name": "primary_assistant",
                        "llm_config": {"config_list": [{"model": "gpt-4o-mini"}]},
                    },
                },
                "link": {"agent_type": "receiver"},
            },
        ],
    }
    workflow.write_text(json.dumps(flow))
    db = tmp_path / "database.sqlite"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AUTOBOTS_", "OPENAI_"))},
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": llm.base_url,
        "AUTOBOTS_DATABASE_URL": f"sqlite:///{db}",
        "AUTOBOTS_LIMITS__MAX_RUN_SECONDS": "2",
    }
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "autobots", "run", str(workflow), "go"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "time cap of 2 s" in out.stdout and "First, quickly." in out.stdout
    assert time.monotonic() - t0 < 15
    with sqlite3.connect(db) as conn:
        kinds = [k for (k,) in conn.execute("SELECT type FROM run_events ORDER BY seq")]
    assert kinds[0] == "status" and "message" in kinds and kinds[-1] == "status"
