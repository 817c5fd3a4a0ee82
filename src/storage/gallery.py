"""The gallery: frozen, public copies of published sessions.

A copy names its publisher by display name (`publisher_name`), never by user id, and holds no key
or credential reference (`public_copy`); later changes to the session never show in it. Items are
listed newest first in pages (keyset: publication time, then row id). Reading is for everyone;
unpublishing is the owner's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from ..schemas.chat import (
    GALLERY_PREVIEW_MESSAGES,
    GalleryItem,
    Message,
    PublishedSession,
    Session,
    public_copy,
    publisher_name,
)
from ..schemas.pagination import Page
from .keyset import newest_first
from .repository import message_from_row
from .store import Store
from .tables import GalleryRow, GalleryTagRow, MessageRow, UserRow


class GalleryRepository(Store):
    def publish_session(self, session: Session, tags: Sequence[str] = ()) -> GalleryItem:
        """Freeze a public copy of the session and its messages; later changes to the session
        don't show. The copy names the publisher by display name (`publisher_name`), never by
        user id, and holds no key or credential reference (`public_copy`)."""
        owner = session.user_id
        with self._write() as db:
            display = db.scalar(select(UserRow.display_name).where(UserRow.user_id == owner))
            publisher = publisher_name(owner, display)
            rows = db.scalars(
                select(MessageRow)
                .where(MessageRow.session_id == session.session_id, MessageRow.user_id == owner)
                .order_by(MessageRow.id)
            )
            messages = [
                public_copy(message_from_row(r).model_dump(mode="json"), owner, publisher) for r in rows
            ]
            item = GalleryItem(
                publisher=publisher,
                session=PublishedSession.model_validate(
                    public_copy(session.model_dump(mode="json"), owner, publisher)
                ),
                messages=[Message.model_validate(m) for m in messages],
                tags=sorted(set(tags)),
            )
            db.add(
                GalleryRow(
                    gallery_id=item.id,
                    owner_id=owner,
                    publisher=publisher,
                    session=item.session.model_dump(mode="json"),
                    messages=messages,
                    tags=item.tags,
                    created_at=item.timestamp,
                )
            )
            db.flush()
            db.add_all(GalleryTagRow(gallery_id=item.id, tag=t) for t in item.tags)
        return item

    def gallery_page(
        self, tag: str | None, limit: int, before: tuple[datetime, int] | None = None
    ) -> Page[GalleryItem]:
        """Published items (optionally those with `tag`), newest first: `limit` of them, from the
        one after `before` (its publication time and row id)."""
        with self._tx() as db:
            query = select(GalleryRow)
            if tag is not None:
                query = query.join(GalleryTagRow, GalleryTagRow.gallery_id == GalleryRow.gallery_id).where(
                    GalleryTagRow.tag == tag
                )
            query = newest_first(query, GalleryRow.created_at, GalleryRow.id, before).limit(limit + 1)
            rows = list(db.scalars(query))
            more, rows = len(rows) > limit, rows[:limit]
            last = rows[-1] if more else None
            key = None if last is None else (last.created_at.isoformat(), last.id)
            return Page([_gallery_item(r, preview=True) for r in rows], key)

    def gallery_item(self, gallery_id: str) -> GalleryItem | None:
        with self._tx() as db:
            row = db.scalar(select(GalleryRow).where(GalleryRow.gallery_id == gallery_id))
            return None if row is None else _gallery_item(row)

    def unpublish(self, owner_id: str, gallery_id: str) -> bool:
        """Remove the owner's published item (with its tags); False when they have none of that id."""
        with self._write() as db:
            row = db.scalar(
                select(GalleryRow).where(GalleryRow.gallery_id == gallery_id, GalleryRow.owner_id == owner_id)
            )
            if row is None:
                return False
            db.execute(delete(GalleryTagRow).where(GalleryTagRow.gallery_id == gallery_id))
            db.delete(row)
            return True


def _gallery_item(row: GalleryRow, preview: bool = False) -> GalleryItem:
    session: Any = row.session
    messages: Any = row.messages
    publisher = row.publisher
    if publisher is None:  # published before copies were made public (migration 0004): make it so now
        owner = row.owner_id or str(session.get("user_id") or "")
        publisher = publisher_name(owner, None)
        if owner:
            session, messages = (
                public_copy(session, owner, publisher),
                public_copy(messages, owner, publisher),
            )
    return GalleryItem(
        id=row.gallery_id,
        publisher=publisher,
        session=PublishedSession.model_validate(session),
        messages=[
            Message.model_validate(m) for m in (messages[:GALLERY_PREVIEW_MESSAGES] if preview else messages)
        ],
        message_count=len(messages),
        tags=list(row.tags),
        timestamp=row.created_at,
    )
