"""Messages: ask the team a question, read a session's messages, delete one."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict

from ...schemas.api import (
    DeleteMessageRequest,
    ErrorResponse,
    MessagesQuery,
    MessagesResponse,
    NewMessage,
    PostMessageRequest,
    PostMessageResponse,
)
from ...schemas.chat import Message
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("messages", __name__, url_prefix="/api", abp_tags=[Tag(name="messages")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse, 502: ErrorResponse, 503: ErrorResponse}


@bp.post("/messages", responses={200: PostMessageResponse, **ERRORS})
def post_message(body: PostMessageRequest) -> tuple[Response, int]:
    """Run the workflow on the message; blocks until the agents have answered."""
    reply = services().runs.run_blocking(own_message(body.message), body.flow_config)
    saved = reply.model_dump(mode="json")
    return envelope(True, reply.content, data=saved, metadata=saved)


@bp.get("/messages", responses={200: MessagesResponse, **ERRORS})
def get_messages(query: MessagesQuery) -> tuple[Response, int]:
    """A session's messages, oldest first."""
    messages = services().sessions.messages(acting_user(query.user_id), query.session_id)
    return envelope(True, "messages retrieved", data=[m.model_dump(mode="json") for m in messages])


@bp.post("/messages/delete", responses={200: MessagesResponse, **ERRORS})
def delete_message(body: DeleteMessageRequest) -> tuple[Response, int]:
    """Delete one message; returns the session's remaining messages."""
    left = services().sessions.delete_message(acting_user(body.user_id), body.msg_id, body.session_id)
    return envelope(True, "message deleted", data=[m.model_dump(mode="json") for m in left])


def own_message(message: NewMessage) -> Message:
    """The request's message as the acting user's (signed in, `user_id` may be left out)."""
    user = acting_user(message.user_id, "message.user_id")
    return Message.model_validate({**message.model_dump(), "user_id": user})
