"""Users, API keys and the chat page's sign-ins.

Only digests of keys and sign-in tokens are stored (see `auth/keys.py`): a copy of the database
gives nobody a working credential. A key is found by its digest (an indexed read) and the digest
is then compared in constant time. A key's `last_used_at` is written at most once a minute, so
signed-in traffic does not turn every request into a write.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select

from .store import Store
from .tables import ApiKeyRow, UserRow, WebSessionRow

LAST_USED_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    user_id: str
    name: str | None
    is_admin: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyOwner:
    user_id: str
    is_admin: bool
    key_id: str | None


class IdentityRepository(Store):
    # keys ---------------------------------------------------------------------------------------

    def add_key(self, key_id: str, digest: str, user_id: str, name: str | None, admin: bool) -> KeyInfo:
        """Store a new key; its user is created with it (and made an admin when asked)."""
        with self._write() as db:
            user = db.get(UserRow, user_id)
            if user is None:
                user = UserRow(user_id=user_id, is_admin=admin)
                db.add(user)
                db.flush()
            elif admin:
                user.is_admin = True
            row = ApiKeyRow(key_id=key_id, user_id=user_id, name=name, digest=digest)
            db.add(row)
            db.flush()
            return _info(row, user.is_admin)

    def key_owner(self, digest: str, now: datetime) -> KeyOwner | None:
        """The owner of a live (not revoked) key, by the key's digest."""
        with self._tx() as db:
            found = db.execute(
                select(ApiKeyRow, UserRow.is_admin)
                .join(UserRow, UserRow.user_id == ApiKeyRow.user_id)
                .where(ApiKeyRow.digest == digest, ApiKeyRow.revoked_at.is_(None))
            ).first()
            if found is None or not hmac.compare_digest(found[0].digest, digest):
                return None
            row, is_admin = found
            owner = KeyOwner(row.user_id, bool(is_admin), row.key_id)
            stale = row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY
        if stale:
            with self._write() as db:
                fresh = db.get(ApiKeyRow, owner.key_id)
                if fresh is not None:
                    fresh.last_used_at = now
        return owner

    def list_keys(self, user_id: str | None = None) -> list[KeyInfo]:
        with self._tx() as db:
            query = (
                select(ApiKeyRow, UserRow.is_admin)
                .join(UserRow, UserRow.user_id == ApiKeyRow.user_id)
                .order_by(ApiKeyRow.user_id, ApiKeyRow.created_at)
            )
            if user_id is not None:
                query = query.where(ApiKeyRow.user_id == user_id)
            return [_info(row, bool(admin)) for row, admin in db.execute(query)]

    def revoke_key(self, key_id: str | None, digest: str | None, now: datetime) -> KeyInfo | None:
        """Revoke by id or by the key's digest; the key's page sign-ins end with it."""
        with self._write() as db:
            query = select(ApiKeyRow).where(or_(ApiKeyRow.key_id == key_id, ApiKeyRow.digest == digest))
            row = db.scalar(query)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = now
            db.execute(delete(WebSessionRow).where(WebSessionRow.key_id == row.key_id))
            user = db.get(UserRow, row.user_id)
            return _info(row, bool(user and user.is_admin))

    # page sign-ins ------------------------------------------------------------------------------

    def add_web_session(self, digest: str, owner: KeyOwner, expires_at: datetime) -> None:
        with self._write() as db:
            db.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < datetime.now(UTC)))
            db.add(
                WebSessionRow(
                    digest=digest,
                    user_id=owner.user_id,
                    key_id=owner.key_id,
                    is_admin=owner.is_admin,
                    expires_at=expires_at,
                )
            )

    def web_session_owner(self, digest: str, now: datetime) -> KeyOwner | None:
        """A live sign-in's owner; a sign-in made with a key that was revoked since is gone."""
        with self._tx() as db:
            row = db.get(WebSessionRow, digest)
            if row is None or row.expires_at <= now:
                return None
            if row.key_id is not None:
                key = db.get(ApiKeyRow, row.key_id)
                if key is None or key.revoked_at is not None:
                    return None
                user = db.get(UserRow, row.user_id)
                return KeyOwner(row.user_id, bool(user and user.is_admin), row.key_id)
            return KeyOwner(row.user_id, row.is_admin, None)

    def delete_web_session(self, digest: str) -> None:
        with self._write() as db:
            db.execute(delete(WebSessionRow).where(WebSessionRow.digest == digest))


def _info(row: ApiKeyRow, is_admin: bool) -> KeyInfo:
    return KeyInfo(
        key_id=row.key_id,
        user_id=row.user_id,
        name=row.name,
        is_admin=is_admin,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
