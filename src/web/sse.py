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


def last_event_id(header: str | None, query: int | None) -> int:
    """Where a listener resumes: after the `Last-Event-ID` header, else `?last_event_id=` (already
    checked by the query model: an integer from 0 to MAX_EVENT_ID); 0 from the start. A header
    that is not a number is 0, as browsers may send anything; a number out of range is a 400."""
    if header is None or not header.strip():
        return query or 0
    try:
        after = int(header.strip())
    except ValueError:
        return 0
    if after > MAX_EVENT_ID:
        raise BadRequest(f"invalid request: Last-Event-ID: must be at most {MAX_EVENT_ID}")
    return max(0, after)
