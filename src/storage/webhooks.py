"""Webhook deliveries (`webhook_deliveries`): stored with their run, leased for each attempt.

A delivery row is added in the transaction that stores its run (`add_delivery`, called by
`Repository.start_run`), so no run that asked for a webhook exists without one. It becomes
deliverable once its run has a terminal status, whichever process or path ended it: the
dispatcher looks at the run's status in the database, never at who ended it.

Each attempt is leased with a conditional UPDATE (`lease`): of the processes that find the same
deliverable row, one sets `claimed_by` and `lease_until` and the others match nothing. The lease
holder records the attempt and releases the row (`record`); a process that died mid-attempt
leaves a lease that expires, and the attempt is made again by another (so a receiver may, rarely,
see one attempt twice: it dedupes by the delivery id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import aliased

from ..schemas.runs import TERMINAL
from .store import Store, rowcount
from .tables import MessageRow, RunRow, WebhookDeliveryRow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    run_id: str
    url: str
    state: str
    attempts: list[dict[str, Any]]


def add_delivery(db: OrmSession | Connection, run_id: str, url: str) -> None:
    """In the caller's transaction, after the run's row was inserted (its foreign key)."""
    db.execute(
        insert(WebhookDeliveryRow).values(
            delivery_id="whd_" + uuid.uuid4().hex,
            run_id=run_id,
            url=url,
            state=PENDING,
            attempts=[],
            created_at=datetime.now(UTC),
        )
    )


class WebhookRepository(Store):
    def deliverable(self, now: datetime, limit: int = 20) -> list[str]:
        """Pending deliveries whose run has ended, whose backoff has passed and that no live
        lease holds: the oldest first."""
        with self._tx() as db:
            rows = db.scalars(
                select(WebhookDeliveryRow.delivery_id)
                .join(RunRow, RunRow.run_id == WebhookDeliveryRow.run_id)
                .where(
                    WebhookDeliveryRow.state == PENDING,
                    RunRow.status.in_([str(s) for s in TERMINAL]),
                    or_(
                        WebhookDeliveryRow.next_attempt_at.is_(None),
                        WebhookDeliveryRow.next_attempt_at <= now,
                    ),
                    or_(WebhookDeliveryRow.lease_until.is_(None), WebhookDeliveryRow.lease_until < now),
                )
                .order_by(WebhookDeliveryRow.created_at)
                .limit(limit)
            )
            return list(rows)

    def lease(self, delivery_id: str, holder: str, now: datetime, until: datetime) -> Delivery | None:
        """Take the next attempt of the delivery for `holder` until `until`; None when another
        process holds it, it is no longer pending, or its backoff has not passed. The UPDATE
        checks all three again: the id may come from a list read before another sender made
        (and recorded) an attempt, and that attempt's backoff must hold all the same."""
        with self._write() as db:
            result = db.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.delivery_id == delivery_id,
                    WebhookDeliveryRow.state == PENDING,
                    or_(
                        WebhookDeliveryRow.next_attempt_at.is_(None),
                        WebhookDeliveryRow.next_attempt_at <= now,
                    ),
                    or_(WebhookDeliveryRow.lease_until.is_(None), WebhookDeliveryRow.lease_until < now),
                )
                .values(claimed_by=holder, lease_until=until)
            )
            if not rowcount(result):
                return None
            row = db.get(WebhookDeliveryRow, delivery_id)
            assert row is not None
            return _delivery(row)

    def record(
        self,
        delivery_id: str,
        holder: str,
        attempt: dict[str, Any],
        state: str,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Add the attempt, set the state (and when to try again), release the lease; only the
        lease's holder may (False: the lease had expired and another process took it)."""
        with self._write() as db:
            row = db.get(WebhookDeliveryRow, delivery_id, with_for_update=True)
            if row is None or row.claimed_by != holder:
                return False
            row.attempts = [*row.attempts, attempt]
            row.state = state
            row.next_attempt_at = next_attempt_at
            row.lease_until = None
            row.claimed_by = None
            return True

    def for_run(self, run_id: str) -> list[Delivery]:
        with self._tx() as db:
            rows = db.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.run_id == run_id)
                .order_by(WebhookDeliveryRow.created_at)
            )
            return [_delivery(r) for r in rows]

    def run_summary(self, run_id: str) -> dict[str, Any] | None:
        """What a webhook tells of its run: the stored run with its answer's text and metadata."""
        answer = aliased(MessageRow)
        with self._tx() as db:
            found = db.execute(
                select(RunRow, answer.content, answer.meta)
                .outerjoin(
                    answer, (answer.user_id == RunRow.user_id) & (answer.msg_id == RunRow.assistant_msg_id)
                )
                .where(RunRow.run_id == run_id)
            ).first()
        if found is None:
            return None
        run, text, metadata = found
        return {
            "run_id": run.run_id,
            "user_id": run.user_id,
            "session_id": run.session_id,
            "status": run.status,
            "error": run.error,
            "usage": run.usage,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "flow": run.flow,
            "workflow_id": run.workflow_id,
            "workflow_version": run.workflow_version,
            "answer": text,
            "metadata": metadata,
        }


def _delivery(row: WebhookDeliveryRow) -> Delivery:
    return Delivery(row.delivery_id, row.run_id, row.url, row.state, list(row.attempts or []))
