"""Where AutoGen prints to and asks input from, per run.

AutoGen prints every message to the console by default; a server running a hundred chats at once
must not, so each run gets its own stream. Messages reach users through the run's transcript;
streamed tokens and requests for a human's reply go to the run's observer.

A human who does not answer (nobody to ask, an empty reply, the input timeout) must leave the
chat exactly where AutoGen's NEVER mode would. Answering AutoGen's prompt with "" does not: in
ALWAYS mode "" means "auto-reply" with no regard for max_consecutive_auto_reply, and in TERMINATE
mode at the auto-reply limit it also auto-replies where NEVER stops. So the stream answers
"exit" when NEVER would end the chat (a termination message, or the agent's auto-reply counter
for that sender at its limit) and "" otherwise. To see the asking agent's counter, the agents of
a run get their `check_termination_and_human_reply` wrapped (`answer_silence_as_never`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from autogen import Agent, ConversableAgent
from autogen.events.client_events import StreamEvent

from ..schemas.runs import EventKind
from .transcript import Transcript

# The agent deciding whether to ask a human now, with the messages and sender it decides on.
_ASKING: ContextVar[tuple[ConversableAgent, list[dict[str, Any]] | None, Agent | None] | None] = ContextVar(
    "autobots_asking", default=None
)
_CHECK = ConversableAgent.check_termination_and_human_reply


def answer_silence_as_never(agent: ConversableAgent) -> None:
    """Let the run's stream see which agent asks a human, so that no answer acts as NEVER."""

    def check(
        self: ConversableAgent,
        messages: list[dict[str, Any]] | None = None,
        sender: Agent | None = None,
        config: Any | None = None,
        iostream: Any | None = None,
    ) -> tuple[bool, str | None]:
        token = _ASKING.set((self, messages, sender))
        try:
            return _CHECK(self, messages=messages, sender=sender, config=config, iostream=iostream)
        finally:
            _ASKING.reset(token)

    agent.replace_reply_func(_CHECK, check)


def never_mode_answer() -> str:
    """What NEVER mode would do at this prompt: "exit" to end the chat, "" to auto-reply."""
    asking = _ASKING.get()
    if asking is None:  # not a prompt for a reply (e.g. a manual speaker choice)
        return ""
    agent, messages, sender = asking
    if messages is None:
        messages = agent._oai_messages[sender] if sender is not None else []
    if not messages:
        return ""
    if agent._consecutive_auto_reply_counter[sender] >= agent._max_consecutive_auto_reply_dict[sender]:
        return "exit"
    return "exit" if agent._is_termination_msg(messages[-1]) else ""


class RunIOStream:
    """AutoGen's IOStream protocol for one run. With nobody to ask, or no answer, the asking
    agent goes on as in human_input_mode NEVER."""

    def __init__(
        self,
        ask_human: Callable[[str], str] | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self._ask_human = ask_human
        self._on_event = on_event
        self._transcript = transcript

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        return None

    def send(self, message: Any) -> None:
        if self._on_event is None or not isinstance(message, StreamEvent):
            return
        content = getattr(message.content, "content", None)  # AutoGen wraps the event
        if content:
            agent = self._transcript.speaker() if self._transcript is not None else None
            self._on_event(EventKind.TOKEN, {"agent": agent, "delta": str(content)})

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        answer = self._ask_human(prompt) if self._ask_human is not None else ""
        return answer or never_mode_answer()
