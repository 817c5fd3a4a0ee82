"""Code that an agent writes, run through the HTTP API in the Docker and the local sandbox.

The scripted LLM hands out the code; the server's user proxy runs it in the sandbox and replies
with the output, as AutoGen does. Containment is checked end to end here; every escape is also
checked executor by executor in test_execution_docker.py and test_execution_local.py.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import docker
import pytest
import requests

from autobots.settings import default_config_path
from tests.conftest import SERVER_KEY
from tests.execution_support import REQUIRE_LOCAL, local_sandbox_problem, require_local_sandbox
from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server

REQUIRE_DOCKER = os.environ.get("AUTOBOTS_REQUIRE_DOCKER") == "1"
# An image the server allows but the engine does not have: it must never be pulled.
MISSING_IMAGE = "autobots-no-such-image:1"


def docker_reachable() -> bool:
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.images.get("autobots-sandbox:latest")
        return True
    except Exception:
        return False


EXECUTORS = [
    pytest.param(
        "docker",
        marks=pytest.mark.skipif(
            not REQUIRE_DOCKER and not docker_reachable(),
            reason="no Docker engine with autobots-sandbox:latest (AUTOBOTS_REQUIRE_DOCKER=1 makes this fail)",
        ),
    ),
    pytest.param(
        "local",
        marks=pytest.mark.skipif(
            not REQUIRE_LOCAL and local_sandbox_problem() is not None,
            reason="the local sandbox is unavailable here (AUTOBOTS_REQUIRE_LOCAL=1 makes this fail)",
        ),
    ),
]


@pytest.fixture(scope="module")
def exec_server(llm_server: ScriptedLLM) -> Iterator[RunningServer]:
    root = Path(tempfile.mkdtemp(prefix="autobots-api-exec-"))
    root.chmod(0o755)  # the local sandbox's user must be able to reach its work dir
    config = json.loads(Path(default_config_path()).read_text())
    config["code_execution"].update(
        {
            "work_root": str(root / "work"),
            "timeout_s": 5,
            "memory": "256m",
            "pids_limit": 64,
            "allowed_images": ["autobots-sandbox:latest", MISSING_IMAGE],
        }
    )
    (root / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(root, env=env, config=root / "config.json")
    yield srv
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def coder_flow(executor: str, **exec_options):
    spec = {"executor": executor, **exec_options} if exec_options else executor
    proxy = wf.userproxy(code_execution_config=spec, max_consecutive_auto_reply=5)
    return wf.autonomous(wf.assistant("coder"), sender=proxy)


def code(text: str, language: str = "python") -> str:
    return f"Running this:\n```{language}\n{text}\n```"


def run_code(server, llm, user_id, *blocks, executor="docker", session_id=None, **exec_options):
    """The assistant answers with each block in turn, then TERMINATE; returns the response."""
    llm.queue(*(code(b) for b in blocks), "All done. TERMINATE")
    body = {
        "message": wf.message(user_id, "please run code", session_id),
        "flow_config": coder_flow(executor, **exec_options),
    }
    return server.post("/api/messages", body)


def outputs(response) -> list[str]:
    said = response.json()["metadata"]["metadata"]["messages"]
    return [m["content"] for m in said if m["sender"] == "userproxy" and m["content"].startswith("exitcode")]


def sandbox_containers() -> list:
    client = docker.from_env()
    return client.containers.list(all=True, filters={"label": "autobots.sandbox=1"})


def engine_events(since: float, **filters: str) -> list[dict]:
    """What the Docker engine did since ``since`` (epoch seconds), e.g. containers it created."""
    client = docker.from_env()
    try:
        return list(client.events(since=int(since), until=int(time.time()) + 1, decode=True, filters=filters))
    finally:
        client.close()


def containers_created(run_id: str, since: float) -> int:
    return len(engine_events(since, type="container", event="create", label=f"autobots.run_id={run_id}"))


def stored_roles(server, user_id: str, session_id: str) -> list[str]:
    r = server.get("/api/messages", user_id=user_id, session_id=session_id)
    return [m["role"] for m in r.json()["data"]] if r.status_code == 200 else []


@pytest.mark.parametrize("executor", EXECUTORS)
def test_output_comes_back_and_files_persist_between_blocks(exec_server, llm, user_id, executor):
    r = run_code(
        exec_server,
        llm,
        user_id,
        "print(6 * 7)\nopen('result.txt', 'w').write('forty-two')",
        "print(open('result.txt').read().upper())",
        executor=executor,
    )
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert out[0].startswith("exitcode: 0") and "42" in out[0]
    assert "FORTY-TWO" in out[1]
    meta = r.json()["metadata"]["metadata"]
    assert {"name": "result.txt", "size": 9} in meta["files"]
    sid = r.json()["metadata"]["session_id"]
    got = exec_server.get(f"/api/sessions/{sid}/files/result.txt", user_id=user_id)
    assert got.status_code == 200 and got.content == b"forty-two"
    assert (
        exec_server.get(f"/api/sessions/{sid}/files/result.txt", user_id="other-" + user_id).status_code
        == 404
    )
    for escape in ("../config.json", "%2E%2E/config.json", "/etc/passwd", "nothing-here.txt"):
        assert exec_server.get(f"/api/sessions/{sid}/files/{escape}", user_id=user_id).status_code == 404


@pytest.mark.parametrize("executor", EXECUTORS)
def test_escapes_are_contained(exec_server, llm, user_id, executor):
    host, port = llm.base_url.split("//")[1].split("/")[0].split(":")
    probe = f"""
