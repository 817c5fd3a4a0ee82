"""A run's answer: the assistant message that ends it, built in one place whoever ends the run
(its worker, a cancel, the time cap, a shutdown, or the next start's recovery), so every answer
carries the same metadata: run, status, workflow, usage, timing, what was said, models, the
limit that stopped it, each receiver's part, and the files the run's code left."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..schemas.chat import Message
from ..schemas.runs import RunStatus

CANCELLED_NOTE = "[autobots: the run was cancelled]"


@dataclass
class Answer:
    run_id: str
    user_id: str
    session_id: str | None
    question_id: str
    status: str
    text: str
    started: datetime
    ended: datetime
    workflow: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    requested_models: list[str] = field(default_factory=list)
    answered_models: list[str] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)
    # (kind, detail) of the cap that stopped the run, if one did.
    limit: tuple[str, str] | None = None
    parts: dict[str, str] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    # A closing line of the server's own ("[autobots: ...]"), after the text.
    note: str | None = None


def timing(start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "duration_s": round((end - start).total_seconds(), 6),
    }


def build(answer: Answer) -> Message:
    """The assistant message: the team's text, a note when the server ended the run, metadata."""
    text = answer.text or (
        "(the run was cancelled)" if answer.status == RunStatus.CANCELLED else "(the agents gave no answer)"
    )
    note = answer.note
    if answer.limit is not None:
        note = f"[autobots: the run stopped early: {answer.limit[1]}]"
    elif answer.status == RunStatus.CANCELLED and note is None:
        note = CANCELLED_NOTE
    content = f"{text}\n\n{note}" if note else text
    metadata: dict[str, Any] = {
        "run_id": answer.run_id,
        "status": answer.status,
        "workflow": answer.workflow,
        "usage": answer.usage,
        "timing": timing(answer.started, answer.ended),
        "messages": answer.messages,
        "models": {
            "requested": answer.requested_models,
            "answered": answer.answered_models,
            "notes": answer.model_notes,
        },
        "limit_reached": None
        if answer.limit is None
        else {"kind": answer.limit[0], "detail": answer.limit[1]},
        "parts": answer.parts,
        "files": answer.files,
    }
    return Message(
        user_id=answer.user_id,
        session_id=answer.session_id,
        role="assistant",
        content=content,
        root_msg_id=answer.question_id,
        metadata=metadata,
        timestamp=answer.ended,
    )
