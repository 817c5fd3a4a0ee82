"""The provider keys users stored (`credentials`): one row per user and name, the key only as the
Fernet token the service made of it (see `auth/secretbox.py`); nothing here ever sees it in clear.

Names are the user's own: two users may both have "my-openai", and every method takes the user,
so one user's rows are never read for another.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError

from .store import Store
from .tables import CredentialRow


class CredentialExists(Exception):
    """The user already has a credential of that name."""


@dataclass(frozen=True)
class StoredCredential:
    name: str
    base_url: str | None
    created_at: datetime
    token: str = field(repr=False)


class CredentialRepository(Store):
    def add(self, user_id: str, name: str, base_url: str | None, token: str) -> StoredCredential:
        try:
            with self._write() as db:
                taken = db.scalar(
                    select(CredentialRow.id).where(
                        CredentialRow.user_id == user_id, CredentialRow.name == name
                    )
                )
                if taken is not None:
                    raise CredentialExists(name)
                row = CredentialRow(user_id=user_id, name=name, base_url=base_url, secret=token)
                db.add(row)
                db.flush()
                return _stored(row)
        except IntegrityError as exc:  # the same name stored by a concurrent request
            raise CredentialExists(name) from exc

    def of_user(self, user_id: str) -> list[StoredCredential]:
        with self._tx() as db:
            rows = db.scalars(
                select(CredentialRow).where(CredentialRow.user_id == user_id).order_by(CredentialRow.name)
            )
            return [_stored(r) for r in rows]

    def get_many(self, user_id: str, names: Collection[str]) -> dict[str, StoredCredential]:
        """The user's credentials of these names (names the user has none of are absent)."""
        if not names:
            return {}
        with self._tx() as db:
            rows = db.scalars(
                select(CredentialRow).where(CredentialRow.user_id == user_id, CredentialRow.name.in_(names))
            )
            return {r.name: _stored(r) for r in rows}

    def delete(self, user_id: str, name: str) -> bool:
        with self._write() as db:
            result = cast(
                "CursorResult[Any]",
                db.execute(
                    delete(CredentialRow).where(CredentialRow.user_id == user_id, CredentialRow.name == name)
                ),
            )
            return bool(result.rowcount)


def _stored(row: CredentialRow) -> StoredCredential:
    return StoredCredential(name=row.name, base_url=row.base_url, created_at=row.created_at, token=row.secret)
