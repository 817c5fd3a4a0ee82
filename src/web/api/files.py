"""Files that a session's code wrote, downloadable by the session's owner."""

from __future__ import annotations

from flask import Response, send_file
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from ...schemas.api import ErrorResponse
from ..auth import acting_user
from ..context import services

bp = APIBlueprint("files", __name__, url_prefix="/api", abp_tags=[Tag(name="files")])


class FilePath(BaseModel):
    session_id: str = Field(min_length=1, max_length=100)
    path: str = Field(min_length=1, max_length=1000)


class FileQuery(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)


FILE: dict[str, object] = {
    "description": "The file, as an attachment",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


@bp.get(
    "/sessions/<session_id>/files/<path:path>", responses={200: FILE, 400: ErrorResponse, 404: ErrorResponse}
)
def download(path: FilePath, query: FileQuery) -> Response:
    """A file from the session's work dir; a path that leaves it is a 404."""
    handle = services().sessions.open_file(acting_user(query.user_id), path.session_id, path.path)
    return send_file(handle, as_attachment=True, download_name=path.path.rsplit("/", 1)[-1])
