"""Any workflow as an OpenAI chat model: `GET /v1/models`, `POST /v1/chat/completions`.

Why: a team served as an OpenAI-compatible endpoint can be used from any OpenAI client or chat
UI, with no client of ours. The contract:
- `model` names a workflow: a saved workflow's id or a built-in's (`builtin:...`), or a name (the
  user's own workflow of that name first, then a built-in of it). Unknown: `NotFound` (404).
- The last message must be the user's: it is the task. The earlier `user` and `assistant`
  messages are the session history the team is given (as a session's stored messages would be,
  the newest `limits.history_messages` of them); `system` and `developer` messages are not
  passed on (the workflow's agents have their own system messages), nor are tool messages.
  Content is text (a string, or `text` parts); any other part is a 400.
- A run goes through the run machinery like `POST /api/messages` (`RunManager`: limits, the
  wall-time cap, stored events, both modes), not interactive (no human is asked), and records
  the workflow id and version. It is stored in a new session, or in `metadata.session_id` when
  the request names one (the user's own; made if new).
- The reply's content is the team's answer; `usage` is the run's exact token counts.
- Streaming (`stream: true`): `chat.completion.chunk`s as SSE `data:` lines, then
  `data: [DONE]`. The first chunk has the role; the agents' inner work (their messages, LLM
  calls, code runs, tool calls) comes as chunks with an empty `delta` and a non-standard field
  `autobots_event: {"type", "data"}` (ignored by ordinary clients); the answer comes as one
  content delta as soon as the run has it, then a chunk with `finish_reason`, and with
  `stream_options.include_usage` a last chunk with `usage` and no choices. A run that fails
  once streaming has begun ends the stream with `data: {"error": {...}}` (the openai SDK raises
  it); a client that goes away cancels the run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..agents.workflows import Turn
from ..schemas.chat import Message
from ..schemas.runs import EventKind
from ..schemas.validation import describe_validation
from ..schemas.workflow import AgentWorkFlowConfig
from ..schemas.workflows import SavedWorkflow, WorkflowRef
from .errors import BadRequest, NotFound
from .runs import HEARTBEAT, RunManager
from .workflows import WorkflowService

log = logging.getLogger(__name__)

# Events that are not the agents' inner work: the answer and the run's end are said otherwise,
# and the agents' streamed tokens would drown a client in chunks.
NOT_FORWARDED = frozenset({EventKind.TOKEN, EventKind.STATUS, EventKind.FINAL, EventKind.ERROR})
MAX_MODELS = 500
HISTORY_ROLES = frozenset({"user", "assistant"})


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ChatMessage:
        if isinstance(self.content, list):
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content is supported (parts of type 'text')")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p["text"]) for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, str] | None = None

    @model_validator(mode="after")
    def _ends_with_the_task(self) -> ChatCompletionRequest:
        if self.messages[-1].role != "user":
            raise ValueError("messages: the last message must be the user's (it is the task)")
        session_id = (self.metadata or {}).get("session_id")
        if session_id is not None and not 1 <= len(session_id) <= 100:
            raise ValueError("metadata.session_id: 1 to 100 characters")
        return self

    @property
    def session_id(self) -> str | None:
        return (self.metadata or {}).get("session_id")


def parse_request(body: Any) -> ChatCompletionRequest:
    """The request body, or a 400 naming the field and why."""
    if not isinstance(body, dict):
        raise BadRequest("invalid request: the body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        message, _ = describe_validation(exc)
        raise BadRequest(message) from exc


def model_card(workflow: SavedWorkflow) -> dict[str, Any]:
    created = workflow.created_at
    return {
        "id": workflow.id,
        "object": "model",
        "created": int(created.timestamp()) if created is not None else 0,
        "owned_by": "autobots" if workflow.builtin else "you",
        "name": workflow.name,
        "version": workflow.latest_version,
        "builtin": workflow.builtin,
    }


class OpenAICompat:
    def __init__(self, workflows: WorkflowService, runs: RunManager) -> None:
        self._workflows = workflows
        self._runs = runs

    # models --------------------------------------------------------------------------------

    def models(self, user_id: str) -> dict[str, Any]:
        """The built-ins and the user's newest `MAX_MODELS` saved workflows."""
        cards = [model_card(w) for w in self._workflows.every(user_id, MAX_MODELS)]
        return {"object": "list", "data": cards}

    def model(self, user_id: str, model: str) -> dict[str, Any]:
        return model_card(self._find(user_id, model))

    def _find(self, user_id: str, model: str) -> SavedWorkflow:
        try:
            return self._workflows.find(user_id, model)
        except NotFound as exc:
            raise NotFound(
                f"The model '{model}' does not exist: it must be a workflow id or name (GET /v1/models)"
            ) from exc

    # completions ---------------------------------------------------------------------------

    def _prepare(
        self, user_id: str, request: ChatCompletionRequest
    ) -> tuple[AgentWorkFlowConfig, WorkflowRef, Message, list[Turn]]:
        found = self._find(user_id, request.model)
        flow, ref = self._workflows.resolve(user_id, found.id)
        task = request.messages[-1].text
        history = [Turn(m.role, m.text) for m in request.messages[:-1] if m.role in HISTORY_ROLES]
        try:
            message = Message(user_id=user_id, session_id=request.session_id, content=task)
        except ValidationError as exc:
            raise BadRequest(describe_validation(exc)[0]) from exc
        return flow, ref, message, history

    def complete(self, user_id: str, request: ChatCompletionRequest) -> dict[str, Any]:
        """Run the workflow and wait for its answer: a `chat.completion`."""
        flow, ref, message, history = self._prepare(user_id, request)
        reply = self._runs.run_blocking(message, flow, workflow=ref, history=history)
        meta = reply.metadata or {}
        return {
            "id": _completion_id(meta.get("run_id")),
            "object": "chat.completion",
            "created": int(reply.timestamp.timestamp()),
            "model": request.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": _finish_reason(meta),
                }
            ],
            "usage": usage_of(meta),
            "autobots": _about(meta, reply),
        }

    def stream(self, user_id: str, request: ChatCompletionRequest) -> Iterator[bytes]:
        """Start the run now (a bad request raises here, before any byte is sent), then the
        chunks as the run goes."""
        flow, ref, message, history = self._prepare(user_id, request)
        prepared = self._runs.submit(message, flow, interactive=False, workflow=ref, history=history)
        return self._chunks(user_id, prepared.run_id, request)

    def _chunks(self, user_id: str, run_id: str, request: ChatCompletionRequest) -> Iterator[bytes]:
        runs = self._runs
        base = {
            "id": _completion_id(run_id),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice], **extra})

        ended = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            for event in runs.stream(user_id, run_id):
                if event is HEARTBEAT:
                    yield b": keep-alive\n\n"
                    continue
                _, kind, data = event
                if kind == EventKind.FINAL:
                    reply = Message.model_validate(data["message"])
                    meta = reply.metadata or {}
                    yield chunk({"content": reply.content})
                    yield chunk({}, _finish_reason(meta), autobots=_about(meta, reply))
                    if request.stream_options is not None and request.stream_options.include_usage:
                        yield _sse({**base, "choices": [], "usage": usage_of(meta)})
                    break
                if kind == EventKind.ERROR:
                    error = {"message": str(data.get("message", "the run failed")), "type": "server_error"}
                    yield _sse({"error": {**error, "code": str(data.get("kind", "run_failed"))}})
                    break
                if kind not in NOT_FORWARDED:
                    yield chunk({}, autobots_event={"type": str(kind), "data": data})
            yield b"data: [DONE]\n\n"
            ended = True
        finally:
            if not ended:  # the client went away mid-run: nobody will read the answer
                try:
                    runs.cancel(user_id, run_id)
                except Exception:
                    log.exception("could not cancel run %s after its client went away", run_id)


def usage_of(meta: dict[str, Any]) -> dict[str, int]:
    usage = meta.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def _about(meta: dict[str, Any], reply: Message) -> dict[str, Any]:
    """What an autobots client may want beside the answer (ignored by OpenAI clients)."""
    usage = meta.get("usage") or {}
    return {
        "run_id": meta.get("run_id"),
        "session_id": reply.session_id,
        "status": meta.get("status"),
        "cost_usd": usage.get("total_cost_usd"),
        "llm_calls": usage.get("llm_calls"),
    }


def _finish_reason(meta: dict[str, Any]) -> str:
    return "length" if meta.get("limit_reached") else "stop"


def _completion_id(run_id: Any) -> str:
    return f"chatcmpl-{run_id}"


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'), default=str)}\n\n".encode()
