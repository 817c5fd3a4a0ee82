"""What the embedded-model test files share: the small model's names, the server's counters, a
Python subprocess; each file starts its own server (its own fixtures), so each passes alone."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from autobots.llm.embedded import EmbeddedEndpoint, EmbeddedSettings
from autobots.llm.embedded._protocol import HEALTH_PATH, process_start_time
from autobots.llm.embedded.registry import QWEN_CODER_1_5B, SMOLLM2_135M

SMALL = SMOLLM2_135M.alias
QWEN = QWEN_CODER_1_5B.alias
# SmolLM2's end-of-generation tokens, banned so a reply runs to max_tokens unless stopped.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def _small_settings(cache_dir: Path, **extra: Any) -> EmbeddedSettings:
    return EmbeddedSettings(default_model=SMALL, models=[SMALL], cache_dir=str(cache_dir), **extra)


def _state(settings: EmbeddedSettings) -> dict[str, Any]:
    return json.loads((settings.resolved_server_dir() / "state.json").read_text())


def _wait_gone(pid: int, start: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_start_time(pid) != start:
            return True
        time.sleep(0.1)
    return False


def _stats(endpoint: EmbeddedEndpoint, model: str = SMALL) -> dict[str, int]:
    """The server's own counters for ``model``, from its lock-free health route."""
    return _health(endpoint)["stats"][model]


def _health(endpoint: EmbeddedEndpoint) -> dict[str, Any]:
    port = urlparse(endpoint.base_url).port
    response = httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.json()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


def _run_python(code: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
