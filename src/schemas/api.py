"""Request and response bodies of the HTTP API; the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from .chat import GalleryItem, Message, Session
from .pagination import PageQuery
from .webhooks import WebhookDelivery, WebhookSpec
from .workflow import AgentWorkFlowConfig

T = TypeVar("T")

# A user id in a request: required without sign-in (`auth.mode: none`, as the original clients
# send it); signed in, it may be left out, and if given must be the principal (or an admin's pick).
UserId = Field(default=None, min_length=1, max_length=200)
SessionId = Field(min_length=1, max_length=100)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Envelope(BaseModel, Generic[T]):
    """Every JSON response: whether it worked, a sentence for people, and the data."""

    status: bool
    message: str
    data: T | None = None


class PagedEnvelope(Envelope[list[T]], Generic[T]):
    """A list endpoint's answer: one page in `data` (a list, as the old clients expect), and
    where the next page starts (see `schemas/pagination.py`)."""

    next_cursor: str | None = Field(
        default=None, description="send it as `cursor` to get the next page; null on the last page"
    )


class ErrorDetail(BaseModel):
    field: str
    message: str


class NewMessage(Message):
    """A user's message to answer; `user_id` may be left out when signed in."""

    # Deliberately wider than Message's `str` (pydantic allows it; mypy's override rule does not):
    # the route fills it in from the signed-in user before a Message is made of it.
    user_id: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]


class PostMessageRequest(_Body):
    message: NewMessage
    flow_config: AgentWorkFlowConfig | None = None
    # A saved workflow (or a built-in) instead of flow_config: the run records its id and version.
    workflow_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="a saved workflow's id, instead of flow_config",
    )
    workflow_version: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="with workflow_id: that version (default: the newest)"
    )

    @model_validator(mode="after")
    def _one_workflow(self) -> PostMessageRequest:
        if self.workflow_id is not None and self.flow_config is not None:
            raise ValueError("give flow_config or workflow_id, not both")
        if self.workflow_version is not None and self.workflow_id is None:
            raise ValueError("workflow_version needs workflow_id")
        return self


class StartRunRequest(PostMessageRequest):
    """`POST /api/runs`: a message to run, and where to tell of the run's end."""

    webhook: WebhookSpec | None = None


class PostMessageResponse(Envelope[Message]):
    """`message` is the final answer's text; `metadata` repeats the saved assistant message for
    the old clients, which read it there."""

    metadata: Message | None = None


class MessagesQuery(PageQuery):
    """The first page is the session's newest `limit` messages, oldest first; `next_cursor` leads
    to the ones before them."""

    user_id: str | None = UserId
    session_id: str = SessionId


class DeleteMessageRequest(_Body):
    user_id: str | None = UserId
    msg_id: str = Field(min_length=1, max_length=100)
    session_id: str | None = Field(default=None, max_length=100)


class SessionsQuery(PageQuery):
    user_id: str | None = UserId


class NewSession(_Body):
    user_id: str | None = UserId
    flow_config: AgentWorkFlowConfig | None = None
    session_id: str | None = Field(default=None, max_length=100)
    name: str | None = Field(default=None, max_length=200)
    # A saved workflow (or a built-in) instead of flow_config: the session records it.
    workflow_id: str | None = Field(default=None, min_length=1, max_length=100)
    workflow_version: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_workflow(self) -> NewSession:
        if (self.flow_config is None) == (self.workflow_id is None):
            raise ValueError("give flow_config or workflow_id (one of them)")
        if self.workflow_version is not None and self.workflow_id is None:
            raise ValueError("workflow_version needs workflow_id")
        return self


class CreateSessionRequest(_Body):
    user_id: str | None = UserId
    session: NewSession


class SessionRef(_Body):
    user_id: str | None = UserId
    session_id: str = SessionId
    flow_config: dict[str, Any] | None = None


class PublishRequest(_Body):
    user_id: str | None = UserId
    session: SessionRef
    tags: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, tags: list[str]) -> list[str]:
        cleaned = [t.strip() for t in tags]
        for tag in cleaned:
            if not tag or len(tag) > 100:
                raise ValueError("each tag must be 1 to 100 characters")
        return cleaned


class GalleryQuery(PageQuery):
    # The old clients' way to read one item; GET /api/gallery/{gallery_id} is the documented one.
    gallery_id: str | None = Field(
        default=None,
        max_length=100,
        deprecated=True,
        description="answers with that one item (not a list): use GET /api/gallery/{gallery_id}",
    )
    tag: str | None = Field(default=None, max_length=100)


class GalleryPath(BaseModel):
    gallery_id: str = Field(min_length=1, max_length=100)


class UnpublishQuery(_Body):
    user_id: str | None = UserId


class Unpublished(BaseModel):
    id: str


class ClearDbRequest(_Body):
    user_id: str | None = UserId
    session_id: str = SessionId


class RunQuery(_Body):
    # Without sign-in, naming the user is optional here: a run's id is what finds it.
    user_id: str | None = UserId


class EventsQuery(RunQuery):
    # Where to resume, as the `Last-Event-ID` header says it (the header wins when both are sent).
    last_event_id: int | None = Field(default=None, ge=0, le=2**63 - 1)


class RunInputRequest(_Body):
    text: str = Field(default="", max_length=100_000)
    # The input_request event's prompt_id: with it, an answer to an expired prompt is a 409.
    prompt_id: str | None = Field(default=None, max_length=100)


class RunInfo(BaseModel):
    run_id: str
    session_id: str | None = None
    user_id: str | None = None
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    user_msg_id: str | None = None
    assistant_msg_id: str | None = None
    input_prompt: str | None = None
    input_prompt_id: str | None = None
    workflow_id: str | None = None
    workflow_version: int | None = None
    webhook: WebhookDelivery | None = Field(
        default=None, description="the run's webhook (POST /api/runs or a schedule) and its attempts"
    )


class RunResponse(Envelope[RunInfo]):
    pass


class Health(BaseModel):
    database: str
    version: str


class MessagesResponse(PagedEnvelope[Message]):
    pass


class SessionsResponse(PagedEnvelope[Session]):
    pass


class ClearedSessions(BaseModel):
    """What `/api/cleardb` answers in `data`, as the original did: the first page of the user's
    sessions left (`next_cursor` beside `data` leads on)."""

    sessions: list[Session]


class ClearDbResponse(Envelope[ClearedSessions]):
    next_cursor: str | None = None


class GalleryResponse(PagedEnvelope[GalleryItem]):
    pass


class GalleryItemResponse(Envelope[GalleryItem]):
    pass


class UnpublishedResponse(Envelope[Unpublished]):
    pass


class HealthResponse(Envelope[Health]):
    pass


class DependencyState(BaseModel):
    """One dependency in `/api/ready` (services/readiness.py)."""

    state: str = Field(description="up or down; the embedded model: loaded, loading, not_loaded or down")
    latency_ms: float | None = Field(description="how long the check took (null when it failed at once)")
    required: bool = Field(description="whether the server is not ready while this is down")
    detail: str | None = Field(None, description="why it is down: the error's kind, or timeout")


class Ready(BaseModel):
    ready: bool
    dependencies: dict[str, DependencyState]


class ReadyResponse(Envelope[Ready]):
    pass


class ErrorResponse(Envelope[dict[str, Any]]):
    pass


class GalleryListOrItemResponse(RootModel[GalleryResponse | GalleryItemResponse]):
    """`GET /api/gallery`: the list, or, with the old clients' `gallery_id`, that one item."""
