"""Keyset pages, newest first: the one WHERE and ORDER BY every paged list uses.

A page starts after the last row of the page before, named by its (time, id): rows older than
that time, or of that time with a smaller id. Both columns together are unique, so no row is
skipped or shown twice however rows are added between pages.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_

S = TypeVar("S", bound=Select[Any])


def newest_first(query: S, moment: Any, row_id: Any, after: tuple[Any, Any] | None) -> S:
    """`query` ordered by (moment, row_id) descending, starting after `after` (None: the top)."""
    if after is not None:
        at, last_id = after
        query = query.where(or_(moment < at, and_(moment == at, row_id < last_id)))
    return query.order_by(moment.desc(), row_id.desc())
