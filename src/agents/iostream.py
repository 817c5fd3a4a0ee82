"""Where AutoGen prints to and asks input from, per run.

AutoGen prints every message to the console by default; a server running a hundred chats at once
must not, so each run gets its own stream. Messages reach users through the run's transcript;
streamed tokens and requests for a human's reply go to the run's observer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autogen.events.client_events import StreamEvent

from autobots.agents.transcript import Transcript


class RunIOStream:
    """AutoGen's IOStream protocol for one run. With nobody to ask, a human's reply is empty,
    which AutoGen treats as "no input" (as in human_input_mode NEVER)."""

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
            self._on_event("token", {"agent": agent, "delta": str(content)})

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        if self._ask_human is None:
            return ""
        return self._ask_human(prompt)
