"""Cursors between the API and storage, for every list a service pages (see `schemas/pagination.py`).

A service reads the request's cursor into the sort key storage starts after (`start_after`: a bad
cursor is a `BadRequest`, a 400), and turns the page storage read into what the API returns
(`listing`: the items and the next page's cursor). Sessions, messages and the gallery use it; any
later list (runs, workflows, schedules) pages the same way with its own `kind` and key shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..schemas.pagination import Key, Page, decode_cursor, encode_cursor
from .errors import BadRequest

T = TypeVar("T")


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page as the API returns it: `next_cursor` is None on the last page."""

    items: list[T]
    next_cursor: str | None = None


def start_after(kind: str, cursor: str | None, shape: Sequence[type]) -> Key | None:
    """The sort key a page starts after (None: the first page)."""
    if cursor is None:
        return None
    try:
        return decode_cursor(kind, cursor, shape)
    except ValueError as exc:
        raise BadRequest(f"invalid request: cursor: {exc}") from exc


def listing(kind: str, page: Page[T]) -> Listing[T]:
    next_cursor = None if page.next_key is None else encode_cursor(kind, page.next_key)
    return Listing(page.items, next_cursor)
