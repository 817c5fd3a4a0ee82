"""The tables, as SQLAlchemy 2.0 typed ORM classes.

Costs are stored as decimal strings: SQLite has no exact decimal type, and a cost that is summed
over thousands of calls must add up to the cent the provider bills, not to a float's rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class SessionRow(Base):
    """A chat. Its id is the user's own name for it: unique per user, not across users, so no
    user can learn which ids others have or take a name away from them."""

    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("user_id", "session_id", name="uq_sessions_user_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    flow_config: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=_now)
    # The saved workflow (and its version) the session was started from; None: a bare config.
    workflow_id: Mapped[str | None] = mapped_column(String(100))
    workflow_version: Mapped[int | None] = mapped_column(Integer)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_session_created", "session_id", "id"),
        UniqueConstraint("user_id", "msg_id", name="uq_messages_user_msg"),
        ForeignKeyConstraint(
            ["user_id", "session_id"],
            ["sessions.user_id", "sessions.session_id"],
            name="fk_messages_session",
            ondelete="CASCADE",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(100))
    session_id: Mapped[str] = mapped_column(String(100))
    user_id: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    root_msg_id: Mapped[str | None] = mapped_column(String(100))
    # `metadata` is reserved by SQLAlchemy's declarative base, hence the attribute name.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class RunRow(Base):
    """One execution of a workflow for one user message; its usage is the sum of its llm_calls."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_user_status", "user_id", "status"),
        ForeignKeyConstraint(
            ["user_id", "session_id"],
            ["sessions.user_id", "sessions.session_id"],
            name="fk_runs_session",
            ondelete="CASCADE",
        ),
        Index("ix_runs_status_heartbeat", "status", "heartbeat_at"),
        Index("ix_runs_user_started", "user_id", "started_at"),
    )

    run_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    user_msg_id: Mapped[str] = mapped_column(String(100))
    assistant_msg_id: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=_now)
    ended_at: Mapped[datetime | None]
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The workflow the run runs, as sent (credential references, never keys): what a worker, or
    # the next start's recovery, needs to know of it.
    flow: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Whether a human may be asked (a blocking POST /api/messages has nobody to answer).
    interactive: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The distributed mode: the worker holding the run and its last sign of life; a run whose
    # heartbeat is older than `runs.dead_after_s` is interrupted by any live process.
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None]
    # The prompt a human is asked now and its id: any API process can answer it.
    input_prompt: Mapped[str | None] = mapped_column(Text)
    input_prompt_id: Mapped[str | None] = mapped_column(String(100))
    # The saved workflow and version the run ran; None: a bare flow_config.
    workflow_id: Mapped[str | None] = mapped_column(String(100))
    workflow_version: Mapped[int | None] = mapped_column(Integer)


