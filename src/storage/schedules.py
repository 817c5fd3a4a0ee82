"""Schedules (`schedules`), per user, and the claim that makes each due time fire once.

Every method is one short transaction. Reads and changes take the user: another user's schedule
is never read, changed or deleted (it answers as a missing one). The ticker's methods (`due`,
`claim`, `fired`, `refused`, `stop`) take no user: they act on the schedule itself.

`claim` is the one step that decides which process fires a due time: `UPDATE ... SET
next_fire_at = :next WHERE schedule_id = :id AND next_fire_at = :due`. Of processes that read the
same due time, the first UPDATE moves it on and the others match no row, so they fire nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from ..schemas.pagination import Page
from .keyset import newest_first
from .store import Store, rowcount
from .tables import ApiKeyRow, ScheduleRow
from .workflows import micros

# What a change may set (the service checks the values first).
CHANGEABLE = frozenset(
    {"workflow_id", "message", "cron", "every_s", "tz", "enabled", "webhook_url", "key_id", "next_fire_at"}
)


@dataclass(frozen=True)
class StoredSchedule:
    schedule_id: str
    user_id: str
    workflow_id: str
    message: str
    cron: str | None
    every_s: int | None
    tz: str
    enabled: bool
    webhook_url: str | None
    session_id: str
    key_id: str | None
    stopped_reason: str | None
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_run_id: str | None
    last_error: str | None
    last_error_at: datetime | None
    fire_count: int
    created_at: datetime
    updated_at: datetime


class ScheduleRepository(Store):
    # the owner's -------------------------------------------------------------------------------

    def create(self, schedule: StoredSchedule) -> None:
        with self._write() as db:
            db.add(ScheduleRow(**schedule.__dict__))

    def get(self, user_id: str, schedule_id: str) -> StoredSchedule | None:
        with self._tx() as db:
            row = db.scalar(_own(user_id, schedule_id))
            return None if row is None else _stored(row)

    def page(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> Page[StoredSchedule]:
        """The user's schedules, newest first (then by id); `after` is the (created_at,
        schedule_id) of the last row of the page before."""
        query = select(ScheduleRow).where(ScheduleRow.user_id == user_id)
        query = newest_first(query, ScheduleRow.created_at, ScheduleRow.schedule_id, after)
        with self._tx() as db:
            rows = list(db.scalars(query.limit(limit + 1)))
        more, rows = len(rows) > limit, rows[:limit]
        key = (micros(rows[-1].created_at), rows[-1].schedule_id) if more else None
        return Page([_stored(r) for r in rows], key)

    def change(
        self, user_id: str, schedule_id: str, values: dict[str, Any], restart: bool
    ) -> StoredSchedule | None:
        """Set `values` (keys of CHANGEABLE); `restart` also clears a stop's reason (the owner
        changed what stopped it). None when the user has no such schedule."""
        unknown = set(values) - CHANGEABLE
        if unknown:
            raise ValueError(f"not changeable: {sorted(unknown)}")
        with self._write() as db:
            row = db.scalar(_own(user_id, schedule_id).with_for_update())
            if row is None:
                return None
            for name, value in values.items():
                setattr(row, name, value)
            if restart:
                row.stopped_reason = None
            if row.stopped_reason is not None or not row.enabled:
                row.next_fire_at = None
            row.updated_at = datetime.now(UTC)
            db.flush()
            return _stored(row)

    def delete(self, user_id: str, schedule_id: str) -> bool:
        with self._write() as db:
            row = db.scalar(_own(user_id, schedule_id))
            if row is None:
                return False
            db.delete(row)
            return True

    # the ticker's ------------------------------------------------------------------------------

    def due(self, now: datetime, limit: int = 100) -> list[StoredSchedule]:
        """Schedules whose next due time has come, the longest waiting first."""
        with self._tx() as db:
            rows = db.scalars(
                select(ScheduleRow)
                .where(ScheduleRow.next_fire_at <= now)
                .order_by(ScheduleRow.next_fire_at)
                .limit(limit)
            )
            return [_stored(r) for r in rows]

    def claim(self, schedule_id: str, due: datetime, following: datetime) -> bool:
        """Take the due time `due` for this process, moving the schedule on to `following`:
        True for exactly one of the processes that try with the same `due`."""
        with self._write() as db:
            result = db.execute(
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == schedule_id, ScheduleRow.next_fire_at == due)
                .values(next_fire_at=following)
            )
            return bool(rowcount(result))

    def fired(self, schedule_id: str, run_id: str, at: datetime) -> None:
        """A firing started its run."""
        with self._write() as db:
            db.execute(
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == schedule_id)
                .values(
                    last_run_id=run_id,
                    last_fired_at=at,
                    last_error=None,
                    fire_count=ScheduleRow.fire_count + 1,
                )
            )

    def refused(self, schedule_id: str, error: str, at: datetime) -> None:
        """A firing that started no run (a limit, a workflow that cannot run now): the schedule
        goes on, saying why this one did not run."""
        with self._write() as db:
            db.execute(
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == schedule_id)
                .values(last_error=error, last_error_at=at)
            )

    def stop(self, schedule_id: str, reason: str) -> None:
        """The schedule cannot fire again as it is (its workflow or its key is gone)."""
        with self._write() as db:
            db.execute(
                update(ScheduleRow)
                .where(ScheduleRow.schedule_id == schedule_id)
                .values(stopped_reason=reason, next_fire_at=None, updated_at=datetime.now(UTC))
            )

    def key_revoked(self, key_id: str) -> bool:
        """Whether the API key is revoked (or gone with its user)."""
        with self._tx() as db:
            return _key_revoked(db, key_id)


def _key_revoked(db: OrmSession, key_id: str) -> bool:
    row = db.get(ApiKeyRow, key_id)
    return row is None or row.revoked_at is not None


def _own(user_id: str, schedule_id: str) -> Any:
    return select(ScheduleRow).where(ScheduleRow.schedule_id == schedule_id, ScheduleRow.user_id == user_id)


def _stored(row: ScheduleRow) -> StoredSchedule:
    return StoredSchedule(**{name: getattr(row, name) for name in StoredSchedule.__dataclass_fields__})
