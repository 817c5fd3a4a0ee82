"""Function calling on the embedded model server: OpenAI `tools` in, `tool_calls` out.

Runs in the model server process (``_server_main.py``, which imports nothing from autobots);
pure functions, no llama.cpp here.

The format: the model's own chat template (the GGUF's, rendered by llama.cpp's Jinja2 chat
formatter, which passes `tools` to it). Qwen2.5 (Coder included) was trained on it: the tools
go into the system prompt as `<tools>` JSON, the model answers a call as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, and a tool's result comes back as
`<tool_response>`. llama.cpp's own `chatml-function-calling` format was tried first and does
not fit: its template drops `tool` messages, so the model never sees a tool's result and
cannot use it in its answer.

What llama.cpp leaves to the caller, done here:
- before: an earlier call's `arguments` (a JSON string in OpenAI's shape) becomes the object
  the template writes back as JSON (`prepare_messages`), so the model reads its own calls as
  it wrote them;
- after: the `<tool_call>` blocks of the generated text become OpenAI `tool_calls` (and
  `finish_reason: tool_calls`), for tools the request offered only; a bare JSON object
  `{"name", "arguments"}` (small models drop the tags) counts too (`to_tool_calls`);
- streaming: the whole answer is generated first (a call is only known once it is complete),
  then sent as OpenAI chunks (`as_chunks`), usage last when asked for.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def wants_tools(body: dict[str, Any]) -> bool:
    """Whether a request offers tools the model may choose to call (not a forced one: llama.cpp
    answers `tool_choice: {function}` with a grammar-constrained call of its own)."""
    choice = body.get("tool_choice")
    return bool(body.get("tools")) and (choice is None or choice in ("auto", "required"))


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each earlier call's arguments as an object, for the template."""
    prepared = []
    for message in messages:
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            fixed = []
            for call in calls:
                function = dict(call.get("function") or {})
                if isinstance(function.get("arguments"), str):
                    with contextlib.suppress(ValueError):  # not JSON: the template writes it as is
                        function["arguments"] = json.loads(function["arguments"])
                fixed.append({**call, "function": function})
            message = {**message, "tool_calls": fixed, "content": message.get("content") or ""}
        prepared.append(message)
    return prepared


def _parsed_call(text: str, names: set[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": data["name"], "arguments": json.dumps(arguments)},
    }


def find_calls(text: str, names: set[str]) -> tuple[list[dict[str, Any]], str]:
    """The calls of offered tools in `text`, and the text around them."""
    calls = [c for m in _CALL.finditer(text) if (c := _parsed_call(m.group(1), names)) is not None]
    if calls:
        return calls, _CALL.sub("", text).strip()
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    bare = _parsed_call(fenced.group(1) if fenced else stripped, names)
    return ([bare], "") if bare is not None else ([], text)


def to_tool_calls(completion: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat completion whose text calls offered tools, as OpenAI's `tool_calls`."""
    names = {str((t.get("function") or {}).get("name")) for t in tools}
    choice = completion["choices"][0]
    calls, rest = find_calls(choice["message"].get("content") or "", names)
    if not calls:
        return completion
    message = {"role": "assistant", "content": rest or None, "tool_calls": calls}
    return {**completion, "choices": [{**choice, "message": message, "finish_reason": "tool_calls"}]}


def as_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """A whole chat completion as the chunks of a stream."""
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    choice = completion["choices"][0]
    message = choice["message"]
    yield {
        **base,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": message.get("content") or ""},
                "finish_reason": None,
            }
        ],
    }
    for i, call in enumerate(message.get("tool_calls") or []):
        delta = {"tool_calls": [{"index": i, **call}]}
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason") or "stop"}],
    }
    if include_usage and completion.get("usage"):
        yield {**base, "choices": [], "usage": completion["usage"]}
