"""Per-user limits beyond the request rate (`limits.per_user.*`): live runs at once and a daily
cost budget in USD, summed from the stored LLM calls of the current UTC day.

The budget is checked before a run starts (a 429, nothing stored) and before every LLM call of a
run (the run stops like the other caps, keeping what was said, `limit_reached.kind` =
`daily_budget_usd`). A call in flight when the budget is crossed still completes and counts: the
budget is a stop, not a forecast.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..settings import PerUserLimits
from ..storage.accounting import AccountingRepository
from .errors import LimitExceeded


def day_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    return int((day_start(now) + timedelta(days=1) - now).total_seconds()) + 1


class UserLimits:
    def __init__(self, settings: PerUserLimits, accounting: AccountingRepository) -> None:
        self.settings = settings
        self._accounting = accounting
        self._budget = (
            Decimal(str(settings.daily_budget_usd)) if settings.daily_budget_usd is not None else None
        )

    def live_runs_exceeded(self) -> LimitExceeded:
        cap = self.settings.live_runs
        return LimitExceeded(
            f"limit reached: limits.per_user.live_runs allows {cap} runs at once per user; "
            "wait for one to finish or cancel one",
            "live_runs",
            5,
        )

    def check_new_run(self, user_id: str) -> None:
        """Before anything of a new run is stored: a 429 naming the limit. The live-run cap is
        checked where the run is stored (`Repository.start_run(max_live=...)`), in one step."""
        if self._budget is not None:
            spent = self._accounting.spent_since(user_id, day_start())
            if spent >= self._budget:
                raise LimitExceeded(
                    f"limit reached: limits.per_user.daily_budget_usd is ${self._budget} a day and "
                    f"${spent} was spent today (UTC); it resets at midnight UTC",
                    "daily_budget_usd",
                    seconds_to_midnight(),
                )

    def run_guard(self, user_id: str, run_id: str) -> Callable[[Decimal], str | None] | None:
        """For a run's recorder: a reason to stop before the next LLM call, or None."""
        budget = self._budget
        if budget is None:
            return None

        def guard(run_cost: Decimal) -> str | None:
            spent = self._accounting.spent_since(user_id, day_start(), exclude_run=run_id) + run_cost
            if spent >= budget:
                return (
                    f"the user's daily budget of ${budget} (limits.per_user.daily_budget_usd) was "
                    f"reached: ${spent} spent today (UTC)"
                )
            return None

        return guard

    def describe(self, user_id: str) -> dict[str, Any]:
        """The limits and today's usage, for `GET /api/me`."""
        today = self._accounting.usage_since(user_id, day_start())
        today["live_runs"] = self._accounting.live_runs(user_id)
        limits = self.settings.model_dump(exclude={"storage_url"})
        return {"limits": limits, "today": today}
