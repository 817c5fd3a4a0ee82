"""Reading and writing sessions, messages, runs and the gallery.

The method names are the original project's (`load_messages`, `save_message`, ...), so code and
docs written against it still read right. Each method is one short transaction: no database
connection is ever held while agents talk to an LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from ..schemas.chat import Message, Session
from ..schemas.pagination import Page
from ..schemas.runs import UNFINISHED
from .accounting import keep_usage, live_run_count
from .store import Store, rowcount
from .tables import (
    CALLS,
    EVENTS,
    MESSAGES,
    RUNS,
    SESSIONS,
    LLMCallRow,
    MessageRow,
    RunEventRow,
    RunRow,
    SessionRow,
)
from .webhooks import add_delivery

# What `get_run` returns: every column of the run but its heartbeat.
_RUN_FIELDS = [c for c in RUNS.c if c.name != "heartbeat_at"]

# The run path's statements, built once: building one costs more CPU than running it on SQLite
# (about 80 us against 15-30 us), and a run makes about a dozen. Values come as parameters; an
# INSERT's or UPDATE's columns are the keys of the parameters it is given.
_INSERT_MESSAGE = insert(MESSAGES)
_INSERT_RUN = insert(RUNS)
_INSERT_SESSION = insert(SESSIONS)
_INSERT_EVENTS = insert(EVENTS)
_INSERT_CALLS = insert(CALLS)
_SESSION_ID = select(SESSIONS.c.id).where(
    SESSIONS.c.user_id == bindparam("b_user"), SESSIONS.c.session_id == bindparam("b_session")
)
_RUNS_THERE = select(RUNS.c.run_id).where(RUNS.c.run_id.in_(bindparam("b_runs", expanding=True)))
_FINISH = update(RUNS).where(
    RUNS.c.run_id == bindparam("b_run"), RUNS.c.status.in_(bindparam("b_when", expanding=True))
)
_FINISH_STALE = _FINISH.where(RUNS.c.heartbeat_at < bindparam("b_stale"))


class TooManyLiveRuns(Exception):
    """The user has `limits.per_user.live_runs` unfinished runs already."""


class Conflict(Exception):
    """An id that is already taken by another owner."""


class Repository(Store):
    def ping(self) -> None:
        with self._tx() as db:
            db.execute(text("SELECT 1"))

    # sessions -----------------------------------------------------------------------------------

    def create_session(self, user_id: str, session: Session) -> None:
        """Create the session; creating it again for its owner changes nothing."""
        try:
            with self._write() as db:
                _ensure_session(db, user_id, session)
        except IntegrityError:  # another request of the user created it between look and insert
            if self.get_session(user_id, session.session_id) is None:
                raise

    def get_sessions(self, user_id: str) -> list[Session]:
        with self._tx() as db:
            rows = db.scalars(
                select(SessionRow).where(SessionRow.user_id == user_id).order_by(SessionRow.id.desc())
            )
            return [_session(r) for r in rows]

    def sessions_page(self, user_id: str, limit: int, before: int | None = None) -> Page[Session]:
        """The user's sessions, newest first: `limit` of them, from the row after `before`."""
        with self._tx() as db:
            query = select(SessionRow).where(SessionRow.user_id == user_id)
            if before is not None:
                query = query.where(SessionRow.id < before)
            rows = list(db.scalars(query.order_by(SessionRow.id.desc()).limit(limit + 1)))
            more, rows = len(rows) > limit, rows[:limit]
            return Page([_session(r) for r in rows], (rows[-1].id,) if more else None)

    def get_session(self, user_id: str, session_id: str) -> Session | None:
        with self._tx() as db:
            row = db.scalar(
                select(SessionRow).where(SessionRow.session_id == session_id, SessionRow.user_id == user_id)
            )
            return None if row is None else _session(row)

    def session_keys(self) -> list[tuple[str, str]]:
        """Every session's (user_id, session_id)."""
        with self._tx() as db:
            return [
                (r.user_id, r.session_id)
                for r in db.execute(select(SessionRow.user_id, SessionRow.session_id))
            ]

    def delete_user_sessions(self, user_id: str, session_id: str) -> bool:
        """Delete one session with its messages and runs; published gallery copies stay, and what
        its runs used is kept per day (`accounting.keep_usage`)."""
        with self._write() as db:
            row = db.scalar(
                select(SessionRow).where(SessionRow.session_id == session_id, SessionRow.user_id == user_id)
            )
            if row is None:
                return False
            mine = (RunRow.session_id == session_id) & (RunRow.user_id == user_id)
            run_ids = select(RunRow.run_id).where(mine)
            keep_usage(db, user_id, run_ids)
            db.execute(delete(LLMCallRow).where(LLMCallRow.run_id.in_(run_ids)))
            db.execute(delete(RunEventRow).where(RunEventRow.run_id.in_(run_ids)))
            db.execute(delete(RunRow).where(mine))
            db.execute(
                delete(MessageRow).where(MessageRow.session_id == session_id, MessageRow.user_id == user_id)
            )
            db.delete(row)
            return True

    # messages -----------------------------------------------------------------------------------

    def load_messages(self, user_id: str, session_id: str) -> list[Message]:
        with self._tx() as db:
            rows = db.scalars(
                select(MessageRow)
                .where(MessageRow.session_id == session_id, MessageRow.user_id == user_id)
                .order_by(MessageRow.id)
            )
            return [message_from_row(r) for r in rows]

    def messages_page(
        self, user_id: str, session_id: str, limit: int, before: int | None = None
    ) -> Page[Message]:
        """A window of a session: the newest `limit` messages older than the row `before` (all of
        them from the newest when None), oldest first; `next_key` leads to the ones before it."""
        with self._tx() as db:
            rows = list(db.scalars(_newest_messages(user_id, session_id, limit + 1, before)))
            more, rows = len(rows) > limit, rows[:limit]
            rows.reverse()
            return Page([message_from_row(r) for r in rows], (rows[0].id,) if more else None)

    def last_messages(self, user_id: str, session_id: str, n: int) -> list[Message]:
        """The session's newest `n` messages, oldest first: a run's history, in one indexed read
        that costs the same in a session of 5,000 messages as in one of 5."""
        if n <= 0:
            return []
        with self._tx() as db:
            rows = list(db.scalars(_newest_messages(user_id, session_id, n)))
            return [message_from_row(r) for r in reversed(rows)]

    def save_message(self, message: Message) -> Message:
        with self._write() as db:
            _add_message(db, message)
        return message

    def delete_message(self, user_id: str, msg_id: str, session_id: str | None = None) -> bool:
        with self._write() as db:
            query = delete(MessageRow).where(MessageRow.msg_id == msg_id, MessageRow.user_id == user_id)
            if session_id is not None:
                query = query.where(MessageRow.session_id == session_id)
            return bool(rowcount(db.execute(query)))

    # runs and LLM calls -------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        message: Message,
        new_session: Session | None = None,
        status: str = "queued",
        flow: dict[str, Any] | None = None,
        max_live: int = 0,
        interactive: bool = True,
        workflow: tuple[str, int] | None = None,
        webhook: str | None = None,
    ) -> None:
        """Store the user's message and its run (and the session, if new) all or nothing; `flow`
        is the workflow the run runs, as sent (credential references, never keys), `workflow` the
        saved workflow's id and version it is (None: a bare flow_config), `webhook` the URL told of
        its end (a `webhook_deliveries` row, `storage/webhooks.py`). With
        `max_live`, a user who has that many unfinished runs already gets `TooManyLiveRuns`: the
        count and the insert are one step, so simultaneous requests cannot all slip past it."""
        if message.session_id is None:
            raise ValueError("a run belongs to a session")
        try:
            self._start_run(
                run_id, message, new_session, status, flow, max_live, interactive, workflow, webhook
            )
        except IntegrityError as exc:  # an id taken by another process in the meantime
            raise Conflict(
                f"session {message.session_id} or message {message.msg_id} is already in use"
            ) from exc

    def _start_run(
        self,
        run_id: str,
        message: Message,
        new_session: Session | None,
        status: str,
        flow: dict[str, Any] | None,
        max_live: int,
        interactive: bool,
        workflow: tuple[str, int] | None = None,
        webhook: str | None = None,
    ) -> None:
        assert message.session_id is not None
        with self._change() as db:
            if max_live:
                if db.dialect.name == "postgresql":  # one of the user's starts at a time
                    db.execute(text("SELECT pg_advisory_xact_lock(hashtext(:u))"), {"u": message.user_id})
                if live_run_count(db, message.user_id) >= max_live:
                    raise TooManyLiveRuns(max_live)
            if new_session is not None:
                # Two first messages of one new session may race here: the second finds the
                # session the first created, and both runs belong to it.
                _ensure_session(db, message.user_id, new_session)
            _add_message(db, message, check_taken=False)  # a taken id: IntegrityError -> Conflict
            db.execute(
                _INSERT_RUN,
                {
                    "run_id": run_id,
                    "session_id": message.session_id,
                    "user_id": message.user_id,
                    "user_msg_id": message.msg_id,
                    "status": status,
                    "flow": flow,
                    "interactive": interactive,
                    "workflow_id": workflow[0] if workflow else None,
                    "workflow_version": workflow[1] if workflow else None,
                },
            )
            if webhook is not None:
                add_delivery(db, run_id, webhook)

    def finish_run(
        self,
        run_id: str,
        status: str,
        usage: dict[str, Any] | None,
        error: str | None = None,
        reply: Message | None = None,
        when: frozenset[str] = UNFINISHED,
        stale_before: datetime | None = None,
    ) -> bool:
        """Store the run's outcome and its answer in one transaction, if the run's status is
        still one of `when` (unfinished, by default): of two processes ending one run (a worker
        and the one that found it dead, a cancel and a claim), the first wins and the second
        stores nothing.

        Returns False when nothing was stored: the run ended already, or is gone (its session
        was deleted while it ran), as the user asked for the session to go. With
        `stale_before`, only a run whose worker's last heartbeat is older than that is ended."""
        params: dict[str, Any] = {
            "b_run": run_id,
            "b_when": list(when),
            "status": status,
            "error": error,
            "usage": usage,
            "ended_at": datetime.now(UTC),
            "input_prompt": None,
            "input_prompt_id": None,
        }
        if reply is not None:
            params["assistant_msg_id"] = reply.msg_id
        query = _FINISH
        if stale_before is not None:  # a silent worker's only
            query, params["b_stale"] = _FINISH_STALE, stale_before
        with self._change() as db:
            # One conditional UPDATE decides (no read first): of two enders, one matches.
            if not rowcount(db.execute(query, params)):
                return False
            if reply is not None:
                _add_message(db, reply, check_taken=False)  # a fresh id: the constraint guards it
            return True

    def add_llm_call(self, run_id: str, session_id: str, call: dict[str, Any]) -> None:
        """Each call is stored as it completes: a run cut short still accounts for it."""
        with self._write() as db:
            db.add(LLMCallRow(run_id=run_id, session_id=session_id, **call))

    def add_event(self, run_id: str, seq: int, type_: str, data: dict[str, Any]) -> None:
        with self._write() as db:
            db.add(RunEventRow(run_id=run_id, seq=seq, type=type_, data=data))

    def add_events_and_calls(
        self,
        events: Sequence[tuple[str, int, str, dict[str, Any]]],
        calls: Sequence[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """Many runs' events and calls in one transaction (bulk inserts, no ORM objects).

        Rows of runs that no longer exist (their session was deleted mid-run) are dropped, so one
        deleted run never costs the other runs of the batch their rows."""
        now = datetime.now(UTC)
        with self._change() as db:
            wanted = {r for r, *_ in events} | {r for r, *_ in calls}
            alive = set(db.scalars(_RUNS_THERE, {"b_runs": list(wanted)})) if wanted else set()
            events = [e for e in events if e[0] in alive]
            calls = [c for c in calls if c[0] in alive]
            if events:  # Core executemany on the tables: no ORM bulk machinery per row
                db.execute(
                    _INSERT_EVENTS,
                    [
                        {"run_id": r, "seq": s, "type": t, "data": d, "created_at": now}
                        for r, s, t, d in events
                    ],
                )
            if calls:
                db.execute(_INSERT_CALLS, [{"run_id": r, "session_id": sid, **row} for r, sid, row in calls])

    def events_after(self, run_id: str, seq: int, limit: int = 1000) -> list[tuple[int, str, dict[str, Any]]]:
        with self._tx() as db:
            rows = db.execute(
                select(RunEventRow.seq, RunEventRow.type, RunEventRow.data)
                .where(RunEventRow.run_id == run_id, RunEventRow.seq > seq)
                .order_by(RunEventRow.seq)
                .limit(limit)
            )
            return [(r.seq, r.type, r.data) for r in rows]

    def last_event_seq(self, run_id: str) -> int:
        with self._tx() as db:
            rows = db.scalars(
                select(RunEventRow.seq)
                .where(RunEventRow.run_id == run_id)
                .order_by(RunEventRow.seq.desc())
                .limit(1)
            )
            return next(iter(rows), 0)

    def llm_calls(self, run_id: str) -> list[dict[str, Any]]:
        with self._tx() as db:
            rows = db.scalars(select(LLMCallRow).where(LLMCallRow.run_id == run_id).order_by(LLMCallRow.id))
            return [
                {
                    "agent": r.agent,
                    "model": r.model,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                    "total_tokens": r.total_tokens,
                    "cost_usd": r.cost_usd,
                    "price_known": r.price_known,
                    "cached": r.cached,
                    "latency_s": r.latency_s,
                    "started_at": r.started_at,
                    "error": r.error,
                }
                for r in rows
            ]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._read() as db:
            run = db.execute(select(*_RUN_FIELDS).where(RUNS.c.run_id == run_id)).first()
            if run is None:
                return None
            return {
                "run_id": run.run_id,
                "session_id": run.session_id,
                "user_id": run.user_id,
                "status": run.status,
                "error": run.error,
                "usage": run.usage,
                "started_at": run.started_at,
                "ended_at": run.ended_at,
                "user_msg_id": run.user_msg_id,
                "assistant_msg_id": run.assistant_msg_id,
                "flow": run.flow,
                "interactive": run.interactive,
                "worker_id": run.worker_id,
                "input_prompt": run.input_prompt,
                "input_prompt_id": run.input_prompt_id,
                "workflow_id": run.workflow_id,
                "workflow_version": run.workflow_version,
            }

    def get_message(self, user_id: str, msg_id: str) -> Message | None:
        with self._tx() as db:
            row = db.scalar(
                select(MessageRow).where(MessageRow.user_id == user_id, MessageRow.msg_id == msg_id)
            )
            return None if row is None else message_from_row(row)


def _newest_messages(user_id: str, session_id: str, n: int, before: int | None = None) -> Any:
    query = select(MessageRow).where(MessageRow.session_id == session_id, MessageRow.user_id == user_id)
    if before is not None:
        query = query.where(MessageRow.id < before)
    return query.order_by(MessageRow.id.desc()).limit(n)


def _ensure_session(db: OrmSession | Connection, user_id: str, session: Session) -> None:
    """Add the session unless its owner has it already (ids are per user)."""
    found = db.scalar(_SESSION_ID, {"b_user": user_id, "b_session": session.session_id})
    if found is None:
        db.execute(_INSERT_SESSION, _session_values(session))


def _add_message(db: OrmSession | Connection, message: Message, check_taken: bool = True) -> None:
    """A plain INSERT (no ORM unit of work). `check_taken=False` where the caller turns the
    unique constraint's IntegrityError into a Conflict itself, or the id is freshly made."""
    if message.session_id is None:
        raise ValueError("a message is saved into a session")
    if check_taken:
        taken = select(MessageRow.id).where(
            MessageRow.user_id == message.user_id, MessageRow.msg_id == message.msg_id
        )
        if db.scalar(taken) is not None:
            raise Conflict(f"msg_id {message.msg_id} is already in use")
    db.execute(
        _INSERT_MESSAGE,
        {
            "msg_id": message.msg_id,
            "session_id": message.session_id,
            "user_id": message.user_id,
            "role": message.role,
            "content": message.content,
            "root_msg_id": message.root_msg_id,
            "metadata": message.metadata,
            "created_at": message.timestamp,
        },
    )


def _session_values(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "name": session.name,
        "flow_config": session.flow_config.model_dump(mode="json"),
        "created_at": session.timestamp,
        "workflow_id": session.workflow_id,
        "workflow_version": session.workflow_version,
    }


def _session(row: SessionRow) -> Session:
    return Session(
        session_id=row.session_id,
        user_id=row.user_id,
        name=row.name,
        flow_config=row.flow_config,
        timestamp=row.created_at,
        workflow_id=row.workflow_id,
        workflow_version=row.workflow_version,
    )


def message_from_row(row: MessageRow) -> Message:
    return Message(
        msg_id=row.msg_id,
        user_id=row.user_id,
        session_id=row.session_id,
        role=row.role,
        content=row.content,
        root_msg_id=row.root_msg_id,
        metadata=row.meta,
        timestamp=row.created_at,
    )
