"""The gallery of published sessions."""

from __future__ import annotations

from flask import Response
from flask_openapi3 import APIBlueprint, Tag

from ...schemas.api import ErrorResponse, GalleryQuery, GalleryResponse
from ..context import services
from ..errors import envelope

bp = APIBlueprint("gallery", __name__, url_prefix="/api", abp_tags=[Tag(name="gallery")])


@bp.get("/gallery", responses={200: GalleryResponse, 404: ErrorResponse})
def get_gallery(query: GalleryQuery) -> tuple[Response, int]:
    """One item by `gallery_id`, or the list (optionally by `tag`), newest first."""
    items = services().sessions.gallery(query.gallery_id, query.tag)
    if query.gallery_id is not None:
        return envelope(True, "gallery item retrieved", data=items[0].model_dump(mode="json"))
    return envelope(True, "gallery retrieved", data=[i.model_dump(mode="json") for i in items])
