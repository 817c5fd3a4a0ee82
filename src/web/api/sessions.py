"""Sessions: list, create, publish to the gallery, clear.

Lists are one page, newest first (`limit`, `cursor`; `next_cursor` beside `data`): creating and
clearing answer with the first page of the user's sessions, as the old clients expect a list.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict

from ...schemas.api import (
    ClearDbRequest,
    ClearDbResponse,
    CreateSessionRequest,
    ErrorResponse,
    GalleryItemResponse,
    PublishRequest,
    SessionsQuery,
    SessionsResponse,
)
from ...schemas.chat import Session
from ...services.errors import BadRequest
from ...services.pagination import Listing
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("sessions", __name__, url_prefix="/api", abp_tags=[Tag(name="sessions")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}


def _dump(sessions: list[Session]) -> list[dict]:
    return [s.model_dump(mode="json") for s in sessions]


def _page(message: str, page: Listing[Session]) -> tuple[Response, int]:
    return envelope(True, message, data=_dump(page.items), next_cursor=page.next_cursor)


@bp.get("/sessions", responses={200: SessionsResponse, **ERRORS})
def list_sessions(query: SessionsQuery) -> tuple[Response, int]:
    """The user's sessions, newest first, one page."""
    user = acting_user(query.user_id)
    return _page("sessions retrieved", services().sessions.list_sessions(user, query.limit, query.cursor))


@bp.post("/sessions", responses={200: SessionsResponse, **ERRORS})
def create_session(body: CreateSessionRequest) -> tuple[Response, int]:
    """Create a session with a workflow; returns the first page of the user's sessions."""
    new = body.session
    user = acting_user(body.user_id or new.user_id)
    if new.user_id is not None and new.user_id != user:
        raise BadRequest("session.user_id must match user_id")
    fields = new.model_dump(
        exclude_none=True, exclude={"flow_config", "user_id", "workflow_id", "workflow_version"}
    )
    flow, ref = services().workflows.for_run(user, new.flow_config, new.workflow_id, new.workflow_version)
    assert flow is not None  # the request names one or the other
    recorded = {"workflow_id": ref.workflow_id, "workflow_version": ref.version} if ref else {}
    session = Session(**fields, **recorded, user_id=user, flow_config=flow)
    return _page("session created", services().sessions.create_session(user, session))


@bp.post("/sessions/publish", responses={200: GalleryItemResponse, **ERRORS})
def publish_session(body: PublishRequest) -> tuple[Response, int]:
    """Publish a frozen copy of the session and its messages to the gallery."""
    user = acting_user(body.user_id or body.session.user_id)
    if body.session.user_id is not None and body.session.user_id != user:
        raise BadRequest("session.user_id must match user_id")
    item = services().sessions.publish(user, body.session.session_id, body.tags)
    return envelope(True, "session published", data=item.model_dump(mode="json"))


@bp.post("/cleardb", responses={200: ClearDbResponse, **ERRORS})
def clear_session(body: ClearDbRequest) -> tuple[Response, int]:
    """Delete a session and its messages (its published gallery copies stay); its live runs
    are cancelled first."""
    user = acting_user(body.user_id)
    svc = services().sessions
    services().runs.cancel_session(user, body.session_id)
    svc.clear_session(user, body.session_id)
    left = svc.list_sessions(user)
    return envelope(
        True, "session deleted", data={"sessions": _dump(left.items)}, next_cursor=left.next_cursor
    )
