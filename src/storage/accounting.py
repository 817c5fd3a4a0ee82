"""What a user has used: live runs now, and runs, tokens and cost since a time (the per-user
limits and `GET /api/me`). Costs are summed as Decimals from the stored strings, exactly."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from ..schemas.runs import UNFINISHED
from .store import Store
from .tables import LLMCallRow, RunRow


class AccountingRepository(Store):
    def live_runs(self, user_id: str) -> int:
        with self._tx() as db:
            return int(
                db.scalar(
                    select(func.count())
                    .select_from(RunRow)
                    .where(RunRow.user_id == user_id, RunRow.status.in_(UNFINISHED))
                )
                or 0
            )

    def spent_since(self, user_id: str, since: datetime, exclude_run: str | None = None) -> Decimal:
        with self._tx() as db:
            query = select(LLMCallRow.cost_usd).where(
                LLMCallRow.user_id == user_id, LLMCallRow.started_at >= since
            )
            if exclude_run is not None:
                query = query.where(LLMCallRow.run_id != exclude_run)
            return sum((Decimal(c) for c in db.scalars(query)), Decimal(0))

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
        prompt = sum(r.prompt_tokens for r in rows)
        completion = sum(r.completion_tokens for r in rows)
        cost = sum((Decimal(r.cost_usd) for r in rows), Decimal(0))
        return {
            "runs": int(runs or 0),
            "llm_calls": len(rows),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost_usd": str(cost),
        }
