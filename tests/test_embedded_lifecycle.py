"""The shared model server's life, for real, on SmolLM2-135M: reused by a second call and by other
processes, never restarted under its users, stopped when they are gone (or after ``linger_s``),
offering every installed model while preparing only the one asked for."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from autobots.llm.embedded import (
    EmbeddedEndpoint,
    EmbeddedModelError,
    EmbeddedSettings,
    embedded_endpoint,
    installed_models,
    shutdown,
)
from autobots.llm.embedded._protocol import process_start_time
from tests.embedded_support import (
    QWEN,
    SMALL,
    _run_python,
    _small_settings,
    _state,
    _wait_gone,
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSettings]:
    """A private cache dir, so these tests get their own server and leave a dev's alone."""
    yield _small_settings(tmp_path_factory.mktemp("embedded-cache"), default_max_tokens=16)
    shutdown()


@pytest.fixture(scope="module")
def endpoint(settings: EmbeddedSettings) -> EmbeddedEndpoint:
    return embedded_endpoint(SMALL, settings)


@pytest.fixture(scope="module")
def client(endpoint: EmbeddedEndpoint) -> openai.OpenAI:
    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=120)


def test_a_server_in_use_is_not_restarted_for_a_model_it_lacks(
    settings: EmbeddedSettings, endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """Another process asking for a model this server does not offer gets a clear error;
    restarting the server would cut off this process's requests."""
    state = _state(settings)
    assert state["models"] == [SMALL]  # these settings offer only the small model
    result = _run_python(
        f"""
        from autobots.llm.embedded import EmbeddedModelError, EmbeddedSettings, embedded_endpoint
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        s = s.model_copy(update={{"models": None}})
        try:
            embedded_endpoint({QWEN!r}, s)
        except EmbeddedModelError as exc:
            print("refused:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "not restarted" in result.stdout
    # Nor for this process, whose other threads may be mid-request on it.
    with pytest.raises(EmbeddedModelError, match="not restarted because this autobots process"):
        embedded_endpoint(QWEN, settings.model_copy(update={"models": None}))
    assert _state(settings)["pid"] == state["pid"]
    assert process_start_time(state["pid"]) == state["start"]
    reply = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_second_call_and_other_process_reuse_the_server(
    settings: EmbeddedSettings, endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    state = _state(settings)
    started = time.perf_counter()
    again = embedded_endpoint(SMALL, settings)
    assert time.perf_counter() - started < 0.5
    assert again == endpoint

    result = _run_python(
        f"""
        import json
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        ep = embedded_endpoint({SMALL!r}, s)
        print(json.dumps({{"base_url": ep.base_url, "api_key": ep.api_key}}))
        """
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"base_url": endpoint.base_url, "api_key": endpoint.api_key}
    # The other process exited; we still use the server, so it must still be the same one.
    assert _state(settings)["pid"] == state["pid"]
    assert process_start_time(state["pid"]) == state["start"]
    reply = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say yes."}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None


def test_server_stops_when_its_users_are_gone(tmp_path: Path) -> None:
    """Clean stop via shutdown() of the last user, and the watchdog after a SIGKILLed user."""
    settings = _small_settings(tmp_path / "cache")
    code = f"""
        import json, sys
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        print(json.load(open(s.resolved_server_dir() / "state.json"))["pid"], flush=True)
        if sys.argv[-1] == "hang":
            sys.stdin.read()
        shutdown()
        """
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.split()[-1])
    assert process_start_time(pid) is None  # shutdown() waited for the server to exit
    assert not (settings.resolved_server_dir() / "state.json").exists()

    user = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), "hang"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert user.stdout is not None
        pid = int(user.stdout.readline())
        start = process_start_time(pid)
        assert start is not None
        user.send_signal(signal.SIGKILL)
        user.wait(timeout=10)
        assert _wait_gone(pid, start, timeout=30), "server outlived its only (killed) user"
    finally:
        user.kill()
        user.wait(timeout=10)


def test_linger_keeps_the_server_warm_for_a_while(tmp_path: Path) -> None:
    settings = _small_settings(tmp_path / "cache", linger_s=3)
    result = _run_python(
        f"""
        import json
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        embedded_endpoint({SMALL!r}, s)
        state = json.load(open(s.resolved_server_dir() / "state.json"))
        shutdown()
        print(state["pid"], state["start"])
        """
    )
    assert result.returncode == 0, result.stderr
    pid_text, start = result.stdout.split()[-2:]
    assert process_start_time(int(pid_text)) == start  # still up right after its last user left
    assert _wait_gone(int(pid_text), start, timeout=30)


def test_every_installed_model_is_offered_but_only_the_asked_one_prepared(tmp_path: Path) -> None:
    """Asking for the small model must not assemble and hash the 1.1 GB default first."""
    settings = EmbeddedSettings(default_model=SMALL, cache_dir=str(tmp_path / "cache"))
    result = _run_python(
        f"""
        import json, urllib.request
        from autobots.llm.embedded import EmbeddedSettings, embedded_endpoint, shutdown
        s = EmbeddedSettings.model_validate_json({settings.model_dump_json()!r})
        ep = embedded_endpoint({SMALL!r}, s)
        state = json.load(open(s.resolved_server_dir() / "state.json"))
        port = ep.base_url.split(":")[2].split("/")[0]
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{{port}}/autobots/health"))
        shutdown()
        print(json.dumps({{"models": state["models"], "loaded": sorted(health["loaded"])}}))
        """
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    expected = [SMALL, QWEN] if QWEN in installed_models() else [SMALL]
    assert seen == {"models": expected, "loaded": [SMALL]}
    cache = tmp_path / "cache"
    assert not list(cache.glob("*.gguf")) and not list(cache.glob(".*.tmp"))
