"""A generation nobody waits for stops, for real, on SmolLM2-135M: a dropped stream, an abandoned
call, calls cancelled by their run's tag, and a call abandoned while still queued."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import openai
import pytest

from autobots.llm.embedded import (
    EmbeddedEndpoint,
    EmbeddedSettings,
    embedded_endpoint,
    shutdown,
)
from tests.embedded_support import (
    NO_EOS,
    SMALL,
    _delta,
    _small_settings,
    _stats,
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


def test_a_dropped_stream_stops_generating(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    """A client that closes its stream frees the model at once, not after max_tokens."""
    before = _stats(endpoint)
    stream = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
        max_tokens=1500,
        temperature=0,
        logit_bias=NO_EOS,  # type: ignore[arg-type]
        stream=True,
    )
    received = 0
    for chunk in stream:
        received += bool(chunk.choices and chunk.choices[0].delta.content)
        if received == 2:
            break
    stream.close()
    # Queued behind the dropped generation on the model lock: once it is answered, the
    # dropped one has stopped, and the counters tell how far it went.
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.choices[0].message.content is not None and follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    dropped = delta["completion_tokens"] - follow_up.usage.completion_tokens
    assert 2 <= dropped < 300, f"the dropped stream generated {dropped} of its 1500 tokens"
    assert delta["generations"] == 2 and delta["cancelled"] == 1


def test_an_abandoned_call_stops_generating(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    """A non-streaming caller that gives up (its timeout, a cancelled run) frees the model too."""
    impatient = client.with_options(timeout=1.0, max_retries=0)
    before = _stats(endpoint)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model=SMALL,
            messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
            max_tokens=1900,
            temperature=0,
            logit_bias=NO_EOS,  # type: ignore[arg-type]
        )
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    abandoned = delta["completion_tokens"] - follow_up.usage.completion_tokens
    assert abandoned < 1900, "the abandoned call generated all its tokens"
    assert delta["generations"] == 2 and delta["cancelled"] == 1


def test_tagged_calls_stop_when_their_tag_is_cancelled(endpoint: EmbeddedEndpoint) -> None:
    """A run's calls carry its id; cancelling the run stops them at once, the running one and
    the one still queued behind it, and each caller gets its answer back right away."""
    tagged = openai.OpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        max_retries=0,
        timeout=120,
        default_headers=endpoint.config_entry("run-cancel-me")["default_headers"],
    )
    before = _stats(endpoint)
    outcomes: list[str] = []

    def long_call(stream: bool) -> None:
        try:
            reply = tagged.chat.completions.create(
                model=SMALL,
                messages=[{"role": "user", "content": "Tell me a very long story about a lighthouse."}],
                max_tokens=1900,
                temperature=0,
                logit_bias=NO_EOS,  # type: ignore[arg-type]
                stream=stream,
            )
            if stream:
                list(reply)  # type: ignore[arg-type]
            outcomes.append("answered")
        except openai.APIError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=long_call, args=(stream,)) for stream in (True, False)]
    for thread in threads:
        thread.start()
        time.sleep(0.5)  # the stream generates; the other call queues behind it
    assert endpoint.cancel("run-cancel-me") == 2
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a cancelled call kept its caller waiting"
    assert len(outcomes) == 2
    assert endpoint.cancel("run-cancel-me") == 0  # nothing of that run is left
    delta = _delta(_stats(endpoint), before)
    assert delta["completion_tokens"] < 1900, "the cancelled stream generated all its tokens"
    assert delta["generations"] == 1, "the cancelled queued call was generated for nobody"


def test_a_call_abandoned_while_queued_never_generates(
    endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """A caller that gives up while waiting for the model costs nothing once its turn comes."""
    before = _stats(endpoint)
    busy = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Tell me a long story about a harbour."}],
        max_tokens=200,
        temperature=0,
        logit_bias=NO_EOS,  # type: ignore[arg-type]
        stream=True,
    )
    chunks = iter(busy)
    next(chunks)  # generating now, holding the model until its 200 tokens are written
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=1.0, max_retries=0).chat.completions.create(
            model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=100
        )
    rest = list(chunks)
    assert rest[-1].choices[0].finish_reason == "length"  # the busy stream was not disturbed
    follow_up = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
    )
    assert follow_up.usage is not None
    delta = _delta(_stats(endpoint), before)
    assert delta["generations"] == 2, "the abandoned queued call was generated for nobody"
    assert delta["cancelled"] == 0
    assert delta["completion_tokens"] == 200 + follow_up.usage.completion_tokens
