"""Saved workflows (`workflows`) and their versions (`workflow_versions`), per user.

Every method takes the user and is one short transaction: a workflow of another user is never
read, changed or deleted (it answers as a missing one). A save never changes a stored version: it
adds the next one, so every version a session or run recorded stays readable.

Names are unique per user (`uq_workflows_user_name`): a clash, found before the insert or by the
constraint when two requests race, is `NameTaken`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select
from sqlalchemy.exc import IntegrityError

from ..schemas.pagination import Page
from .keyset import newest_first
from .store import Store
from .tables import WorkflowRow, WorkflowVersionRow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NameTaken(Exception):
    """The user has another workflow of that name."""


@dataclass(frozen=True)
class StoredWorkflow:
    workflow_id: str
    name: str
    version: int  # the version read (the newest, unless another was asked for)
    latest_version: int
    created_at: datetime
    updated_at: datetime
    flow: dict[str, Any] | None = None  # None: not read (by_name)


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch: exact, for a page's sort key."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class WorkflowRepository(Store):
    def create(self, user_id: str, workflow_id: str, name: str, flow: dict[str, Any]) -> StoredWorkflow:
        now = datetime.now(UTC)
        try:
            with self._write() as db:
                if _named(db, user_id, name) is not None:
                    raise NameTaken(name)
                db.add(
                    WorkflowRow(
                        workflow_id=workflow_id,
                        user_id=user_id,
                        name=name,
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                db.flush()
                db.add(WorkflowVersionRow(workflow_id=workflow_id, version=1, flow=flow, created_at=now))
        except IntegrityError as exc:  # the same name saved by a concurrent request
            raise NameTaken(name) from exc
        return StoredWorkflow(workflow_id, name, 1, 1, now, now, flow)

    def save_version(
        self, user_id: str, workflow_id: str, name: str, flow: dict[str, Any]
    ) -> StoredWorkflow | None:
        """Add the next version (and take its name); None when the user has no such workflow."""
        now = datetime.now(UTC)
        try:
            with self._write() as db:
                row = db.scalar(_own(user_id, workflow_id).with_for_update())
                if row is None:
                    return None
                other = _named(db, user_id, name)
                if other is not None and other != workflow_id:
                    raise NameTaken(name)
                row.version += 1
                row.name = name
                row.updated_at = now
                db.add(
                    WorkflowVersionRow(
                        workflow_id=workflow_id, version=row.version, flow=flow, created_at=now
                    )
                )
                db.flush()
                return StoredWorkflow(workflow_id, name, row.version, row.version, row.created_at, now, flow)
        except IntegrityError as exc:
            raise NameTaken(name) from exc

    def get(self, user_id: str, workflow_id: str, version: int | None = None) -> StoredWorkflow | None:
        """The workflow with the flow of `version` (the newest when None); None when the user has
        no such workflow or no such version."""
        with self._tx() as db:
            row = db.scalar(_own(user_id, workflow_id))
            if row is None:
                return None
            wanted = row.version if version is None else version
            kept = db.get(WorkflowVersionRow, (workflow_id, wanted))
            if kept is None:
                return None
            return _stored(row, kept.version, kept.flow)

    def by_name(self, user_id: str, name: str) -> StoredWorkflow | None:
        with self._tx() as db:
            row = db.scalar(
                select(WorkflowRow).where(WorkflowRow.user_id == user_id, WorkflowRow.name == name)
            )
            return None if row is None else _stored(row, row.version, None)

    def page(
        self, user_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> Page[StoredWorkflow]:
        """The user's workflows, the most recently saved first (then by id), each with its newest
        flow; `after` is the (updated_at, workflow_id) of the last row of the page before."""
        with self._tx() as db:
            query = (
                select(WorkflowRow, WorkflowVersionRow.flow)
                .join(
                    WorkflowVersionRow,
                    and_(
                        WorkflowVersionRow.workflow_id == WorkflowRow.workflow_id,
                        WorkflowVersionRow.version == WorkflowRow.version,
                    ),
                )
                .where(WorkflowRow.user_id == user_id)
            )
            query = newest_first(query, WorkflowRow.updated_at, WorkflowRow.workflow_id, after)
            rows = list(db.execute(query.limit(limit + 1)).tuples())
            more, rows = len(rows) > limit, rows[:limit]
            key = (micros(rows[-1][0].updated_at), rows[-1][0].workflow_id) if more else None
            return Page([_stored(r, r.version, flow) for r, flow in rows], key)

    def delete(self, user_id: str, workflow_id: str) -> bool:
        """Delete the workflow and all its versions (sessions and runs keep the id they recorded)."""
        with self._write() as db:
            row = db.scalar(_own(user_id, workflow_id))
            if row is None:
                return False
            # Explicitly: SQLite runs with foreign keys off (storage/database.py).
            db.execute(delete(WorkflowVersionRow).where(WorkflowVersionRow.workflow_id == workflow_id))
            db.delete(row)
            return True


def _own(user_id: str, workflow_id: str) -> Any:
    return select(WorkflowRow).where(WorkflowRow.workflow_id == workflow_id, WorkflowRow.user_id == user_id)


def _named(db: Any, user_id: str, name: str) -> str | None:
    """The id of the user's workflow of that name, if any."""
    found: str | None = db.scalar(
        select(WorkflowRow.workflow_id).where(WorkflowRow.user_id == user_id, WorkflowRow.name == name)
    )
    return found


def _stored(row: WorkflowRow, version: int, flow: dict[str, Any] | None) -> StoredWorkflow:
    return StoredWorkflow(
        row.workflow_id, row.name, version, row.version, row.created_at, row.updated_at, flow
    )
