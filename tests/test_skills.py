"""Skills (agent tools) end to end: the real server, the scripted LLM over HTTP calling tools,
real sandboxes (Docker and bubblewrap), a real MCP server; nothing monkeypatched.

The scripted LLM plays the calling agent: it answers with `tool_calls`, and once the tool's
result comes back (a `tool` message) it answers with that result, so the answer shows that the
result was used. What the endpoint was sent is checked in `llm.served`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from autobots.settings import default_config_path
from tests.conftest import SERVER_KEY
from tests.support import workflows as wf
from tests.support.scripted_llm import ScriptedLLM, call, tool_reply
from tests.support.server import RunningServer, free_port, start_server
from tests.support.sse import read_events
from tests.test_code_execution import EXECUTORS

ADD = textwrap.dedent(
    '''
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b
    '''
)
PROBE = textwrap.dedent(
    '''
    import os

    def probe(path: str) -> dict:
        """Where am I running?"""
        try:
            open(path, "rb").read(1)
            readable = True
        except OSError:
            readable = False
        env = " ".join(f"{k}={v}" for k, v in os.environ.items())
        return {"db_readable": readable, "key_seen": "SERVERSECRET" in env or "AUTOBOTS" in env}
    '''
)
RAISES = 'def crash(x: int) -> float:\n    """Divide by zero."""\n    return x / 0\n'
LOOPS = 'def spin() -> int:\n    """Never ends."""\n    while True:\n        pass\n'
FLOODS = (
    'def flood() -> str:\n    """A result far larger than the output limit."""\n    return "x" * 1_000_000\n'
)

MCP_SERVER = textwrap.dedent(
    """
    import sys
    from mcp.server.fastmcp import FastMCP

    mcp = FastMCP("calc", host="127.0.0.1", port=int(sys.argv[1]))

    @mcp.tool()
    def multiply(a: int, b: int) -> int:
        '''Multiply two integers.'''
        return a * b

    mcp.run(transport="streamable-http")
    """
)


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="autobots-mcp-"))
    (root / "server.py").write_text(MCP_SERVER)
    log = (root / "log").open("wb")
    proc = subprocess.Popen([sys.executable, str(root / "server.py"), str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def skill_server(llm_server: ScriptedLLM, mcp_url: str) -> Iterator[RunningServer]:
    root = Path(tempfile.mkdtemp(prefix="autobots-skills-"))
    root.chmod(0o755)  # the local sandbox's user must be able to reach its work dir
    config = json.loads(Path(default_config_path()).read_text())
    config["code_execution"].update(
        {"work_root": str(root / "work"), "timeout_s": 5, "output_limit_bytes": 65536}
    )
    config["tools"] = {"mcp_allowed_urls": [mcp_url.rsplit("/", 1)[0]], "mcp_timeout_s": 20}
    (root / "config.json").write_text(json.dumps(config))
    env = {"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url}
    srv = start_server(root, env=env, config=root / "config.json")
    yield srv
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def use_the_result(*calls: dict[str, Any]):
    """A responder: call the tools, then answer with what they returned."""

    def respond(body: dict[str, Any]) -> Any:
        results = tool_messages(body)
        if results:
            return f"The tool said: {results[-1]['content']}. TERMINATE"
        return tool_reply(*calls)

    return respond


def skill_flow(skills: list[Any], proxy_execution: Any = False, **assistant: Any) -> dict[str, Any]:
    proxy = wf.userproxy(code_execution_config=proxy_execution, max_consecutive_auto_reply=3)
    return wf.autonomous(wf.assistant("caller", skills=skills, **assistant), sender=proxy)


def inline(name: str, code: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "description": description, "code": code}


def ask(server: RunningServer, user_id: str, flow: dict[str, Any], text: str = "please use the tool"):
    return server.post("/api/messages", {"message": wf.message(user_id, text), "flow_config": flow})


def answer(response: requests.Response) -> str:
    return str(response.json()["metadata"]["content"])


def said(response: requests.Response) -> list[dict[str, Any]]:
    return response.json()["metadata"]["metadata"]["messages"]


@pytest.mark.parametrize("executor", [*EXECUTORS, pytest.param(False, id="default-sandbox")])
def test_a_skill_is_called_with_its_arguments_in_the_sandbox_and_its_result_used(
    skill_server, llm, user_id, executor
):
    llm.responder = use_the_result(call("add", a=2, b=3))
    r = ask(skill_server, user_id, skill_flow([inline("add", ADD)], proxy_execution=executor))
    assert r.status_code == 200, r.text
    assert answer(r) == "The tool said: 5."
    first, second = llm.served[0].body, llm.served[1].body
    offered = first["tools"]
    assert offered == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "Add two integers.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"],
                },
            },
        }
    ]
    assert [m["content"] for m in tool_messages(second)] == ["5"]
    messages = said(r)
    calls = [m for m in messages if m.get("tool_calls")]
    assert calls[0]["sender"] == "caller" and calls[0]["recipient"] == "userproxy"
    assert calls[0]["tool_calls"][0]["name"] == "add"
    assert json.loads(calls[0]["tool_calls"][0]["arguments"]) == {"a": 2, "b": 3}
    results = [m for m in messages if m.get("tool_responses")]
    assert results[0]["sender"] == "userproxy" and results[0]["tool_responses"][0]["content"] == "5"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_skill_sees_nothing_of_the_server(skill_server, llm, user_id, executor):
    llm.responder = use_the_result(call("probe", path=str(skill_server.db_path)))
    r = ask(skill_server, user_id, skill_flow([inline("probe", PROBE)], proxy_execution=executor))
    assert r.status_code == 200, r.text
    result = json.loads(tool_messages(llm.served[1].body)[0]["content"])
    assert result == {"db_readable": False, "key_seen": False}
    assert SERVER_KEY not in r.text


def test_the_default_sender_runs_the_tools_of_its_partner(skill_server, llm, user_id):
    """A workflow without a sender: the server's default user proxy (which never replies
    otherwise) executes the call, in the server's default sandbox."""
    llm.responder = use_the_result(call("add", a=40, b=2))
    flow = {
        "name": "no sender",
        "type": "autonomous",
        "agents": [wf.link(wf.assistant("caller", skills=[inline("add", ADD)]), "receiver")],
    }
    r = ask(skill_server, user_id, flow)
    assert r.status_code == 200, r.text
    assert answer(r) == "The tool said: 42."


