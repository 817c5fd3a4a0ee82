"""Server-Sent Events on the wire: one format and one reading of `Last-Event-ID`, for the async
stream server (`asgi.py`) and the plain WSGI route alike."""

from __future__ import annotations

import json
from typing import Any

from ..services.errors import BadRequest

# Event ids are stored as 64-bit integers: anything larger cannot name an event.
MAX_EVENT_ID = 2**63 - 1
RETRY = b"retry: 1000\n\n"
KEEPALIVE = b": keep-alive\n\n"


def encode(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def last_event_id(header: str | None, query: str | None) -> int:
    """Where a listener resumes: after `Last-Event-ID` (header, else `?last_event_id=`); 0 from the
    start. Not a number is 0, as browsers may send anything; a number out of range is a 400."""
    raw = (header or query or "0").strip()
    try:
        after = int(raw)
    except ValueError:
        return 0
    if after > MAX_EVENT_ID:
        raise BadRequest(f"invalid request: Last-Event-ID: must be at most {MAX_EVENT_ID}")
    return max(0, after)
