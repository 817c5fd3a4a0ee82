"""Messages, sessions and gallery items: what is stored and what the API returns."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .workflow import AgentWorkFlowConfig

IdStr = str


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Message(_Model):
    """One chat message. `metadata` of an assistant message carries the run's usage and timing."""

    msg_id: IdStr = Field(default_factory=new_id, min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=200)
    session_id: IdStr | None = Field(default=None, max_length=100)
    role: Literal["user", "assistant"] = "user"
    content: str = Field(max_length=200_000)
    root_msg_id: str | None = Field(default=None, max_length=100)
    metadata: dict[str, Any] | None = None
    timestamp: datetime = Field(default_factory=utcnow)

    @field_validator("metadata", mode="before")
    @classmethod
    def _json_string(cls, value: Any) -> Any:
        """The old clients send metadata as a JSON string."""
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise ValueError("metadata must be an object or a JSON object string") from exc
        return value


class Session(_Model):
    session_id: IdStr = Field(default_factory=new_id, min_length=1, max_length=100)
    user_id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(default=None, max_length=200)
    flow_config: AgentWorkFlowConfig
    timestamp: datetime = Field(default_factory=utcnow)
    # The saved workflow and version the session was started from (None: a bare flow_config).
    workflow_id: str | None = Field(default=None, max_length=100)
    workflow_version: int | None = None


class PublishedSession(_Model):
    """The session as the gallery shows it: `user_id` is the publisher's name, and `flow_config`
    is the workflow as it was stored, with no key or credential reference left in it."""

    session_id: IdStr
    user_id: str
    name: str | None = None
    flow_config: dict[str, Any]
    timestamp: datetime


class GalleryItem(_Model):
    """A published session: a frozen copy of the session and its messages, with tags.

    The copy is public (the gallery needs no sign-in), so it names its publisher by `publisher`,
    a display name, and never by the user's id (often an email): see `public_copy`."""

    id: IdStr = Field(default_factory=new_id)
    publisher: str | None = None
    session: PublishedSession
    messages: list[Message]
    tags: list[str] = Field(default_factory=list)
    timestamp: datetime = Field(default_factory=utcnow)
    # How many messages the copy holds: a list of the gallery shows each item's first
    # `GALLERY_PREVIEW_MESSAGES` only (so no page grows with the sessions' length); one item by
    # its id has them all.
    message_count: int | None = None


# Messages of each item in a list of the gallery (the whole copy: `GET /api/gallery/<id>`).
GALLERY_PREVIEW_MESSAGES = 20

# Never in a published copy, wherever they appear: a provider key, or the name of a stored one.
SECRET_FIELDS = frozenset({"api_key", "credential"})


def publisher_name(user_id: str, display_name: str | None) -> str:
    """What the gallery calls a publisher: their display name, else their id's part before any '@'."""
    if display_name and display_name.strip():
        return display_name.strip()
    return user_id.split("@", 1)[0] or "anonymous"


def public_copy(value: Any, owner: str, publisher: str) -> Any:
    """`value` (JSON data) as it may be published: every `api_key` and `credential` field dropped,
    and the owner's id replaced by the publisher's name wherever it occurs. An id with an '@' (an
    email) is replaced inside longer strings too; a plain id only where it is the whole string,
    as a short one ("al") would otherwise change ordinary words."""
    if isinstance(value, dict):
        return {
            k: public_copy(v, owner, publisher)
            for k, v in value.items()
            if not (isinstance(k, str) and k.lower() in SECRET_FIELDS)
        }
    if isinstance(value, list):
        return [public_copy(v, owner, publisher) for v in value]
    if isinstance(value, str):
        if value == owner:
            return publisher
        if "@" in owner and owner in value:
            return value.replace(owner, publisher)
    return value


# The original project's name for a gallery item.
Gallery = GalleryItem