@pytest.mark.parametrize(
    ("skill", "expected"),
    [
        (
            inline("add", "def add(a: int, b: int) -> int\n    return a + b\n"),
            "skill 'add': syntax error on line 1",
        ),
        (
            inline("add", "add = lambda a, b: a + b\n"),
            "skill 'add': the code must define a top-level function",
        ),
        (inline("add", "def plus(a: int) -> int:\n    '''x'''\n    return a\n"), "(it defines plus)"),
        (
            inline("add", "def add(a, b: int) -> int:\n    '''x'''\n    return a\n"),
            "argument 'a' has no type hint",
        ),
        (inline("add", "def add(*a: int) -> int:\n    '''x'''\n    return 0\n"), "*args and **kwargs"),
        (
            inline("add", "def add(a: Foo) -> int:\n    '''x'''\n    return 0\n"),
            "the type hint `Foo` is not supported",
        ),
        (inline("add", "def add(a: int) -> int:\n    return a\n"), "give it a description or a docstring"),
        ("no_such_skill", "you have no skill named 'no_such_skill'"),
    ],
)
def test_a_bad_skill_is_a_400_naming_it_before_anything_is_stored(
    skill_server, llm, user_id, skill, expected
):
    r = ask(skill_server, user_id, skill_flow([skill]))
    assert r.status_code == 400, r.text
    assert expected in r.text
    assert llm.served == []
    assert skill_server.get("/api/sessions", user_id=user_id).json()["data"] == []


