"""Shared fixtures: a scripted OpenAI-compatible LLM server and the real autobots server.

The autobots server runs as its own process (gunicorn, as users run it) on a real SQLite file,
and reaches the scripted LLM over HTTP through the real openai SDK.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.scripted_llm import ScriptedLLM
from tests.support.server import RunningServer, start_server

SERVER_KEY = "sk-test-SERVERSECRET-0123456789"


@pytest.fixture(scope="session")
def llm_server() -> Iterator[ScriptedLLM]:
    llm = ScriptedLLM().start()
    yield llm
    llm.stop()


@pytest.fixture
def llm(llm_server: ScriptedLLM) -> Iterator[ScriptedLLM]:
    """The scripted LLM, emptied of earlier scripts and records."""
    llm_server.reset()
    llm_server.latency = 0.0
    yield llm_server
    llm_server.reset()


@pytest.fixture(scope="session")
def server(llm_server: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("server")
    srv = start_server(workdir, env={"OPENAI_API_KEY": SERVER_KEY, "OPENAI_BASE_URL": llm_server.base_url})
    yield srv
    srv.stop()


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def tmp_workdir(tmp_path: Path) -> Path:
    return tmp_path
