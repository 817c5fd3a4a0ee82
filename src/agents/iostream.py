"""Where AutoGen prints to and asks input from, per run.

AutoGen prints every message to the console by default; a server running a hundred chats at once
must not, so each run gets its own stream. Messages reach users through the run's transcript.
"""

from __future__ import annotations

from typing import Any


class QuietIOStream:
    """AutoGen's IOStream protocol: prints nothing; a human asked for input answers nothing,
    which AutoGen treats as "no input" (as in human_input_mode NEVER)."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        return None

    def send(self, message: Any) -> None:
        return None

    def input(self, prompt: str = "", *, password: bool = False) -> str:
        return ""