def test_a_default_json_cannot_carry_never_breaks_a_save(skill_server, user_id):
    """Defaults that are no JSON value (unhashable, complex, a set) stay out of the tool's schema;
    a NUL byte is a 400 that says what is wrong: never a 500."""
    for default in ("{[]: 1}", "1j", "{1, 2}", "(1, 2)"):
        code = f'def f(x: dict = {default}) -> int:\n    """d"""\n    return 1\n'
        body = {"user_id": user_id, "name": "f", "description": "d", "code": code}
        r = skill_server.post("/api/skills", body)
        assert r.status_code == 200, (default, r.text)
        skill_server.http.delete(f"{skill_server.url}/api/skills/f", params={"user_id": user_id})
    body = {"user_id": user_id, "name": "f", "description": "d", "code": "def f(x: int) -> int:\x00"}
    r = skill_server.post("/api/skills", body)
    assert r.status_code == 400 and "line None" not in r.text, r.text


def test_name_clashes_and_skills_without_an_llm_are_400s(skill_server, llm, user_id):
    other_add = inline("add", "def add(a: int, b: int) -> int:\n    '''Subtract.'''\n    return a - b\n")
    clash = wf.autonomous(
        wf.assistant("one", skills=[inline("add", ADD)]), wf.assistant("two", skills=[other_add])
    )
    r = ask(skill_server, user_id, clash)
    assert r.status_code == 400 and "tool 'add'" in r.text and "clashes" in r.text, r.text
    twice = skill_flow([inline("add", ADD), "add"])
    r = ask(skill_server, user_id, twice)
    assert r.status_code == 400 and "skill 'add' is given twice" in r.text, r.text
    builtin = skill_flow([inline("past_runs", "def past_runs(x: int) -> int:\n    '''x'''\n    return x\n")])
    r = ask(skill_server, user_id, builtin)
    assert r.status_code == 400 and "built-in" in r.text, r.text
    no_llm = wf.autonomous(wf.assistant("caller"), sender=wf.userproxy(skills=[inline("add", ADD)]))
    r = ask(skill_server, user_id, no_llm)
    assert r.status_code == 400 and "need an llm_config" in r.text, r.text
    assert llm.served == []


@pytest.mark.parametrize(
    ("name", "code", "arguments", "error"),
    [
        ("crash", RAISES, {"x": 1}, "Error: ZeroDivisionError: division by zero (line 3 of the skill)"),
        ("spin", LOOPS, {}, "Error: the skill 'spin' ran longer than 5 s and was stopped"),
        ("flood", FLOODS, {}, "Error: the skill's result was larger than the sandbox's output limit"),
    ],
)
def test_a_skill_that_raises_loops_or_floods_is_reported_to_the_agent_as_an_error(
    skill_server, llm, user_id, name, code, arguments, error
):
    llm.responder = use_the_result(call(name, **arguments))
    started = time.monotonic()
    r = ask(skill_server, user_id, skill_flow([inline(name, code)], proxy_execution="local"))
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 60
    assert tool_messages(llm.served[1].body)[0]["content"] == error
    assert answer(r) == f"The tool said: {error}."


def test_every_tool_call_is_an_event(skill_server, llm, user_id):
    llm.responder = use_the_result(call("add", a=1, b=1))
    body = {"message": wf.message(user_id, "add"), "flow_config": skill_flow([inline("add", ADD)])}
    started = skill_server.post("/api/runs", body)
    assert started.status_code == 202, started.text
    run_id = started.json()["data"]["run_id"]
    events = list(read_events(f"{skill_server.url}/api/runs/{run_id}/events?user_id={user_id}"))
    kinds = [e.type for e in events]
    call_event = next(e for e in events if e.type == "tool_call")
    result_event = next(e for e in events if e.type == "tool_result")
    assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("final")
    assert call_event.data == {
        "name": "add",
        "arguments": {"a": 1, "b": 1},
        "agent": "userproxy",
        "origin": "skill",
    }
    assert result_event.data["result"] == 2 and result_event.data["agent"] == "userproxy"
    assert result_event.data["duration_s"] > 0 and "error" not in result_event.data


def test_a_failed_call_is_an_event_with_its_error(skill_server, llm, user_id):
    llm.responder = use_the_result(call("crash", x=3))
    flow = skill_flow([inline("crash", RAISES)], proxy_execution="local")
    started = skill_server.post("/api/runs", {"message": wf.message(user_id, "crash"), "flow_config": flow})
    run_id = started.json()["data"]["run_id"]
    events = list(read_events(f"{skill_server.url}/api/runs/{run_id}/events?user_id={user_id}"))
    result_event = next(e for e in events if e.type == "tool_result")
    assert result_event.data["error"].startswith("ZeroDivisionError: division by zero")
    assert "result" not in result_event.data


