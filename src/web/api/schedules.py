"""Schedules: create, list (keyset pages), read, change (PATCH) and delete a schedule of yours.

Each route is one call of `services().schedules` (`services/schedules.py` holds the rules:
validation, firing exactly once per due time, stopping) and answers with the
`{status, message, data}` envelope; another user's schedule is a 404, as a missing one.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict

from ...schemas.api import ErrorResponse
from ...schemas.schedules import (
    CreateScheduleRequest,
    DeletedScheduleResponse,
    ScheduleInfo,
    SchedulePath,
    ScheduleResponse,
    SchedulesQuery,
    SchedulesResponse,
    ScheduleUserQuery,
    UpdateScheduleRequest,
)
from ..auth import acting_user, principal
from ..context import services
from ..errors import envelope

bp = APIBlueprint("schedules", __name__, url_prefix="/api", abp_tags=[Tag(name="schedules")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}


def _key_id() -> str | None:
    """The API key this request was made with (token mode): a schedule stops if it is revoked."""
    who = principal()
    return who.key_id if who is not None else None


def _one(message: str, schedule: ScheduleInfo) -> tuple[Response, int]:
    return envelope(True, message, data=schedule.model_dump(mode="json"))


@bp.post("/schedules", responses={200: ScheduleResponse, **ERRORS})
def create_schedule(body: CreateScheduleRequest) -> tuple[Response, int]:
    """Run `message` on a workflow on a cron expression (in `tz`) or every `every_s` seconds,
    each firing an ordinary run in the schedule's own session."""
    created = services().schedules.create(acting_user(body.user_id), body, _key_id())
    return _one(f"schedule {created.id} created", created)


@bp.get("/schedules", responses={200: SchedulesResponse, 400: ErrorResponse})
def list_schedules(query: SchedulesQuery) -> tuple[Response, int]:
    """Your schedules, newest first, one page."""
    page = services().schedules.list_schedules(acting_user(query.user_id), query.limit, query.cursor)
    return envelope(
        True,
        f"{len(page.items)} schedule(s)",
        data=[s.model_dump(mode="json") for s in page.items],
        next_cursor=page.next_cursor,
    )


@bp.get("/schedules/<schedule_id>", responses={200: ScheduleResponse, **ERRORS})
def get_schedule(path: SchedulePath, query: ScheduleUserQuery) -> tuple[Response, int]:
    """The schedule: its state (and why it stopped), next and last firing, last run and error."""
    return _one("schedule retrieved", services().schedules.get(acting_user(query.user_id), path.schedule_id))


@bp.patch("/schedules/<schedule_id>", responses={200: ScheduleResponse, **ERRORS})
def update_schedule(path: SchedulePath, body: UpdateScheduleRequest) -> tuple[Response, int]:
    """Change the fields sent; a change re-checks the workflow and restarts a stopped schedule."""
    changed = services().schedules.update(acting_user(body.user_id), path.schedule_id, body, _key_id())
    return _one(f"schedule {changed.id} changed", changed)


@bp.delete("/schedules/<schedule_id>", responses={200: DeletedScheduleResponse, **ERRORS})
def delete_schedule(path: SchedulePath, query: ScheduleUserQuery) -> tuple[Response, int]:
    """Delete the schedule (its session and the runs it started stay)."""
    services().schedules.delete(acting_user(query.user_id), path.schedule_id)
    return envelope(True, f"schedule {path.schedule_id} deleted", data={"id": path.schedule_id})
