"""Every message agents say to each other, captured as it is sent.

A hook on each agent's `process_message_before_send` sees each message once, at the moment it is
said, in the thread that says it. A group chat manager's sends are relays of a member's message to
the other members, so they are not recorded again. A message of function calling keeps its tool
calls (or the results given back) beside its text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autogen import Agent, ConversableAgent, GroupChatManager

from ..llm.usage import UsageRecorder, summarize


@dataclass(frozen=True)
class InnerMessage:
    sender: str
    recipient: str
    content: str
    timestamp: datetime
    usage: dict[str, Any] | None = None
    # The tools the message calls ({id, name, arguments}), or the results it gives back
    # ({tool_call_id, content}); only messages of function calling have them.
    tool_calls: list[dict[str, Any]] | None = None
    tool_responses: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        said: dict[str, Any] = {
            "sender": self.sender,
            "recipient": self.recipient,
            "content": self.content,
            "timestamp": self.timestamp.isoformat(),
            "usage": self.usage,
        }
        if self.tool_calls:
            said["tool_calls"] = self.tool_calls
        if self.tool_responses:
            said["tool_responses"] = self.tool_responses
        return said


def tool_parts(
    message: dict[str, Any] | str,
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """The tool calls and tool results an AutoGen message carries, in a plain shape."""
    if not isinstance(message, dict):
        return None, None
    calls = [
        {
            "id": c.get("id"),
            "name": (c.get("function") or {}).get("name"),
            "arguments": (c.get("function") or {}).get("arguments"),
        }
        for c in message.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    responses = [
        {"tool_call_id": r.get("tool_call_id"), "content": r.get("content")}
        for r in message.get("tool_responses") or []
        if isinstance(r, dict)
    ]
    return calls or None, responses or None


def message_text(message: dict[str, Any] | str | None) -> str:
    """The readable text of an AutoGen message (content, or a description of a tool call)."""
    if message is None:
        return ""
    if isinstance(message, str):
        return message
    content = message.get("content")
    if isinstance(content, list):  # multimodal parts
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        return str(content)
    calls = message.get("tool_calls") or ([message["function_call"]] if message.get("function_call") else [])
    names = [c.get("function", c).get("name", "?") for c in calls if isinstance(c, dict)]
    return f"[calls {', '.join(names)}]" if names else ""


class Transcript:
    """The run's inner messages, in the order they were said; `scope()` gives one chat's share."""

    def __init__(
        self, recorder: UsageRecorder, on_message: Callable[[InnerMessage], None] | None = None
    ) -> None:
        self._recorder = recorder
        self._on_message = on_message
        self._lock = threading.Lock()
        self._messages: list[InnerMessage] = []
        self._local = threading.local()  # per thread: receivers of one run chat in parallel

    def attach(self, agent: ConversableAgent) -> None:
        if isinstance(agent, GroupChatManager):
            return

        def hook(sender: Agent, message: dict[str, Any] | str, recipient: Agent, silent: bool) -> Any:
            if not getattr(self._local, "muted", False):
                self._record(sender.name, recipient.name, message_text(message), *tool_parts(message))
            return message

        agent.register_hook("process_message_before_send", hook)

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Replaying earlier turns into fresh agents is not something said in this run."""
        self._local.muted = True
        try:
            yield
        finally:
            self._local.muted = False

    def set_speaker(self, agent: str) -> None:
        """The agent about to call the LLM in this thread (streamed tokens are its words)."""
        self._local.speaker = agent

    def speaker(self) -> str | None:
        return getattr(self._local, "speaker", None)

    @contextmanager
    def chat(self, initiator: str) -> Iterator[ChatScope]:
        """Collect the messages of one chat, said in this thread, into their own scope."""
        previous = getattr(self._local, "scope", None)
        scope = ChatScope(initiator)
        self._local.scope = scope
        try:
            yield scope
        finally:
            self._local.scope = previous

    def _record(
        self,
        sender: str,
        recipient: str,
        content: str,
        tool_calls: list[dict[str, Any]] | None = None,
        tool_responses: list[dict[str, Any]] | None = None,
    ) -> None:
        scope: ChatScope | None = getattr(self._local, "scope", None)
        calls = self._recorder.take_pending(sender)
        usage = summarize(calls) if calls else None
        if usage is not None:
            usage = {
                k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens", "total_cost")
            }
            usage["llm_calls"] = len(calls)
        msg = InnerMessage(sender, recipient, content, datetime.now(UTC), usage, tool_calls, tool_responses)
        with self._lock:
            self._messages.append(msg)
        if scope is not None:
            scope.add(msg)
        if self._on_message is not None:
            self._on_message(msg)

    @property
    def messages(self) -> list[InnerMessage]:
        with self._lock:
            return list(self._messages)


@dataclass
class ChatScope:
    """The messages of one chat within a run (receivers of one run chat at the same time)."""

    initiator: str
    messages: list[InnerMessage] = field(default_factory=list)

    def add(self, message: InnerMessage) -> None:
        self.messages.append(message)

    def final_answer(self) -> str:
        """The last thing an agent other than the initiator said, without the TERMINATE marker."""
        for msg in reversed(self.messages):
            if msg.sender == self.initiator:
                continue
            text = strip_terminate(msg.content)
            if text:
                return text
        return ""


def strip_terminate(text: str, keyword: str = "TERMINATE") -> str:
    stripped = text.rstrip()
    while stripped.endswith(keyword):
        stripped = stripped[: -len(keyword)].rstrip()
    return stripped
