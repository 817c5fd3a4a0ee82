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


class GalleryItem(_Model):
    """A published session: a frozen copy of the session and its messages, with tags."""

    id: IdStr = Field(default_factory=new_id)
    session: Session
    messages: list[Message]
    tags: list[str] = Field(default_factory=list)
    timestamp: datetime = Field(default_factory=utcnow)


# The original project's name for a gallery item.
Gallery = GalleryItem