import os, socket
try:
    socket.create_connection(("{host}", {port}), timeout=3)
    print("NET-OPEN")
except OSError as e:
    print("NET-BLOCKED", type(e).__name__)
print("ENV-HAS-KEY" if any("SERVERSECRET" in v or "AUTOBOTS" in k for k, v in os.environ.items()) else "ENV-CLEAN")
try:
    print("DB-READ", len(open("{exec_server.db_path}", "rb").read()))
except OSError as e:
    print("DB-BLOCKED", type(e).__name__)
"""
    r = run_code(exec_server, llm, user_id, probe, executor=executor)
    assert r.status_code == 200, r.text
    out = outputs(r)[0]
    assert "NET-BLOCKED" in out and "NET-OPEN" not in out
    assert "ENV-CLEAN" in out
    assert "DB-BLOCKED" in out and "DB-READ" not in out
    assert SERVER_KEY not in r.text


@pytest.mark.parametrize("executor", EXECUTORS)
def test_endless_loop_fork_bomb_and_memory_hog_are_stopped_while_the_server_answers(
    exec_server, llm, user_id, executor
):
    hogs = [
        "while True:\n    pass",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))",
    ]
    with ThreadPoolExecutor(max_workers=1) as pool:
        for hog in hogs:
            llm.queue(code(hog), "Gave up. TERMINATE")
            body = {"message": wf.message(user_id, "misbehave"), "flow_config": coder_flow(executor)}
            t0 = time.monotonic()
            pending = pool.submit(exec_server.post, "/api/messages", body)
            time.sleep(1)
            health = requests.get(exec_server.url + "/api/health", timeout=5)
            assert health.status_code == 200  # the server keeps answering
            r = pending.result(timeout=60)
            assert r.status_code == 200, r.text
            assert time.monotonic() - t0 < 30
            out = outputs(r)[0]
            assert not out.startswith("exitcode: 0"), out


@pytest.mark.skipif(not REQUIRE_DOCKER and not docker_reachable(), reason="no Docker engine")
def test_no_container_is_left_after_runs_failures_and_cancels(exec_server, llm, user_id):
    since = time.time() - 1
    r = run_code(exec_server, llm, user_id, "print('hi')", "raise SystemExit(3)")
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert out[0].startswith("exitcode: 0") and "hi" in out[0]
    assert out[1].startswith("exitcode: 3")
    # The run did start its container (so "none left" below means it was removed).
    assert containers_created(r.json()["metadata"]["metadata"]["run_id"], since) == 1
    assert sandbox_containers() == []
    # cancel while a block runs
    llm.queue(code("import time\ntime.sleep(30)"), "never")
    body = {"message": wf.message(user_id, "sleep"), "flow_config": coder_flow("docker")}
    run = exec_server.post("/api/runs", body).json()["data"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not sandbox_containers():
        time.sleep(0.1)
    assert sandbox_containers(), "the block never started"
    exec_server.post(f"/api/runs/{run['run_id']}/cancel")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sandbox_containers():
        time.sleep(0.1)
    assert sandbox_containers() == []


@pytest.mark.skipif(not REQUIRE_DOCKER and not docker_reachable(), reason="no Docker engine")
def test_missing_image_is_a_clear_503_and_never_pulled(exec_server, llm, user_id):
    llm.queue(code("print(1)"), "TERMINATE")
    body = {
        "message": wf.message(user_id, "run"),
        "flow_config": coder_flow("docker", image=MISSING_IMAGE),
    }
    since = time.time() - 1
    started = time.monotonic()
    r = exec_server.post("/api/messages", body)
    assert time.monotonic() - started < 10  # fails fast: no pull attempt, no retries
    assert r.status_code == 503, r.text
    message = r.json()["message"]
    assert f"sandbox image '{MISSING_IMAGE}' not found" in message and "never pulled" in message
    assert engine_events(since, type="image") == []  # no pull (nor anything else) of any image
    with pytest.raises(docker.errors.ImageNotFound):
        docker.from_env().images.get(MISSING_IMAGE)


def test_image_the_server_does_not_allow_is_refused(exec_server, llm, user_id):
    """A request cannot run code in an arbitrary local image (say, the server's own)."""
    llm.queue(code("import os; print(os.environ)"), "TERMINATE")
    body = {
        "message": wf.message(user_id, "run"),
        "flow_config": coder_flow("docker", image="autobots-server:latest"),
    }
    before = len(exec_server.get("/api/sessions", user_id=user_id).json()["data"])
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 400, r.text
    assert "'autobots-server:latest' is not allowed on this server" in r.json()["message"]
    assert "code_execution.allowed_images" in r.json()["message"]
    assert len(exec_server.get("/api/sessions", user_id=user_id).json()["data"]) == before  # nothing stored
    assert llm.served == []


@pytest.mark.parametrize(
    "options, complaint",
    [
        ({"work_dir": "../x"}, "'..'"),
        ({"work_dir": "/etc"}, "must be relative"),
        ({"image": "Bad Image"}, "invalid image reference"),
        ({"use_docker": False, "executor": "docker"}, "use_docker"),
        ({"use_docker": "python:3.11", "image": "other:1"}, "use_docker"),
    ],
)
def test_bad_code_execution_options_are_a_400_before_anything_is_stored(
    exec_server, llm, user_id, options, complaint
):
    session_id = f"bad-options-{uuid.uuid4().hex[:8]}"
    proxy = wf.userproxy(code_execution_config=options)
    body = {
        "message": wf.message(user_id, "run", session_id),
        "flow_config": wf.autonomous(wf.assistant("coder"), sender=proxy),
    }
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 400, r.text
    assert complaint in r.text
    assert stored_roles(exec_server, user_id, session_id) == []
    assert llm.served == []


def test_legacy_use_docker_false_runs_in_the_local_sandbox(exec_server, llm, user_id):
    """AutoGen's `use_docker: false` is honoured (no Docker), but never as bare host execution."""
    require_local_sandbox()
    llm.queue(code("import os, socket; print('HOST', socket.gethostname(), os.getuid())"), "TERMINATE")
    proxy = wf.userproxy(code_execution_config={"use_docker": False, "work_dir": "coding"})
    body = {
        "message": wf.message(user_id, "run"),
        "flow_config": wf.autonomous(wf.assistant("coder"), sender=proxy),
    }
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    out = outputs(r)[0]
    assert out.startswith("exitcode: 0")
    expected_uid = "65534" if os.geteuid() == 0 else str(os.getuid())
    assert out.split("HOST")[1].split() == ["sandbox", expected_uid]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_symlink_planted_for_a_work_dir_reaches_no_host_file(exec_server, llm, user_id, executor):
    """Code of one run replaces the sub dir a later run starts in with `ln -s / sub`."""
    first = run_code(exec_server, llm, user_id, "import os\nos.symlink('/', 'sub')", executor=executor)
    assert first.status_code == 200, first.text
    assert outputs(first)[0].startswith("exitcode: 0")
    sid = first.json()["metadata"]["session_id"]
    db = str(exec_server.db_path)
    probe = (
        "import os\n"
        "print('CWD', os.getcwd())\n"
        f"for path in [{db.lstrip('/')!r}, {db!r}]:\n"
        "    try:\n"
        "        print('READ', len(open(path, 'rb').read()))\n"
        "    except OSError as exc:\n"
        "        print('NO-HOST-FILE', type(exc).__name__)\n"
    )
    second = run_code(exec_server, llm, user_id, probe, executor=executor, session_id=sid, work_dir="sub")
    assert second.status_code == 200, second.text
    out = outputs(second)[0]
    assert "READ" not in out and out.count("NO-HOST-FILE") == 2, out
    assert second.json()["metadata"]["metadata"]["files"] == []
    assert (
        exec_server.get(f"/api/sessions/{sid}/files/sub/{db.lstrip('/')}", user_id=user_id).status_code == 404
    )


@pytest.mark.parametrize("executor", EXECUTORS)
def test_symlink_planted_by_code_is_not_served(exec_server, llm, user_id, executor):
    r = run_code(
        exec_server,
        llm,
        user_id,
        "import os\nos.symlink('/etc/passwd', 'p')\nos.symlink('/etc', 'etc')\nopen('real.txt', 'w').write('r')",
        executor=executor,
    )
    assert r.status_code == 200, r.text
    assert outputs(r)[0].startswith("exitcode: 0")
    sid = r.json()["metadata"]["session_id"]
    assert r.json()["metadata"]["metadata"]["files"] == [{"name": "real.txt", "size": 1}]
    assert exec_server.get(f"/api/sessions/{sid}/files/real.txt", user_id=user_id).status_code == 200
    for planted in ("p", "etc/passwd"):
        got = exec_server.get(f"/api/sessions/{sid}/files/{planted}", user_id=user_id)
        assert got.status_code == 404, planted
        assert b"root:" not in got.content


@pytest.mark.parametrize("executor", EXECUTORS)
def test_session_id_that_is_no_directory_name_runs_code_and_serves_files(exec_server, llm, user_id, executor):
    """Old clients send any session id, e.g. with a space; it must not be a 500."""
    sid = f"my chat {uuid.uuid4().hex[:6]}"
    r = run_code(
        exec_server, llm, user_id, "open('out.txt', 'w').write('spaced')", executor=executor, session_id=sid
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["session_id"] == sid
    assert {"name": "out.txt", "size": 6} in r.json()["metadata"]["metadata"]["files"]
    got = exec_server.get(f"/api/sessions/{quote(sid)}/files/out.txt", user_id=user_id)
    assert got.status_code == 200 and got.content == b"spaced"


@pytest.mark.skipif(not REQUIRE_DOCKER and not docker_reachable(), reason="no Docker engine")
def test_parallel_receivers_share_one_container(exec_server, llm, user_id):
    """Autonomous mode copies the sender for each receiver; the run still has one sandbox."""

    def respond(body: dict) -> str:
        last = body["messages"][-1]["content"] or ""
        if last.startswith("exitcode"):
            return "Done. TERMINATE"
        name = "one" if "You are coder_one" in body["messages"][0]["content"] else "two"
        return code(
            f"import time; time.sleep(0.5); open('{name}.txt', 'w').write('{name}'); print('{name} ran')"
        )

    llm.responder = respond
    proxy = wf.userproxy(code_execution_config="docker", max_consecutive_auto_reply=3)
    body = {
        "message": wf.message(user_id, "both run code"),
        "flow_config": wf.autonomous(wf.assistant("coder_one"), wf.assistant("coder_two"), sender=proxy),
    }
    since = time.time() - 1
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    said = " ".join(outputs(r))
    assert "one ran" in said and "two ran" in said
    files = r.json()["metadata"]["metadata"]["files"]
    assert {"name": "one.txt", "size": 3} in files and {"name": "two.txt", "size": 3} in files
    assert containers_created(r.json()["metadata"]["metadata"]["run_id"], since) == 1
    assert sandbox_containers() == []


def test_unreachable_engine_is_a_clear_503(llm, tmp_path, user_id):
    """With the local fallback turned off, no engine is a 503 that tells the person chatting
    what they can do and the operator what to set."""
    config = json.loads(Path(default_config_path()).read_text())
    config["code_execution"]["docker_host"] = f"unix://{tmp_path}/no-such.sock"
    config["code_execution"]["fallback_to_local"] = False
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    srv = start_server(tmp_path, env=env, config=tmp_path / "config.json")
    try:
        llm.queue(code("print(1)"), "TERMINATE")
        body = {"message": wf.message(user_id, "run"), "flow_config": coder_flow("docker")}
        r = srv.post("/api/messages", body)
        assert r.status_code == 503, r.text
        message = r.json()["message"]
        assert "Docker engine not reachable" in message and "pick a workflow that runs no code" in message
        assert "code_execution.fallback_to_local" in message
        assert "AUTOBOTS_CODE_EXECUTION__FALLBACK_TO_LOCAL=true" in message
        msgs = srv.get(
            "/api/messages", user_id=user_id, session_id=r.json()["data"]["user_message"]["session_id"]
        )
        assert [m["role"] for m in msgs.json()["data"]] == ["user"]
    finally:
        srv.stop()


def test_files_go_with_their_session_and_are_per_user(exec_server, llm, user_id):
    """The attack: Alice's code leaves a file in session "s"; Alice deletes the session; Mallory
    (or Alice again) creates a session "s" and asks for the file. Nothing of the deleted session
    can be read, and two users' sessions of one id never see each other's files."""
    sid = "files-" + uuid.uuid4().hex[:6]
    r = run_code(
        exec_server,
        llm,
        user_id,
        "open('secret.txt', 'w').write('alice only')",
        executor="local",
        session_id=sid,
    )
    assert r.status_code == 200, r.text
    assert exec_server.get(f"/api/sessions/{sid}/files/secret.txt", user_id=user_id).content == b"alice only"
    mallory = "mallory-" + user_id
    r = run_code(
        exec_server, llm, mallory, "print(open('secret.txt').read())", executor="local", session_id=sid
    )
    assert r.status_code == 200 and "alice only" not in outputs(r)[0]
    assert exec_server.get(f"/api/sessions/{sid}/files/secret.txt", user_id=mallory).status_code == 404
    assert exec_server.post("/api/cleardb", {"user_id": user_id, "session_id": sid}).status_code == 200
    r = run_code(
        exec_server,
        llm,
        user_id,
        "import os; print(sorted(os.listdir('.')))",
        executor="local",
        session_id=sid,
    )
    assert r.status_code == 200 and "secret.txt" not in outputs(r)[0]
    assert exec_server.get(f"/api/sessions/{sid}/files/secret.txt", user_id=user_id).status_code == 404
    work = Path(
        json.loads((Path(exec_server.db_path).parent / "config.json").read_text())["code_execution"][
            "work_root"
        ]
    )
    assert not [p for p in work.rglob("secret.txt")], "the deleted session's file is still on disk"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_code_written_with_terminate_in_the_same_message_still_runs(exec_server, llm, user_id, executor):
    """Small models write the code and TERMINATE in one message; AutoGen would end the chat on it
    with the code never run. The code runs first, and the chat ends after its output."""
    llm.queue(code("print(sum(range(1, 101)))") + "\nTERMINATE", "The sum is 5050. TERMINATE")
    body = {"message": wf.message(user_id, "sum 1..100"), "flow_config": coder_flow(executor)}
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert len(out) == 1 and out[0].startswith("exitcode: 0") and "5050" in out[0]
    assert r.json()["message"].startswith("The sum is 5050.")
    assert llm.counted()["calls"] == 2


def test_terminate_without_code_still_ends_a_code_running_chat(exec_server, llm, user_id):
    llm.queue("The answer is 4. TERMINATE")
    body = {"message": wf.message(user_id, "2+2"), "flow_config": coder_flow("local")}
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 200 and outputs(r) == [] and llm.counted()["calls"] == 1


def coder_with_reply(executor: str, reply: str):
    proxy = wf.userproxy(
        code_execution_config=executor, max_consecutive_auto_reply=5, default_auto_reply=reply
    )
    return wf.autonomous(wf.assistant("coder"), sender=proxy)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_reply_to_code_that_ran_ends_the_chat(exec_server, llm, user_id, executor):
    """After code ran and exited 0, a reply without code is the answer: no call is spent on the
    "reply TERMINATE when done" a default reply would ask for."""
    llm.queue(code("print(6 * 7)"), "It is 42.", "TERMINATE")
    flow = coder_with_reply(executor, "Go on; reply TERMINATE when the task is done.")
    r = exec_server.post("/api/messages", {"message": wf.message(user_id, "6*7"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 2
    assert r.json()["message"] == "It is 42."
    assert len(outputs(r)) == 1 and outputs(r)[0].startswith("exitcode: 0")


def test_a_failed_run_or_no_code_is_still_followed_up(exec_server, llm, user_id):
    """Before any code ran, and after code that failed, the default reply asks for (fixed) code."""
    llm.queue("It is probably 42.", code("raise SystemExit(3)"), "Oops.", code("print(42)"), "It is 42.")
    flow = coder_with_reply("local", "Write a python block that prints the answer.")
    r = exec_server.post("/api/messages", {"message": wf.message(user_id, "6*7"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 5
    out = outputs(r)
    assert [o.split()[1] for o in out] == ["3", "0"]
    assert r.json()["message"] == "It is 42."


CUT_OFF = "```python\ntotal = 0\nfor year in range(1901, 2001):\n    if year % 4 == 0:\n        total += 1\n    if year % 4"


def test_a_reply_cut_off_inside_its_code_is_told_so_and_may_try_again(exec_server, llm, user_id):
    """A reply that hit its token cap inside a code block ran nothing; the model is told so (not
    sent the generic default reply), and its shorter code then runs."""
    llm.queue(CUT_OFF, code("print(25)"), "There are 25 leap years.")
    flow = coder_with_reply("local", "Write a python block that prints the answer.")
    r = exec_server.post("/api/messages", {"message": wf.message(user_id, "leap years"), "flow_config": flow})
    assert r.status_code == 200, r.text
    asked = llm.served[1].body["messages"][-1]["content"]
    assert "cut off" in asked and "nothing ran" in asked and "Write a python block" not in asked
    out = outputs(r)
    assert len(out) == 1 and out[0].startswith("exitcode: 0") and "25" in out[0]
    assert r.json()["message"] == "There are 25 leap years."


def test_a_second_cut_off_reply_in_a_row_ends_the_chat(exec_server, llm, user_id):
    """At temperature 0 a model that looped once loops again: after two cut-off replies the
    chat ends rather than spend the reply cap (about 20 s each on the embedded model)."""
    llm.queue(CUT_OFF, CUT_OFF, code("print(25)"))
    flow = coder_with_reply("local", "Write a python block that prints the answer.")
    r = exec_server.post("/api/messages", {"message": wf.message(user_id, "leap years"), "flow_config": flow})
    assert r.status_code == 200, r.text
    assert llm.counted()["calls"] == 2 and outputs(r) == []
    said = r.json()["metadata"]["metadata"]["messages"]
    assert [m["sender"] for m in said] == ["userproxy", "coder", "userproxy", "coder"]
    # The cut-off answer is now the session's last turn; a follow-up's first cut-off reply is
    # still told so (the replayed history is not the model's previous reply).
    llm.reset()  # the unused third reply goes
    llm.queue(CUT_OFF, code("print(25)"), "There are 25 leap years.")
    sid = r.json()["metadata"]["session_id"]
    body = {"message": wf.message(user_id, "try again", sid), "flow_config": flow}
    r = exec_server.post("/api/messages", body)
    assert r.status_code == 200, r.text
    assert "cut off" in llm.served[1].body["messages"][-1]["content"]
    assert r.json()["message"] == "There are 25 leap years." and len(outputs(r)) == 1


def test_terminate_on_the_last_line_of_a_code_block_is_not_run(exec_server, llm, user_id):
    """Small models close their block with TERMINATE; Python would fail on the undefined name."""
    llm.queue("```python\nprint(sum(range(4)))\nTERMINATE\n```", "It is 6.")
    r = exec_server.post(
        "/api/messages", {"message": wf.message(user_id, "0+1+2+3"), "flow_config": coder_flow("local")}
    )
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert len(out) == 1 and out[0].startswith("exitcode: 0") and "6" in out[0]
    said = r.json()["metadata"]["metadata"]["messages"]
    assert said[1]["content"].endswith("TERMINATE\n```")  # the transcript keeps what was said


def test_the_coder_reads_the_real_output_not_its_own_guess(exec_server, llm, user_id):
    """Text after a code block that then ran was written before its output existed; the model's
    next call sees the code and the output, not the guess. The transcript keeps the guess."""
    llm.queue(code("print(sum(int(d) for d in str(2**100)))") + "\nThe sum is 768. TERMINATE", "It is 115.")
    r = exec_server.post(
        "/api/messages", {"message": wf.message(user_id, "digit sum"), "flow_config": coder_flow("local")}
    )
    assert r.status_code == 200, r.text
    second = llm.served[1].body["messages"]
    own = [m["content"] for m in second if m["role"] == "assistant"]
    assert len(own) == 1 and "str(2**100)" in own[0] and "768" not in own[0] and own[0].endswith("```")
    assert "Code output: 115" in second[-1]["content"]
    said = r.json()["metadata"]["metadata"]["messages"]
    assert "The sum is 768." in said[1]["content"]


def _server_without_docker(tmp_path: Path, llm, **code_execution) -> RunningServer:
    root = Path(tempfile.mkdtemp(prefix="autobots-no-docker-"))
    root.chmod(0o755)  # the local sandbox's user must be able to reach its work dir
    config = json.loads(Path(default_config_path()).read_text())
    config["code_execution"].update(
        {"docker_host": f"unix://{tmp_path}/no-such.sock", "work_root": str(root / "work"), **code_execution}
    )
    (root / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url}
    return start_server(root, env=env, config=root / "config.json")


def test_docker_asked_for_on_a_server_without_an_engine_runs_in_the_local_sandbox(llm, tmp_path, user_id):
    """fallback_to_local is on by default: the stock examples name Docker and must still run."""
    require_local_sandbox()
    assert json.loads(Path(default_config_path()).read_text())["code_execution"]["fallback_to_local"] is True
    srv = _server_without_docker(tmp_path, llm)
    try:
        llm.queue(code("print(6 * 7)"), "It is 42.")
        body = {"message": wf.message(user_id, "6*7"), "flow_config": coder_flow("docker")}
        r = srv.post("/api/messages", body)
        assert r.status_code == 200, r.text
        assert outputs(r)[0].startswith("exitcode: 0") and "42" in outputs(r)[0]
        notes = r.json()["metadata"]["metadata"]["models"]["notes"]
        assert any("local (bubblewrap) sandbox" in n and "Docker" in n for n in notes), notes
        examples = srv.get("/api/examples").json()["data"]
        coder = next(e for e in examples if e["name"] == "Coder with a sandbox")
        assert coder["sandbox_available"] and coder["sandbox_fallback"]
    finally:
        srv.stop()
        shutil.rmtree(srv.db_path.parent, ignore_errors=True)


def test_no_sandbox_at_all_tells_the_person_and_the_operator_what_to_do(llm, tmp_path, user_id):
    """No engine, and no bubblewrap on the server's PATH: a 503 whose message says what the person
    chatting can do and what the operator must set; nothing but the question is stored."""
    bare_path = tmp_path / "empty-bin"
    bare_path.mkdir()
    root = tmp_path / "srv"
    root.mkdir()
    config = json.loads(Path(default_config_path()).read_text())
    config["code_execution"].update({"docker_host": f"unix://{tmp_path}/no-such.sock"})
    (root / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm.base_url, "PATH": str(bare_path)}
    srv = start_server(root, env=env, config=root / "config.json")
    try:
        llm.queue(code("print(1)"), "TERMINATE")
        body = {"message": wf.message(user_id, "run"), "flow_config": coder_flow("docker")}
        r = srv.post("/api/messages", body)
        assert r.status_code == 503, r.text
        message = r.json()["message"]
        assert "pick a workflow that runs no code" in message and "ask the server's operator" in message
        assert "For the operator:" in message and "Docker engine not reachable" in message
        assert "bubblewrap" in message
        sid = r.json()["data"]["user_message"]["session_id"]
        assert stored_roles(srv, user_id, sid) == ["user"]
        examples = srv.get("/api/examples").json()["data"]
        assert all(not e["sandbox_available"] for e in examples if e["needs_sandbox"])
    finally:
        srv.stop()


def test_an_expected_output_block_next_to_the_code_is_not_run(exec_server, llm, user_id):
    """Small models add the output they expect as an "```output" block; only the code runs."""
    llm.queue(code("print(2 + 2)") + "\n```output\n5\n```", "It is 4.")
    r = exec_server.post(
        "/api/messages", {"message": wf.message(user_id, "2+2"), "flow_config": coder_flow("local")}
    )
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert (
        len(out) == 1 and out[0].startswith("exitcode: 0") and "4" in out[0] and "Unsupported" not in out[0]
    )


def test_code_that_printed_nothing_is_said_so_and_followed_up(exec_server, llm, user_id):
    """Code whose result is never printed succeeds with no output: the report says so, and the
    chat does not end on the reply to it (the default reply asks for printed code)."""
    llm.queue(code("total = sum(range(4))"), "It is probably 7.", code("print(sum(range(4)))"), "It is 6.")
    flow = coder_with_reply("local", "Print the result.")
    r = exec_server.post("/api/messages", {"message": wf.message(user_id, "0+1+2+3"), "flow_config": flow})
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert "the code printed nothing" in out[0] and "6" in out[1]
    assert llm.counted()["calls"] == 4 and r.json()["message"] == "It is 6."


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_bare_last_expression_shows_its_value_as_a_notebook_does(exec_server, llm, user_id, executor):
    """Small models end a block with `sum(...)` instead of printing it: its value is shown, as a
    notebook shows it, so the model reads the real value rather than guessing one. Line numbers
    in a traceback are the code's own; a file the model named is run exactly as written."""
    r = run_code(
        exec_server,
        llm,
        user_id,
        "n = 21\nn * 2  # the answer",
        "print('shown once')",
        "x = 1\nraise SystemExit(f'line {__import__(\"sys\")._getframe().f_lineno}')\nx",
        "# filename: calc.py\nn = 5\nn + 1",
        executor=executor,
    )
    assert r.status_code == 200, r.text
    out = outputs(r)
    assert out[0].startswith("exitcode: 0") and "42" in out[0], out[0]
    assert out[1].count("shown once") == 1 and "None" not in out[1], out[1]
    assert "line 2" in out[2], out[2]
    assert "6" not in out[3] and "the code printed nothing" in out[3], out[3]
    sid = r.json()["metadata"]["session_id"]
    got = exec_server.get(f"/api/sessions/{sid}/files/calc.py", user_id=user_id)
    assert got.status_code == 200 and got.content == b"# filename: calc.py\nn = 5\nn + 1", got.content
