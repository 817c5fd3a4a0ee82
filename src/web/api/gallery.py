"""The gallery of published sessions: readable by anyone, taken down only by its publisher.

`GET /api/gallery` lists newest first, one page (`limit`, `cursor`; `next_cursor` in the
envelope). The old clients read one item as `GET /api/gallery?gallery_id=...`, which still
answers with that item (an object, not a list); `GET /api/gallery/{gallery_id}` is the same
item at its own documented address.
"""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ...schemas.api import (
    ErrorResponse,
    GalleryItemResponse,
    GalleryListOrItemResponse,
    GalleryPath,
    GalleryQuery,
    UnpublishedResponse,
    UnpublishQuery,
)
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("gallery", __name__, url_prefix="/api", abp_tags=[Tag(name="gallery")])


@bp.get("/gallery", responses={200: GalleryListOrItemResponse, 400: ErrorResponse, 404: ErrorResponse})
def get_gallery(query: GalleryQuery) -> tuple[Response, int]:
    """One page of published sessions (optionally with `tag`), newest first."""
    if query.gallery_id is not None:
        item = services().sessions.gallery_item(query.gallery_id)
        return envelope(True, "gallery item retrieved", data=item.model_dump(mode="json"))
    page = services().sessions.gallery(query.tag, query.limit, query.cursor)
    return envelope(
        True,
        "gallery retrieved",
        data=[i.model_dump(mode="json") for i in page.items],
        next_cursor=page.next_cursor,
    )


@bp.get("/gallery/<gallery_id>", responses={200: GalleryItemResponse, 400: ErrorResponse, 404: ErrorResponse})
def get_gallery_item(path: GalleryPath) -> tuple[Response, int]:
    """One published session."""
    item = services().sessions.gallery_item(path.gallery_id)
    return envelope(True, "gallery item retrieved", data=item.model_dump(mode="json"))


@bp.delete(
    "/gallery/<gallery_id>", responses={200: UnpublishedResponse, 400: ErrorResponse, 404: ErrorResponse}
)
def unpublish(path: GalleryPath, query: UnpublishQuery) -> tuple[Response, int]:
    """Take your published session down; someone else's answers 404, as a missing one."""
    services().sessions.unpublish(acting_user(query.user_id), path.gallery_id)
    return envelope(True, "unpublished", data={"id": path.gallery_id})
