"""A live run's shared state in the distributed mode: who holds it, whether it lives, what a human
is asked, and the files its session's code left.

Every change here is one conditional UPDATE, so whichever process gets there first wins and the
others learn it from the row count: a worker claims a queued run (a duplicate delivery finds it
claimed), an API process takes the answer to the prompt the run waits on (a second or late answer
finds nothing to take), and a process that finds a run's heartbeat stale interrupts it (a worker
that was only slow finds it finished). Times are the processes' own UTC clocks: the machines'
clocks must agree to within a few seconds (NTP), far less than `runs.dead_after_s`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, select, update

from ..schemas.runs import UNFINISHED, RunStatus
from .store import Store, rowcount
from .tables import RUNS, RunRow, SessionFileRow

HELD = (RunStatus.RUNNING, RunStatus.AWAITING_INPUT)
# Built once (see repository.py's run-path statements): every run is claimed.
_CLAIM = update(RUNS).where(RUNS.c.run_id == bindparam("b_run"), RUNS.c.status == RunStatus.QUEUED)


class RunStateRepository(Store):
    def claim(self, run_id: str, worker_id: str) -> bool:
        """queued -> running for this worker; False if anyone (or anything) got there first."""
        params = {
            "b_run": run_id,
            "status": RunStatus.RUNNING,
            "worker_id": worker_id,
            "heartbeat_at": datetime.now(UTC),
        }
        with self._change() as db:
            return rowcount(db.execute(_CLAIM, params)) == 1

    def heartbeat(self, worker_id: str, run_ids: Collection[str]) -> set[str]:
        """The worker still holds these runs; returns those still live and still its own."""
        if not run_ids:
            return set()
        query = (
            update(RunRow)
            .where(RunRow.run_id.in_(list(run_ids)), RunRow.worker_id == worker_id, RunRow.status.in_(HELD))
            .values(heartbeat_at=datetime.now(UTC))
            .returning(RunRow.run_id)
        )
        with self._change() as db:
            return set(db.scalars(query))

    def stale(self, older_than: datetime, limit: int = 100) -> list[str]:
        """Runs held by a worker whose last heartbeat is older than `older_than`."""
        with self._tx() as db:
            query = (
                select(RunRow.run_id)
                .where(RunRow.status.in_(HELD), RunRow.heartbeat_at < older_than)
                .order_by(RunRow.heartbeat_at)
                .limit(limit)
            )
            return list(db.scalars(query))

    def stale_queued(self, queued_before: datetime, limit: int = 100) -> list[str]:
        """Runs still queued that were queued before `queued_before`."""
        with self._tx() as db:
            query = (
                select(RunRow.run_id)
                .where(RunRow.status == RunStatus.QUEUED, RunRow.started_at < queued_before)
                .order_by(RunRow.started_at)
                .limit(limit)
            )
            return list(db.scalars(query))

    def unfinished_in_session(self, user_id: str, session_id: str) -> list[str]:
        with self._tx() as db:
            query = select(RunRow.run_id).where(
                RunRow.user_id == user_id, RunRow.session_id == session_id, RunRow.status.in_(UNFINISHED)
            )
            return list(db.scalars(query))

    def unfinished(self) -> list[str]:
        with self._tx() as db:
            return list(db.scalars(select(RunRow.run_id).where(RunRow.status.in_(UNFINISHED))))

    # a human's input -----------------------------------------------------------------------------

    def ask(self, run_id: str, prompt: str, prompt_id: str) -> bool:
        """The run waits for a human's answer to this prompt (stored before it is announced)."""
        with self._write() as db:
            query = (
                update(RunRow)
                .where(RunRow.run_id == run_id, RunRow.status.in_(HELD))
                .values(status=RunStatus.AWAITING_INPUT, input_prompt=prompt, input_prompt_id=prompt_id)
            )
            return rowcount(db.execute(query)) == 1

    def take_prompt(self, run_id: str, prompt_id: str | None = None) -> str | None:
        """Take the prompt the run waits on (only `prompt_id`, when given): the run is running
        again and the prompt answered. Returns the prompt's id, or None if there was none to take
        (answered, timed out, or the run ended): at most one taker per prompt."""
        with self._write() as db:
            row = db.get(RunRow, run_id)
            waiting = (
                row.input_prompt_id if row is not None and row.status == RunStatus.AWAITING_INPUT else None
            )
            if waiting is None or (prompt_id is not None and prompt_id != waiting):
                return None
            query = (
                update(RunRow)
                .where(
                    RunRow.run_id == run_id,
                    RunRow.status == RunStatus.AWAITING_INPUT,
                    RunRow.input_prompt_id == waiting,
                )
                .values(status=RunStatus.RUNNING, input_prompt=None, input_prompt_id=None)
            )
            return waiting if rowcount(db.execute(query)) == 1 else None

    # files -----------------------------------------------------------------------------------------

    def save_files(
        self, user_id: str, session_id: str, files: Sequence[tuple[str, int, bytes | None]]
    ) -> None:
        """The session's work dir as it is now: (name, size, content or None if too big)."""
        with self._write() as db:
            db.execute(
                delete(SessionFileRow).where(
                    SessionFileRow.user_id == user_id, SessionFileRow.session_id == session_id
                )
            )
            now = datetime.now(UTC)
            for name, size, data in files:
                db.add(
                    SessionFileRow(
                        user_id=user_id,
                        session_id=session_id,
                        name=name,
                        size=size,
                        data=data,
                        updated_at=now,
                    )
                )

    def files(self, user_id: str, session_id: str) -> list[tuple[str, int, bytes | None]]:
        with self._tx() as db:
            rows = db.scalars(
                select(SessionFileRow)
                .where(SessionFileRow.user_id == user_id, SessionFileRow.session_id == session_id)
                .order_by(SessionFileRow.name)
            )
            return [(r.name, r.size, r.data) for r in rows]

    def file(self, user_id: str, session_id: str, name: str) -> tuple[int, bytes | None] | None:
        with self._tx() as db:
            row = db.get(SessionFileRow, (user_id, session_id, name))
            return None if row is None else (row.size, row.data)
