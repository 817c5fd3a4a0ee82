"""A user's runs, newest first, each with its question, answer, status, timing and usage: the
run history (`GET /api/runs`, the `past_runs` skill). One read, always of one user's rows.

`workflow` matches a run's saved workflow id, or the name of one of the user's saved workflows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import aliased

from .store import Store
from .tables import MessageRow, RunRow, WorkflowRow


@dataclass(frozen=True)
class HistoryFilter:
    workflow: str | None = None
    status: str | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    exclude_run: str | None = None


class HistoryRepository(Store):
    def runs(self, user_id: str, where: HistoryFilter, limit: int) -> list[dict[str, Any]]:
        question, answer = aliased(MessageRow), aliased(MessageRow)
        query = (
            select(RunRow, question.content, answer.content)
            .outerjoin(
                question, (question.user_id == RunRow.user_id) & (question.msg_id == RunRow.user_msg_id)
            )
            .outerjoin(
                answer, (answer.user_id == RunRow.user_id) & (answer.msg_id == RunRow.assistant_msg_id)
            )
            .where(RunRow.user_id == user_id)
        )
        if where.workflow:
            named = select(WorkflowRow.workflow_id).where(
                WorkflowRow.user_id == user_id, WorkflowRow.name == where.workflow
            )
            query = query.where(or_(RunRow.workflow_id == where.workflow, RunRow.workflow_id.in_(named)))
        if where.status:
            query = query.where(RunRow.status == where.status)
        if where.start is not None:
            query = query.where(RunRow.started_at >= where.start)
        if where.end is not None:
            query = query.where(RunRow.started_at < where.end)
        if where.exclude_run:
            query = query.where(RunRow.run_id != where.exclude_run)
        query = query.order_by(RunRow.started_at.desc(), RunRow.run_id.desc()).limit(limit)
        with self._tx() as db:
            return [_summary(run, asked, answered) for run, asked, answered in db.execute(query)]


def _summary(run: RunRow, question: str | None, answer: str | None) -> dict[str, Any]:
    flow = run.flow or {}
    duration = (run.ended_at - run.started_at).total_seconds() if run.ended_at else None
    return {
        "run_id": run.run_id,
        "session_id": run.session_id,
        "status": run.status,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "workflow": {"name": flow.get("name"), "type": flow.get("type")} if flow else None,
        "question": question,
        "answer": answer,
        "error": run.error,
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "duration_s": round(duration, 3) if duration is not None else None,
        "usage": run.usage,
    }
