"""Live runs: start without waiting, watch as Server-Sent Events, cancel, answer a human prompt;
and the run history (`GET /api/runs`: filters by workflow, status and time expression, see
`services/history.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel, Field

from ...schemas.api import (
    Envelope,
    ErrorResponse,
    EventsQuery,
    RunInputRequest,
    RunQuery,
    RunResponse,
    StartRunRequest,
)
from ...schemas.runs import EventKind, RunStatus
from ...services.history import MAX_RUNS, SINCE_FORMS
from ...services.runs import HEARTBEAT
from .. import sse
from ..auth import acting_user, run_owner
from ..context import services
from ..errors import envelope
from .messages import own_message

bp = APIBlueprint("runs", __name__, url_prefix="/api", abp_tags=[Tag(name="runs")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse}


class RunPath(BaseModel):
    run_id: str = Field(min_length=1, max_length=100)


@bp.post("/runs", responses={202: RunResponse, **ERRORS})
def start_run(body: StartRunRequest) -> tuple[Response, int]:
    """Start a run and answer at once (202); watch it at /api/runs/{run_id}/events. With
    `webhook`, the run's summary is POSTed there, signed, when it ends (its host must be in
    `webhooks.allowed_hosts`)."""
    message = own_message(body.message)
    webhook = services().webhooks.check(body.webhook.url) if body.webhook is not None else None
    flow, ref = services().workflows.for_run(
        message.user_id, body.flow_config, body.workflow_id, body.workflow_version
    )
    run = services().runs.submit(message, flow, workflow=ref, webhook=webhook)
    data = {
        "run_id": run.run_id,
        "session_id": run.message.session_id,
        "user_msg_id": run.message.msg_id,
        "status": RunStatus.QUEUED,
    }
    return envelope(True, "run started", data=data, code=202)


class RunsQuery(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    workflow: str | None = Field(
        default=None, max_length=200, description="a saved workflow's id, or the name of one of yours"
    )
    status: RunStatus | None = None
    since: str | None = Field(default=None, max_length=100, description=f"one of: {SINCE_FORMS}")
    tz: str | None = Field(
        default=None, max_length=64, description="IANA time zone `since` is read in (default UTC)"
    )
    limit: int = Field(default=20, ge=1, le=MAX_RUNS)


class RunWorkflow(BaseModel):
    name: str | None = None
    type: str | None = None


class RunSummary(BaseModel):
    run_id: str
    session_id: str
    status: RunStatus
    workflow_id: str | None = None
    workflow_version: int | None = None
    workflow: RunWorkflow | None = None
    question: str | None = None
    answer: str | None = None
    error: str | None = None
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None
    usage: dict[str, Any] | None = None


class RunsResponse(Envelope[list[RunSummary]]):
    pass


@bp.get("/runs", responses={200: RunsResponse, 400: ErrorResponse})
def list_runs(query: RunsQuery) -> tuple[Response, int]:
    """Your runs, newest first, each with its question, answer, status, timing and usage;
    filtered by saved workflow (id or name), status and time (`since`, read in `tz`)."""
    found = services().history.query(
        acting_user(query.user_id),
        workflow=query.workflow,
        status=query.status.value if query.status else None,
        since=query.since,
        tz=query.tz,
        limit=query.limit,
    )
    return envelope(True, f"{len(found)} run(s)", data=found)


@bp.get("/runs/<run_id>", responses={200: RunResponse, **ERRORS})
def get_run(path: RunPath, query: RunQuery) -> tuple[Response, int]:
    """Status, timing and usage so far, the error if any, and its webhook's attempts."""
    return envelope(True, "run retrieved", data=_described(run_owner(query.user_id), path.run_id))


def _described(user_id: str | None, run_id: str) -> dict[str, Any]:
    """The run as GET /api/runs/<id> shows it, with its webhook delivery (if it asked for one)."""
    data = services().runs.describe(user_id, run_id)
    data["webhook"] = services().webhooks.for_run(run_id)
    return data


class RunWaitModel(BaseModel):
    state: str = Field(description="loading, queued, reading, writing or idle")
    ahead: int = Field(description="requests the model serves before this run's next one")
    estimate_s: float | None = Field(description="seconds until this run's reply starts")
    loading: dict[str, Any] | None = None


class RunWait(BaseModel):
    run_id: str
    status: RunStatus
    model: RunWaitModel | None = Field(
        description="where the run's calls stand at the embedded model on this machine; null "
        "unless the run is running on it"
    )


class RunWaitResponse(Envelope[RunWait]):
    pass


@bp.get("/runs/<run_id>/wait", responses={200: RunWaitResponse, **ERRORS})
def run_wait(path: RunPath, query: RunQuery) -> tuple[Response, int]:
    """How long the run waits for the embedded model: loading, or its place in the model's
    queue, with an estimate in seconds (counts only; nothing about other runs)."""
    return envelope(
        True, "wait estimated", data=services().waits.for_run(run_owner(query.user_id), path.run_id)
    )


@bp.post("/runs/<run_id>/cancel", responses={200: RunResponse, **ERRORS})
def cancel_run(path: RunPath, query: RunQuery) -> tuple[Response, int]:
    """Stop the run now; what was said is kept."""
    return envelope(True, "run cancelled", data=services().runs.cancel(run_owner(query.user_id), path.run_id))


@bp.post("/runs/<run_id>/input", responses={200: RunResponse, **ERRORS})
def answer_run(path: RunPath, query: RunQuery, body: RunInputRequest) -> tuple[Response, int]:
    """Answer the prompt the run waits on (an empty text means no input, as in NEVER mode).
    With `prompt_id`, an answer to a prompt that expired or was answered is refused (409)."""
    data = services().runs.provide_input(run_owner(query.user_id), path.run_id, body.text, body.prompt_id)
    return envelope(True, "input received", data=data)


EVENT_STREAM: ResponseDict = {
    200: {
        "description": "The run's events as Server-Sent Events (`id`, `event`, `data` as JSON), ending "
        "with its terminal status",
        # Before OpenAPI 3.2 (`itemSchema`), an event stream's `schema` describes each event.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "id": {
                            "type": "string",
                            "description": "the event's number in the run: 1, 2, 3, ...",
                        },
                        "event": {
                            "type": "string",
                            "description": ", ".join(EventKind),
                        },
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"type": "object"},
                        },
                    },
                    "required": ["id", "event", "data"],
                }
            }
        },
    },
    400: ErrorResponse,
    401: ErrorResponse,
    404: ErrorResponse,
}


@bp.get("/runs/<run_id>/events", responses=EVENT_STREAM)
def run_events(path: RunPath, query: EventsQuery) -> Response:
    """Server-Sent Events, one per thing the run says or does; resumes after the `Last-Event-ID`
    header (or `last_event_id`). A header that is not a number starts from the beginning; an id
    past 2^63-1 is a 400.

    The server answers this path on its event loop (`web/asgi.py`), holding no thread per
    listener; this view serves it where the app runs as plain WSGI."""
    after = sse.last_event_id(request.headers.get("Last-Event-ID"), query.last_event_id)
    events = services().runs.stream(run_owner(query.user_id), path.run_id, after)

    def generate() -> Iterator[bytes]:
        yield sse.RETRY
        for event in events:
            yield sse.KEEPALIVE if event is HEARTBEAT else sse.encode(*event)

    return Response(
        stream_with_context(generate()),
        mimetype="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )
