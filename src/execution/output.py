"""Bounded capture of what sandboxed code prints.

Code can print gigabytes; the output goes into an LLM prompt and the database, so
only a bounded amount is kept. The head and a short tail are kept because a
traceback (the part an LLM needs to fix its code) is usually at the end.
"""

from __future__ import annotations

import threading

_TAIL_MAX_BYTES = 4096


class OutputCollector:
    """Keeps at most ``limit`` bytes of a stream: its head and its tail.

    Thread-safe: a reader thread may still feed it while the caller, having given up
    on a hung sandbox, takes the text.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tail_limit = min(limit // 4, _TAIL_MAX_BYTES)
        self._head_limit = limit - self._tail_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self._lock = threading.Lock()

    def feed(self, data: bytes) -> None:
        """Add a chunk; memory stays bounded whatever the chunk sizes."""
        if not data:
            return
        with self._lock:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self._tail_limit:
            self._tail += data[-self._tail_limit :]
            if len(self._tail) > self._tail_limit:
                del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def truncated(self) -> bool:
        """True if anything was dropped."""
        return self.total > self.limit

    def text(self) -> str:
        """The kept output as text, with a note saying where and how much was cut."""
        with self._lock:
            return self._text()

    def _text(self) -> str:
        if not self.truncated:
            return (bytes(self._head) + bytes(self._tail)).decode("utf-8", errors="replace")
        omitted = self.total - len(self._head) - len(self._tail)
        note = (
            f"\n[output truncated: the code printed {self.total} bytes, more than the "
            f"{self.limit}-byte limit; {omitted} bytes in the middle were cut]\n"
        )
        return (
            bytes(self._head).decode("utf-8", errors="replace")
            + note
            + bytes(self._tail).decode("utf-8", errors="replace")
        )


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    """Cap an already assembled text (several blocks' outputs) at ``limit`` bytes."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    collector = OutputCollector(limit)
    collector.feed(data)
    return collector.text(), True