class SessionFileRow(Base):
    """A file the code of a session left in its work dir, kept so that every API process (on
    any machine) can serve it and any worker can put it back before the session's next run."""

    __tablename__ = "session_files"
    __table_args__ = (
        ForeignKeyConstraint(
            ["user_id", "session_id"],
            ["sessions.user_id", "sessions.session_id"],
            name="fk_session_files_session",
            ondelete="CASCADE",
        ),
    )

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(1000), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    # None: bigger than `runs.max_stored_file_bytes`; listed, served only where it was written.
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class WorkflowRow(Base):
    """A saved workflow: its name (unique per user) and newest version; every save is a new
    `WorkflowVersionRow`, and older versions stay readable."""

    __tablename__ = "workflows"
    __table_args__ = (
        UniqueConstraint("user_id", "name", name="uq_workflows_user_name"),
        Index("ix_workflows_user", "user_id", "updated_at"),
    )

    workflow_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class WorkflowVersionRow(Base):
    __tablename__ = "workflow_versions"

    workflow_id: Mapped[str] = mapped_column(
        ForeignKey("workflows.workflow_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    flow: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=_now)


class SkillRow(Base):
    """One function of a user's skill library, as source; agents name it in `skills`."""

    __tablename__ = "skills"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class RunEventRow(Base):
    """What a run said and did, in order, so a client that reconnects gets exactly what it missed
    and a run cut short by a restart still shows what was said."""

    __tablename__ = "run_events"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=_now)


class LLMCallRow(Base):
    __tablename__ = "llm_calls"
    # A user's spending today is one indexed range read (the daily budget).
    __table_args__ = (Index("ix_llm_calls_user_started", "user_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    session_id: Mapped[str] = mapped_column(String(100), index=True)
    user_id: Mapped[str | None] = mapped_column(String(200))
    agent: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[str] = mapped_column(String(40), default="0")
    price_known: Mapped[bool] = mapped_column(default=True)
    cached: Mapped[bool] = mapped_column(default=False)
    latency_s: Mapped[float] = mapped_column(default=0.0)
    started_at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(Text)


class GalleryRow(Base):
    __tablename__ = "gallery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gallery_id: Mapped[str] = mapped_column(String(100), unique=True)
    # Who published it (never shown: the copy names its publisher by `publisher`, a display name).
    owner_id: Mapped[str | None] = mapped_column(String(200), index=True)
    publisher: Mapped[str | None] = mapped_column(String(200))
    session: Mapped[dict[str, Any]]
    messages: Mapped[list[Any]]
    tags: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)


class GalleryTagRow(Base):
    """One row per tag, so that filtering by tag is an indexed lookup on every backend."""

    __tablename__ = "gallery_tags"

    gallery_id: Mapped[str] = mapped_column(
        ForeignKey("gallery.gallery_id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class UserRow(Base):
    """A user of a server that signs people in: made by their first API key (or first OIDC
    sign-in). In `auth.mode: none` users are just the ids that requests name."""

    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the gallery shows for the user's publications (default: the id's part before any '@').
    display_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ApiKeyRow(Base):
    """An API key, kept only as its SHA-256 digest (the key itself is shown once, at creation)."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSessionRow(Base):
    """The chat page's sign-in: an opaque cookie token, kept as its digest, tied to the key (or
    the OIDC token's lifetime) it was made with, so revoking the key signs the page out too."""

    __tablename__ = "web_sessions"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.key_id", ondelete="CASCADE"))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime]


class CredentialRow(Base):
    """A provider key a user stored once (`/api/credentials`), encrypted with the server's
    secret (Fernet); a workflow's `config_list` entry refers to it by name."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_credentials_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(100))
    base_url: Mapped[str | None] = mapped_column(String(1000))
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class UsageDayRow(Base):
    """What a user's deleted sessions had used, per UTC day: a deleted chat must not give its
    spending back (the daily budget, `GET /api/me`). Live sessions' usage is read from their calls."""

    __tablename__ = "usage_days"

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    runs: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[str] = mapped_column(String(40), default="0")


class ScheduleRow(Base):
    """A user's schedule: a message sent to a workflow on a cron expression or every `every_s`,
    in the schedule's own session. `next_fire_at` is the due time a process claims (a conditional
    UPDATE from the value it read), so each due time fires once across processes; null while the
    schedule is paused or stopped (`stopped_reason` says why it stopped)."""

    __tablename__ = "schedules"
    __table_args__ = (
        Index("ix_schedules_user_created", "user_id", "created_at"),
        Index("ix_schedules_next_fire", "next_fire_at"),
    )

    schedule_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    cron: Mapped[str | None] = mapped_column(String(200))
    every_s: Mapped[int | None] = mapped_column(Integer)
    tz: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str] = mapped_column(String(100))
    # The API key that created (or last re-enabled) it, in auth.mode token: revoked, it stops.
    key_id: Mapped[str | None] = mapped_column(String(40))
    stopped_reason: Mapped[str | None] = mapped_column(Text)
    next_fire_at: Mapped[datetime | None]
    last_fired_at: Mapped[datetime | None]
    last_run_id: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    fire_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class WebhookDeliveryRow(Base):
    """A run's webhook: stored with the run, delivered once the run has ended (however it ended)
    by whichever process leases it first (`lease_until`, `claimed_by`: conditional UPDATEs);
    `attempts` holds each try's time, HTTP status or error, and duration."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_state", "state", "next_attempt_at"),)

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.run_id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(20))  # pending | delivered | failed
    attempts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # None: as soon as the run has ended; else not before then (a retry's backoff).
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)


# The tables themselves, for the run path's plain Core statements (repository.py, runstate.py:
# no ORM unit of work there).
RUNS = cast("Table", RunRow.__table__)
MESSAGES = cast("Table", MessageRow.__table__)
SESSIONS = cast("Table", SessionRow.__table__)
EVENTS = cast("Table", RunEventRow.__table__)
CALLS = cast("Table", LLMCallRow.__table__)
