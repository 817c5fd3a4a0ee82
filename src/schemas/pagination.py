"""Pages of a list: `limit` and an opaque `cursor` in, one page and `next_cursor` out.

Every list endpoint takes `limit` (default 50, at most 500) and `cursor`, and answers with one
page in `data` (a list, as the old clients expect) and `next_cursor` beside it at the envelope's
top level: the cursor of the page after this one, or null on the last page. A client that never
sends a cursor gets the first page and nothing else, so no answer grows with the data.

Why keyset cursors, not offsets: a page is `WHERE sort key < the cursor's key ORDER BY sort key
LIMIT n`, an indexed range read that costs the same on page 1 and page 100, and a cursor stays
right while rows are added (a new row sorts before the first page; it never shifts a later one).
A cursor is base64url of a small JSON array: the list's name, then the sort key of the last row
of the page it came from. Clients must treat it as opaque; one that does not decode, or that was
made by another list, is refused (the services turn the ValueError into a 400).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR_CHARS = 500
# Row ids are 64-bit integers in every database: a larger one in a forged cursor is refused here.
MAX_KEY_INT = 2**63 - 1

# A sort key: the values a page's last row sorts by (a row id, or a timestamp and a row id).
Key = tuple[int | str, ...]


class PageQuery(BaseModel):
    """The query fields of every list endpoint."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(
        default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="items per page (default 50, at most 500)"
    )
    cursor: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CURSOR_CHARS,
        description="the `next_cursor` of the previous page; leave it out for the first page",
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page as storage reads it: the items and, when more follow, the last item's sort key."""

    items: list[T]
    next_key: Key | None = None


def encode_cursor(kind: str, key: Key) -> str:
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(kind: str, cursor: str, shape: Sequence[type]) -> Key:
    """The sort key in a cursor of list `kind`, whose key has the types in `shape`.

    Raises ValueError, saying why, for anything this server did not make for that list."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (UnicodeError, binascii.Error, ValueError, RecursionError) as exc:
        raise ValueError("not a cursor this server made: pass the next_cursor of a page as it is") from exc
    if not isinstance(value, list) or not value or value[0] != kind:
        raise ValueError(f"not a cursor of this list ({kind})")
    key = value[1:]
    if len(key) != len(shape) or not all(
        isinstance(v, t) and not isinstance(v, bool) for v, t in zip(key, shape, strict=True)
    ):
        raise ValueError(f"not a cursor of this list ({kind})")
    if any(isinstance(v, int) and not 0 <= v <= MAX_KEY_INT for v in key):
        raise ValueError(f"not a cursor of this list ({kind})")
    return tuple(key)
