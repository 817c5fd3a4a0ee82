"""Ending runs nobody holds: those a dead process left (interrupted), and queued ones cancelled
before any worker took them.

Each gets an answer built like any other (`answers.py`): the last thing said, a note saying what
happened, every message said so far (from the stored events), the usage of the calls that were
stored, the workflow it ran, and the files its code left. Its last two events (the answer, then the
status) are numbered past any id the dead process may have sent but not stored (`SEQ_SLACK`), so
a client resuming with `Last-Event-ID` still gets them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..execution import ExecutionSettings, existing_session_dir
from ..execution.workdir import list_workdir_files
from ..llm.usage import LLMCall, summarize
from ..schemas.runs import UNFINISHED, EventKind, RunStatus
from ..schemas.workflow import AgentWorkFlowConfig
from ..storage.repository import Repository
from . import answers
from .live import SEQ_SLACK

INTERRUPTED_NOTE = "[autobots: the run was interrupted by a server restart]"
WORKER_LOST_NOTE = "[autobots: the run was interrupted: the worker running it stopped]"

StoredEvent = tuple[str, int, str, dict[str, Any]]


def end_stored_run(
    repo: Repository,
    execution: ExecutionSettings,
    run_id: str,
    status: RunStatus,
    why: str | None,
    note: str,
    when: frozenset[str] = UNFINISHED,
    stale_before: datetime | None = None,
) -> list[StoredEvent]:
    """End a run nobody in this process holds (a dead process's, or a queued one cancelled),
    if it is still in one of `when`: its answer, then its final events. Returns the events
    written (for listeners in other processes), none if another process ended it first."""
    run = repo.get_run(run_id)
    if run is None:
        return []
    reply = answers.build(_answer(repo, execution, run, status, note))
    usage = reply.metadata and reply.metadata["usage"]
    if not repo.finish_run(run_id, status, usage, why, reply, when=when, stale_before=stale_before):
        return []
    seq = repo.last_event_seq(run_id) + SEQ_SLACK
    events: list[StoredEvent] = [
        (run_id, seq + 1, EventKind.FINAL, {"message": reply.model_dump(mode="json")}),
        (run_id, seq + 2, EventKind.STATUS, {"status": status}),
    ]
    repo.add_events_and_calls(events, [])
    return events


def fail_stored_run(
    repo: Repository, run_id: str, why: str, kind: str, when: frozenset[str] = UNFINISHED
) -> list[StoredEvent]:
    """End a run nobody in this process holds as failed, as a run's own thread fails one: the
    error stored, then its `error` (with the failure's kind, so a blocking request raises it as
    it was) and `failed` events. Returns them, none if the run had ended already."""
    if not repo.finish_run(run_id, RunStatus.FAILED, None, why, when=when):
        return []
    seq = repo.last_event_seq(run_id) + SEQ_SLACK
    events: list[StoredEvent] = [
        (run_id, seq + 1, EventKind.ERROR, {"message": why, "kind": kind}),
        (run_id, seq + 2, EventKind.STATUS, {"status": RunStatus.FAILED}),
    ]
    repo.add_events_and_calls(events, [])
    return events


def _answer(
    repo: Repository, execution: ExecutionSettings, run: dict[str, Any], status: RunStatus, note: str
) -> answers.Answer:
    said = [
        data
        for _, kind, data in repo.events_after(run["run_id"], 0, limit=100_000)
        if kind == EventKind.MESSAGE
    ]
    calls = [LLMCall.from_row(r) for r in repo.llm_calls(run["run_id"])]
    flow = run.get("flow") or {}
    last = next((m["content"] for m in reversed(said) if m.get("content")), "")
    return answers.Answer(
        run_id=run["run_id"],
        user_id=run["user_id"],
        session_id=run["session_id"],
        question_id=run["user_msg_id"],
        status=status,
        text=last,
        started=run["started_at"],
        ended=datetime.now(UTC),
        workflow={"name": flow.get("name"), "type": flow.get("type")} if flow else None,
        usage=summarize(calls),
        messages=said,
        requested_models=_requested_models(flow),
        answered_models=sorted({c.model for c in calls if not c.error}),
        files=_files(execution, run),
        note=note,
    )


def _requested_models(flow: dict[str, Any]) -> list[str]:
    """The models the workflow's agents name (members of group chats included), in order."""
    try:
        parsed = AgentWorkFlowConfig.model_validate(flow)
    except ValidationError:  # a run stored before runs kept their workflow, or an older shape
        return []
    return list(dict.fromkeys(entry.model for _, entry in parsed.endpoints()))


def _files(execution: ExecutionSettings, run: dict[str, Any]) -> list[dict[str, Any]]:
    """What the session's code left (its work dir is never created here)."""
    path = existing_session_dir(execution, run["session_id"], run["user_id"])
    try:
        return [{"name": f.name, "size": f.size} for f in list_workdir_files(path)] if path else []
    except OSError:
        return []
