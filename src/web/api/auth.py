"""Signing in and out of the chat page, the server's auth mode, and `GET /api/me`.

`POST /api/auth/session` takes an API key (token mode) or a bearer JWT (oidc mode) in the
`Authorization` header, as every API call does, and answers with an HttpOnly, SameSite=Strict
cookie that stands for it on this server's page: the page never keeps the key itself, and the
live event stream (EventSource sends no headers) is authenticated by the cookie.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from ...schemas.api import Envelope, ErrorResponse
from ...services.errors import Unauthorized
from ..auth import acting_user, bearer_credential, check_same_origin, principal
from ..context import services
from ..errors import envelope

bp = APIBlueprint("auth", __name__, url_prefix="/api", abp_tags=[Tag(name="auth")])


class SignedInUser(BaseModel):
    user_id: str
    is_admin: bool


class AuthInfo(BaseModel):
    mode: str
    user: SignedInUser | None = None
    # Without sign-in: the user the page and the client scripts use unless told otherwise.
    default_user_id: str | None = None


class AuthInfoResponse(Envelope[AuthInfo]):
    pass


class MeQuery(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)


class Me(BaseModel):
    user_id: str
    is_admin: bool
    auth_mode: str
    limits: dict[str, object]
    today: dict[str, object]


class MeResponse(Envelope[Me]):
    pass


def _info() -> dict[str, object]:
    who = principal()
    identity = services().identity
    return AuthInfo(
        mode=identity.mode.value,
        user=SignedInUser(user_id=who.user_id, is_admin=who.is_admin) if who else None,
        default_user_id=None if identity.signs_in else services().settings.default_user_id,
    ).model_dump(mode="json")


@bp.get("/auth", responses={200: AuthInfoResponse})
def auth_info() -> tuple[Response, int]:
    """How this server signs people in, and who is signed in on this request (if anyone)."""
    return envelope(True, "auth mode", data=_info())


@bp.post("/auth/session", responses={200: AuthInfoResponse, 401: ErrorResponse})
def sign_in() -> tuple[Response, int]:
    """Sign the page in with the credential in `Authorization: Bearer ...`: sets the cookie."""
    who = principal()
    identity = services().identity
    if not identity.signs_in:
        return envelope(True, "this server signs nobody in (auth.mode is none)", data=_info())
    if who is None or who.method == "cookie":
        if (credential := bearer_credential()) is not None:
            identity.authenticate(credential)  # a bad key or token: a 401 that says why
        raise Unauthorized("send your API key (or token) as 'Authorization: Bearer ...' to sign in")
    token, expires = identity.sign_in(who)
    response, code = envelope(True, f"signed in as {who.user_id}", data=_info())
    response.set_cookie(
        identity.settings.cookie_name,
        token,
        max_age=max(1, int((expires - datetime.now(UTC)).total_seconds())),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure
        if identity.settings.cookie_secure is None
        else identity.settings.cookie_secure,
        path="/",
    )
    return response, code


@bp.delete("/auth/session", responses={200: AuthInfoResponse, 403: ErrorResponse})
def sign_out() -> tuple[Response, int]:
    """End the page's sign-in (its cookie stops working at once, everywhere)."""
    identity = services().identity
    token = request.cookies.get(identity.settings.cookie_name)
    if token:
        check_same_origin()
        identity.sign_out(token)
    response, code = envelope(True, "signed out", data={"mode": identity.mode.value, "user": None})
    response.delete_cookie(identity.settings.cookie_name, path="/", httponly=True, samesite="Strict")
    return response, code


@bp.get("/me", responses={200: MeResponse, 401: ErrorResponse})
def me(query: MeQuery) -> tuple[Response, int]:
    """The user, whether an admin, the per-user limits and today's usage (UTC)."""
    user = acting_user(query.user_id)
    who = principal()
    data = services().limits.describe(user)
    return envelope(
        True,
        "your account",
        data={
            "user_id": user,
            "is_admin": bool(who and who.is_admin and who.user_id == user),
            "auth_mode": services().identity.mode.value,
            **data,
        },
    )
