"""Schedules as the API takes and shows them (`/api/schedules`).

A schedule sends `message` to a workflow (`workflow_id`: a saved one, or `builtin:<name>`) on a
5-field cron expression read in `tz`, or every `every_s` seconds (at least 10); exactly one of
the two. Each firing is an ordinary run, as the schedule's owner, in the schedule's own session.
`state` is `active`, `paused` (`enabled: false`) or `stopped` (`stopped_reason` says why: its
workflow was deleted, or the API key that created it was revoked; a change re-checks and restarts
it). The rules are in `services/schedules.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .api import Envelope, PagedEnvelope, UserId
from .pagination import PageQuery
from .webhooks import WebhookSpec

MIN_EVERY_S = 10
MAX_EVERY_S = 366 * 86_400
MAX_MESSAGE_CHARS = 100_000

CronField = Field(
    default=None,
    min_length=1,
    max_length=200,
    description="5 fields: minute hour day-of-month month day-of-week (e.g. `0 7 * * 1-5`), read in `tz`",
)
EveryField = Field(
    default=None,
    ge=MIN_EVERY_S,
    le=MAX_EVERY_S,
    description=f"seconds between firings (at least {MIN_EVERY_S})",
)
TzField = Field(
    default=None, min_length=1, max_length=64, description="IANA time zone of `cron` (default UTC)"
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateScheduleRequest(_Body):
    user_id: str | None = UserId
    workflow_id: str = Field(
        min_length=1, max_length=100, description="a saved workflow's id, or builtin:<name>"
    )
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="what each firing asks")
    cron: str | None = CronField
    every_s: int | None = EveryField
    tz: str | None = TzField
    enabled: bool = True
    webhook: WebhookSpec | None = None


class UpdateScheduleRequest(_Body):
    """Only the fields sent change; `cron` replaces `every_s` and the other way round, and
    `webhook: null` removes the webhook."""

    user_id: str | None = UserId
    workflow_id: str | None = Field(default=None, min_length=1, max_length=100)
    message: str | None = Field(default=None, min_length=1, max_length=MAX_MESSAGE_CHARS)
    cron: str | None = CronField
    every_s: int | None = EveryField
    tz: str | None = TzField
    enabled: bool | None = None
    webhook: WebhookSpec | None = None


class SchedulesQuery(PageQuery):
    user_id: str | None = UserId


class ScheduleUserQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: str | None = UserId


class SchedulePath(BaseModel):
    schedule_id: str = Field(min_length=1, max_length=100)


class ScheduleInfo(BaseModel):
    id: str
    user_id: str
    workflow_id: str
    message: str
    cron: str | None = None
    every_s: int | None = None
    tz: str
    enabled: bool
    webhook: WebhookSpec | None = None
    session_id: str = Field(description="the schedule's own session: every firing's run is in it")
    state: Literal["active", "paused", "stopped"]
    stopped_reason: str | None = None
    next_fire_at: datetime | None = Field(default=None, description="null while paused or stopped")
    last_fired_at: datetime | None = None
    last_run_id: str | None = None
    last_error: str | None = Field(default=None, description="why the last firing started no run, if so")
    last_error_at: datetime | None = None
    fire_count: int = Field(description="firings that started a run")
    created_at: datetime
    updated_at: datetime


class ScheduleResponse(Envelope[ScheduleInfo]):
    pass


class SchedulesResponse(PagedEnvelope[ScheduleInfo]):
    pass


class DeletedSchedule(BaseModel):
    id: str


class DeletedScheduleResponse(Envelope[DeletedSchedule]):
    pass
