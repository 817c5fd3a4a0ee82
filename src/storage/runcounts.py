"""How many runs are unfinished now, by status: the deployment's queued and live runs, read at
scrape time (`GET /metrics`) so that every API process reports the same figures, whichever
process holds the runs (one `GROUP BY` over the `ix_runs_status_heartbeat` index)."""

from __future__ import annotations

from sqlalchemy import func, select

from ..schemas.runs import UNFINISHED
from .store import Store
from .tables import RunRow


class RunCounts(Store):
    def unfinished(self) -> dict[str, int]:
        """{status: runs} for every unfinished status (0 where there are none)."""
        counts = {str(status): 0 for status in UNFINISHED}
        with self._tx() as db:
            query = (
                select(RunRow.status, func.count())
                .where(RunRow.status.in_(UNFINISHED))
                .group_by(RunRow.status)
            )
            for status, count in db.execute(query):
                counts[str(status)] = int(count)
        return counts
