"""A user's skill library (`skills`): one row per user and name, the function's source as sent.

Names are the user's own: two users may both have "add". Every method takes the user and is one
short transaction, so one user's rows are never read or changed for another.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError

from .store import Store
from .tables import SkillRow


class SkillExists(Exception):
    """The user already has a skill of that name."""


@dataclass(frozen=True)
class StoredSkill:
    name: str
    description: str
    code: str
    created_at: datetime
    updated_at: datetime


class SkillRepository(Store):
    def add(self, user_id: str, name: str, description: str, code: str) -> StoredSkill:
        try:
            with self._write() as db:
                if db.get(SkillRow, (user_id, name)) is not None:
                    raise SkillExists(name)
                row = SkillRow(user_id=user_id, name=name, description=description, code=code)
                db.add(row)
                db.flush()
                return _stored(row)
        except IntegrityError as exc:  # the same name stored by a concurrent request
            raise SkillExists(name) from exc

    def of_user(self, user_id: str) -> list[StoredSkill]:
        with self._tx() as db:
            rows = db.scalars(select(SkillRow).where(SkillRow.user_id == user_id).order_by(SkillRow.name))
            return [_stored(r) for r in rows]

    def get(self, user_id: str, name: str) -> StoredSkill | None:
        with self._tx() as db:
            row = db.get(SkillRow, (user_id, name))
            return None if row is None else _stored(row)

    def get_many(self, user_id: str, names: Collection[str]) -> dict[str, StoredSkill]:
        """The user's skills of these names (names the user has none of are absent)."""
        if not names:
            return {}
        with self._tx() as db:
            rows = db.scalars(select(SkillRow).where(SkillRow.user_id == user_id, SkillRow.name.in_(names)))
            return {r.name: _stored(r) for r in rows}

    def update(self, user_id: str, name: str, description: str, code: str) -> StoredSkill | None:
        with self._write() as db:
            row = db.get(SkillRow, (user_id, name))
            if row is None:
                return None
            row.description, row.code, row.updated_at = description, code, datetime.now(UTC)
            db.flush()
            return _stored(row)

    def delete(self, user_id: str, name: str) -> bool:
        with self._write() as db:
            result = cast(
                "CursorResult[Any]",
                db.execute(delete(SkillRow).where(SkillRow.user_id == user_id, SkillRow.name == name)),
            )
            return bool(result.rowcount)


def _stored(row: SkillRow) -> StoredSkill:
    return StoredSkill(row.name, row.description, row.code, row.created_at, row.updated_at)