def test_the_skill_library_is_each_users_own(skill_server, llm, user_id):
    other = "other-" + user_id
    mul = {
        "user_id": user_id,
        "name": "mul",
        "description": "",
        "code": ADD.replace("add", "mul").replace("+", "*"),
    }
    r = skill_server.post("/api/skills", mul)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "mul" and r.json()["data"]["code"] == mul["code"]
    assert skill_server.post("/api/skills", mul).status_code == 400  # stored once
    bad = {**mul, "name": "broken", "code": "def broken(x):\n    '''x'''\n"}
    r = skill_server.post("/api/skills", bad)
    assert r.status_code == 400 and "argument 'x' has no type hint" in r.text
    reserved = {
        **mul,
        "name": "past_runs",
        "code": "def past_runs(x: int) -> int:\n    '''x'''\n    return x\n",
    }
    assert skill_server.post("/api/skills", reserved).status_code == 400
    listed = skill_server.get("/api/skills", user_id=user_id).json()["data"]
    assert [s["name"] for s in listed] == ["mul"]
    assert skill_server.get("/api/skills", user_id=other).json()["data"] == []
    assert skill_server.get("/api/skills/mul", user_id=user_id).status_code == 200
    assert skill_server.get("/api/skills/mul", user_id=other).status_code == 404
    update = {"user_id": other, "description": "x", "code": mul["code"]}
    assert skill_server.http.put(f"{skill_server.url}/api/skills/mul", json=update).status_code == 404
    assert (
        skill_server.http.delete(f"{skill_server.url}/api/skills/mul", params={"user_id": other}).status_code
        == 404
    )

    # Named in a workflow: the owner's runs use it; another user's config naming it is a 400.
    llm.responder = use_the_result(call("mul", a=6, b=7))
    r = ask(skill_server, user_id, skill_flow(["mul"]))
    assert r.status_code == 200 and answer(r) == "The tool said: 42.", r.text
    r = ask(skill_server, other, skill_flow(["mul"]))
    assert r.status_code == 400 and "you have no skill named 'mul'" in r.text

    # Updated: the next run uses the new code.
    update = {"user_id": user_id, "description": "Power.", "code": mul["code"].replace("a * b", "a ** b")}
    r = skill_server.http.put(f"{skill_server.url}/api/skills/mul", json=update)
    assert r.status_code == 200 and r.json()["data"]["description"] == "Power.", r.text
    llm.reset()
    llm.responder = use_the_result(call("mul", a=2, b=5))
    r = ask(skill_server, user_id, skill_flow(["mul"]))
    assert answer(r) == "The tool said: 32.", r.text

    r = skill_server.http.delete(f"{skill_server.url}/api/skills/mul", params={"user_id": user_id})
    assert r.status_code == 200
    assert skill_server.get("/api/skills/mul", user_id=user_id).status_code == 404
    assert ask(skill_server, user_id, skill_flow(["mul"])).status_code == 400


def test_an_mcp_servers_tools_are_offered_and_called(skill_server, llm, user_id, mcp_url):
    llm.responder = use_the_result(call("multiply", a=6, b=7))
    flow = skill_flow([], mcp_servers=[{"name": "calc", "url": mcp_url}])
    r = ask(skill_server, user_id, flow)
    assert r.status_code == 200, r.text
    assert answer(r) == "The tool said: 42."
    offered = llm.served[0].body["tools"][0]["function"]
    assert offered["name"] == "multiply" and offered["description"] == "Multiply two integers."
    assert set(offered["parameters"]["properties"]) == {"a", "b"}


def test_an_mcp_server_that_is_not_allowed_is_a_400(skill_server, llm, user_id):
    flow = skill_flow([], mcp_servers=[{"name": "evil", "url": "http://127.0.0.2:9/mcp"}])
    r = ask(skill_server, user_id, flow)
    assert r.status_code == 400, r.text
    assert "mcp_servers[0].url" in r.text and "tools.mcp_allowed_urls" in r.text
    assert llm.served == []
