"""After a crash: runs a previous server process left unfinished are marked interrupted.

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
from ..schemas.runs import EventKind, RunStatus
from ..schemas.workflow import AgentWorkFlowConfig
from ..storage.repository import Repository
from . import answers
from .live import SEQ_SLACK

INTERRUPTED_NOTE = "[autobots: the run was interrupted by a server restart]"


def recover_unfinished(repo: Repository, execution: ExecutionSettings) -> int:
    count = 0
    for run in repo.unfinished_runs():
        reply = answers.build(_answer(repo, execution, run))
        repo.finish_run(
            run["run_id"],
            RunStatus.INTERRUPTED,
            reply.metadata and reply.metadata["usage"],
            "the server restarted during the run",
            reply,
        )
        seq = repo.last_event_seq(run["run_id"]) + SEQ_SLACK
        repo.add_event(run["run_id"], seq + 1, EventKind.FINAL, {"message": reply.model_dump(mode="json")})
        repo.add_event(run["run_id"], seq + 2, EventKind.STATUS, {"status": RunStatus.INTERRUPTED})
        count += 1
    return count


def _answer(repo: Repository, execution: ExecutionSettings, run: dict[str, Any]) -> answers.Answer:
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
        status=RunStatus.INTERRUPTED,
        text=last,
        started=run["started_at"],
        ended=datetime.now(UTC),
        workflow={"name": flow.get("name"), "type": flow.get("type")} if flow else None,
        usage=summarize(calls),
        messages=said,
        requested_models=_requested_models(flow),
        answered_models=sorted({c.model for c in calls if not c.error}),
        files=_files(execution, run),
        note=INTERRUPTED_NOTE,
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
