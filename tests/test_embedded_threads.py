"""``embedded.thread_policy`` reaches llama.cpp in the managed model server (real SmolLM2).

The server reports, per loaded model, the thread count llama.cpp itself holds
(``llama_n_threads``) and the OpenMP wait policy it was loaded with; these tests read that
report from ``/autobots/health`` after real generations.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest
from pydantic import ValidationError

from autobots.llm.embedded import EmbeddedEndpoint, EmbeddedSettings, embedded_endpoint, shutdown
from autobots.llm.embedded._protocol import HEALTH_PATH
from autobots.llm.embedded._threads import threads_for

SMALL = "embedded:smollm2-135m"
CORES = len(os.sched_getaffinity(0))

pytest.importorskip("llama_cpp")


def _threads(endpoint: EmbeddedEndpoint) -> dict[str, Any]:
    port = urlparse(endpoint.base_url).port
    response = httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=10, trust_env=False)
    response.raise_for_status()
    return response.json()["threads"][SMALL]


def _generate(endpoint: EmbeddedEndpoint, max_tokens: int = 200) -> None:
    client = openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key, max_retries=0, timeout=300)
    client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Count from 1 to 300, one number per line."}],
        max_tokens=max_tokens,
        temperature=0,
    )


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EmbeddedEndpoint]:
    settings = EmbeddedSettings(
        default_model=SMALL, models=[SMALL], cache_dir=str(tmp_path), n_threads=CORES, **request.param
    )
    try:
        yield embedded_endpoint(SMALL, settings)
    finally:
        shutdown()


def test_thread_count_follows_the_cores_others_leave_free() -> None:
    assert threads_for(0.0, cores=2, max_threads=2) == 2
    assert threads_for(0.3, cores=2, max_threads=2) == 2
    assert threads_for(0.7, cores=2, max_threads=2) == 1
    assert threads_for(1.4, cores=2, max_threads=2) == 1  # never below one
    assert threads_for(0.0, cores=8, max_threads=4) == 4  # never above n_threads
    assert EmbeddedSettings().thread_policy == "adaptive"
    with pytest.raises(ValidationError):
        EmbeddedSettings(thread_policy="busy")


@pytest.mark.parametrize("server", [{"thread_policy": "sleep"}], indirect=True)
def test_sleep_policy_loads_llama_cpp_with_passive_waits(server: EmbeddedEndpoint) -> None:
    _generate(server, max_tokens=16)
    report = _threads(server)
    assert report["policy"] == "sleep"
    assert report["omp_wait_policy"] == "PASSIVE"
    assert report["llama_n_threads"] == CORES
    assert report["changes"] == 0


@pytest.mark.skipif(CORES < 2, reason="needs two cores to have a thread to give up")
@pytest.mark.parametrize("server", [{"thread_policy": "adaptive"}], indirect=True)
def test_adaptive_policy_gives_up_threads_beside_busy_processes(server: EmbeddedEndpoint) -> None:
    report = _threads(server)
    assert report["policy"] == "adaptive"
    assert report["omp_wait_policy"] != "PASSIVE"
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(CORES)
    ]
    try:
        time.sleep(0.5)
        for _ in range(5):
            _generate(server)
            report = _threads(server)
            if report["llama_n_threads"] == 1:
                break
        assert report["llama_n_threads"] == 1, report
        assert report["llama_n_threads_batch"] == 1, report
        assert report["others_cores"] >= 0.5, report
    finally:
        for process in busy:
            process.kill()
        for process in busy:
            process.wait()
    # Once the machine is free again, the threads come back.
    time.sleep(0.5)
    for _ in range(5):
        _generate(server)
        report = _threads(server)
        if report["llama_n_threads"] == CORES:
            break
    assert report["llama_n_threads"] == CORES, report
    assert report["changes"] >= 2, report
