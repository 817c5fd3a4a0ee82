"""A small Server-Sent Events reader over requests, for tests and benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]


def read_events(
    url: str, last_event_id: int | None = None, timeout: float = 60, headers: dict[str, str] | None = None
) -> Iterator[Event]:
    headers = {"Accept": "text/event-stream", **(headers or {})}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        fields: dict[str, str] = {}
        for raw in response.iter_lines(decode_unicode=True):
            if raw is None:
                continue
            if raw == "":
                if "data" in fields:
                    yield Event(
                        int(fields.get("id", "0")), fields.get("event", "message"), json.loads(fields["data"])
                    )
                fields = {}
                continue
            if raw.startswith(":"):
                continue
            name, _, value = raw.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
