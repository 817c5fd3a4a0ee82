"""What a user has used: live runs now, and runs, tokens and cost since a day began (the per-user
limits and `GET /api/me`). Costs are summed as Decimals from the stored strings, exactly.

Usage is the user's stored LLM calls and runs, plus what deleted sessions had used
(`usage_days`, written when a session is deleted): deleting a chat never gives spending back.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Select, bindparam, func, select
from sqlalchemy.orm import Session as OrmSession

from ..schemas.runs import UNFINISHED
from .store import Store
from .tables import LLMCallRow, RunRow, UsageDayRow

# Built once: every run's start counts (see repository.py's run-path statements).
_LIVE_RUNS = (
    select(func.count())
    .select_from(RunRow)
    .where(RunRow.user_id == bindparam("b_user"), RunRow.status.in_(UNFINISHED))
)


def live_run_count(db: OrmSession | Connection, user_id: str) -> int:
    """The user's runs queued, running or waiting for input (in the caller's transaction)."""
    return int(db.scalar(_LIVE_RUNS, {"b_user": user_id}) or 0)


def keep_usage(db: OrmSession, user_id: str, run_ids: Select[Any]) -> None:
    """Before runs are deleted (in the caller's transaction): add what they used to the user's
    per-day totals."""
    days: dict[str, list[Any]] = {}
    for (started,) in db.execute(select(RunRow.started_at).where(RunRow.run_id.in_(run_ids))):
        days.setdefault(started.date().isoformat(), [0, 0, 0, 0, Decimal(0)])[0] += 1
    calls = select(
        LLMCallRow.started_at, LLMCallRow.prompt_tokens, LLMCallRow.completion_tokens, LLMCallRow.cost_usd
    )
    for started, prompt, completion, cost in db.execute(calls.where(LLMCallRow.run_id.in_(run_ids))):
        tally = days.setdefault(started.date().isoformat(), [0, 0, 0, 0, Decimal(0)])
        tally[1] += 1
        tally[2] += prompt
        tally[3] += completion
        tally[4] += Decimal(cost)
    for day, (runs, n, prompt, completion, cost) in days.items():
        row = db.get(UsageDayRow, (user_id, day))
        if row is None:
            row = UsageDayRow(
                user_id=user_id,
                day=day,
                runs=0,
                llm_calls=0,
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd="0",
            )
            db.add(row)
        row.runs += runs
        row.llm_calls += n
        row.prompt_tokens += prompt
        row.completion_tokens += completion
        row.cost_usd = str(Decimal(row.cost_usd) + cost)


class AccountingRepository(Store):
    def live_runs(self, user_id: str) -> int:
        with self._tx() as db:
            return live_run_count(db, user_id)

    def spent_since(self, user_id: str, since: datetime, exclude_run: str | None = None) -> Decimal:
        with self._tx() as db:
            query = select(LLMCallRow.cost_usd).where(
                LLMCallRow.user_id == user_id, LLMCallRow.started_at >= since
            )
            if exclude_run is not None:
                query = query.where(LLMCallRow.run_id != exclude_run)
            spent = sum((Decimal(c) for c in db.scalars(query)), Decimal(0))
            kept = db.scalars(select(UsageDayRow.cost_usd).where(*_kept_since(user_id, since)))
            return spent + sum((Decimal(c) for c in kept), Decimal(0))

    def usage_since(self, user_id: str, since: datetime) -> dict[str, Any]:
        with self._tx() as db:
            runs = db.scalar(
                select(func.count())
                .select_from(RunRow)
                .where(RunRow.user_id == user_id, RunRow.started_at >= since)
            )
            rows = db.execute(
                select(LLMCallRow.prompt_tokens, LLMCallRow.completion_tokens, LLMCallRow.cost_usd).where(
                    LLMCallRow.user_id == user_id, LLMCallRow.started_at >= since
                )
            ).all()
            kept = db.scalars(select(UsageDayRow).where(*_kept_since(user_id, since))).all()
        prompt = sum(r.prompt_tokens for r in rows) + sum(k.prompt_tokens for k in kept)
        completion = sum(r.completion_tokens for r in rows) + sum(k.completion_tokens for k in kept)
        cost = sum((Decimal(r.cost_usd) for r in rows), Decimal(0)) + sum(
            (Decimal(k.cost_usd) for k in kept), Decimal(0)
        )
        return {
            "runs": int(runs or 0) + sum(k.runs for k in kept),
            "llm_calls": len(rows) + sum(k.llm_calls for k in kept),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost_usd": str(cost),
        }


def _kept_since(user_id: str, since: datetime) -> tuple[Any, ...]:
    """The deleted sessions' per-day rows from the day of `since` on (budgets count whole days)."""
    return (UsageDayRow.user_id == user_id, UsageDayRow.day >= since.date().isoformat())
