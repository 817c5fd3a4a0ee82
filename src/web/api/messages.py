"""Messages: ask the team a question, read a session's messages, delete one.

A session's messages come a page at a time, oldest first within the page; the first page is the
newest `limit` messages and `next_cursor` leads to the ones before (so a client that ignores the
cursor sees the conversation as it stands now, in order).
"""

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
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}
# A run that cannot complete: its LLM endpoint failed (502), or a sandbox or the embedded model
# is not available here (503).
RUN_ERRORS: ResponseDict = {**ERRORS, 502: ErrorResponse, 503: ErrorResponse}


@bp.post("/messages", responses={200: PostMessageResponse, **RUN_ERRORS})
def post_message(body: PostMessageRequest) -> tuple[Response, int]:
    """Run the workflow (`flow_config`, or a saved one by `workflow_id`) on the message; blocks
    until the agents have answered."""
    message = own_message(body.message)
    flow, ref = services().workflows.for_run(
        message.user_id, body.flow_config, body.workflow_id, body.workflow_version
    )
    reply = services().runs.run_blocking(message, flow, workflow=ref)
    saved = reply.model_dump(mode="json")
    return envelope(True, reply.content, data=saved, metadata=saved)


@bp.get("/messages", responses={200: MessagesResponse, **ERRORS})
def get_messages(query: MessagesQuery) -> tuple[Response, int]:
    """One page of a session's messages, oldest first: the newest `limit`, then older by cursor."""
    page = services().sessions.messages(
        acting_user(query.user_id), query.session_id, query.limit, query.cursor
    )
    return envelope(
        True,
        "messages retrieved",
        data=[m.model_dump(mode="json") for m in page.items],
        next_cursor=page.next_cursor,
    )


@bp.post("/messages/delete", responses={200: MessagesResponse, **ERRORS})
def delete_message(body: DeleteMessageRequest) -> tuple[Response, int]:
    """Delete one message; returns the first page of the session's remaining messages."""
    left = services().sessions.delete_message(acting_user(body.user_id), body.msg_id, body.session_id)
    return envelope(
        True,
        "message deleted",
        data=[m.model_dump(mode="json") for m in left.items],
        next_cursor=left.next_cursor,
    )


def own_message(message: NewMessage) -> Message:
    """The request's message as the acting user's (signed in, `user_id` may be left out)."""
    user = acting_user(message.user_id, "message.user_id")
    return Message.model_validate({**message.model_dump(), "user_id": user})
