"""Sessions: list, create, publish to the gallery, clear."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ...schemas.api import (
    ClearDbRequest,
    CreateSessionRequest,
    ErrorResponse,
    GalleryItemResponse,
    PublishRequest,
    SessionsQuery,
    SessionsResponse,
)
from ...schemas.chat import Session
from ...services.chat import BadRequest
from ..context import services
from ..errors import envelope

bp = APIBlueprint("sessions", __name__, url_prefix="/api", abp_tags=[Tag(name="sessions")])
ERRORS = {400: ErrorResponse, 404: ErrorResponse}


def _dump(sessions: list[Session]) -> list[dict]:
    return [s.model_dump(mode="json") for s in sessions]


@bp.get("/sessions", responses={200: SessionsResponse, **ERRORS})
def list_sessions(query: SessionsQuery) -> tuple[Response, int]:
    """The user's sessions, newest first."""
    return envelope(True, "sessions retrieved", data=_dump(services().sessions.list_sessions(query.user_id)))


@bp.post("/sessions", responses={200: SessionsResponse, **ERRORS})
def create_session(body: CreateSessionRequest) -> tuple[Response, int]:
    """Create a session with a workflow; returns all the user's sessions."""
    new = body.session
    fields = new.model_dump(exclude_none=True, exclude={"flow_config"})
    session = Session(**fields, flow_config=new.flow_config)
    return envelope(
        True, "session created", data=_dump(services().sessions.create_session(body.user_id, session))
    )


@bp.post("/sessions/publish", responses={200: GalleryItemResponse, **ERRORS})
def publish_session(body: PublishRequest) -> tuple[Response, int]:
    """Publish a frozen copy of the session and its messages to the gallery."""
    if body.session.user_id != body.user_id:
        raise BadRequest("session.user_id must match user_id")
    item = services().sessions.publish(body.user_id, body.session.session_id, body.tags)
    return envelope(True, "session published", data=item.model_dump(mode="json"))


@bp.post("/cleardb", responses={200: SessionsResponse, **ERRORS})
def clear_session(body: ClearDbRequest) -> tuple[Response, int]:
    """Delete a session and its messages (its published gallery copies stay); its live runs
    are cancelled first."""
    svc = services().sessions
    services().runs.cancel_session(body.user_id, body.session_id)
    svc.clear_session(body.user_id, body.session_id)
    return envelope(True, "session deleted", data=_dump(svc.list_sessions(body.user_id)))
