"""Who is asking, and for whom: the one place that turns credentials into a user.

`authenticate` takes what a request carries (an API key, an OIDC bearer JWT, or the chat page's
sign-in cookie) and gives a `Principal` or raises `Unauthorized`; `acting_user` decides whose data
a request touches: the principal's own, or, for an admin, the user the request names. Every
service call below takes that user, so ownership is checked where the data is read, not only in
routes. In `auth.mode: none` there is no principal and the user is the request's `user_id`, as the
original clients send it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..auth import keys
from ..auth.oidc import OIDCVerifier, TokenRejected
from ..auth.settings import AuthMode, AuthSettings
from ..storage.identity import IdentityRepository, KeyInfo, KeyOwner
from .errors import BadRequest, Forbidden, NotFound, Unauthorized


@dataclass(frozen=True)
class Principal:
    user_id: str
    is_admin: bool
    # How the request proved it: "key", "oidc" or "cookie" (the page's sign-in).
    method: str
    key_id: str | None = None
    expires_at: datetime | None = None


class IdentityService:
    def __init__(self, settings: AuthSettings, store: IdentityRepository) -> None:
        self.settings = settings
        self._store = store
        self._oidc = OIDCVerifier(settings.oidc) if settings.mode is AuthMode.OIDC else None

    @property
    def mode(self) -> AuthMode:
        return self.settings.mode

    @property
    def signs_in(self) -> bool:
        return self.settings.mode is not AuthMode.NONE

    # credentials -------------------------------------------------------------------------------

    def authenticate(self, credential: str) -> Principal:
        """An API key (token mode) or a bearer JWT (oidc mode)."""
        credential = credential.strip()
        if not credential:
            raise Unauthorized("empty credentials")
        if self.settings.mode is AuthMode.TOKEN:
            owner = self._store.key_owner(keys.digest(credential), datetime.now(UTC))
            if owner is None:
                raise Unauthorized("the API key is not valid (unknown or revoked)")
            return Principal(owner.user_id, owner.is_admin, "key", key_id=owner.key_id)
        if self._oidc is not None:
            try:
                identity = self._oidc.verify(credential)
            except TokenRejected as exc:
                raise Unauthorized(str(exc)) from exc
            return Principal(identity.user_id, identity.is_admin, "oidc", expires_at=identity.expires_at)
        raise Unauthorized("this server does not sign anyone in (auth.mode is none)")

    def from_cookie(self, token: str) -> Principal:
        owner = self._store.web_session_owner(keys.digest(token), datetime.now(UTC))
        if owner is None:
            raise Unauthorized("the sign-in has expired or was ended: sign in again")
        return Principal(owner.user_id, owner.is_admin, "cookie", key_id=owner.key_id)

    def sign_in(self, principal: Principal) -> tuple[str, datetime]:
        """A page sign-in for a principal that proved itself with a key or a token: the cookie's
        token (never stored) and when it expires (an OIDC sign-in ends with its token)."""
        expires = datetime.now(UTC) + timedelta(seconds=self.settings.session_ttl_s)
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        token = keys.new_session_token()
        owner = KeyOwner(principal.user_id, principal.is_admin, principal.key_id)
        self._store.add_web_session(keys.digest(token), owner, expires)
        return token, expires

    def sign_out(self, token: str) -> None:
        self._store.delete_web_session(keys.digest(token))

    # whose data ----------------------------------------------------------------------------------

    def acting_user(self, principal: Principal | None, requested: str | None, field: str = "user_id") -> str:
        """The user a request acts for. Without sign-in, the request must name one; signed in, a
        named user must be the principal, unless the principal is an admin."""
        if principal is None:
            if self.signs_in:
                raise Unauthorized("sign in first")
            if not requested:
                raise BadRequest(f"invalid request: {field}: required (the server runs with auth.mode none)")
            return requested
        if requested is None or requested == principal.user_id:
            return principal.user_id
        if principal.is_admin:
            return requested
        raise Forbidden(
            f"{field} '{requested}' is not the signed-in user '{principal.user_id}': leave it out, or "
            "sign in as that user (only an admin may act for another user)"
        )

    # keys (the CLI) ------------------------------------------------------------------------------

    def create_key(self, user_id: str, admin: bool = False, name: str | None = None) -> tuple[KeyInfo, str]:
        """A new key for `user_id` (made with its first key); the key is returned once, here."""
        user_id = user_id.strip()
        if not user_id or len(user_id) > 200:
            raise BadRequest("the user id must be 1 to 200 characters")
        key = keys.new_key()
        info = self._store.add_key(keys.new_key_id(), keys.digest(key), user_id, name, admin)
        return info, key

    def list_keys(self, user_id: str | None = None) -> list[KeyInfo]:
        return self._store.list_keys(user_id)

    def revoke_key(self, key_id_or_key: str) -> KeyInfo:
        ref = key_id_or_key.strip()
        digest = keys.digest(ref) if keys.looks_like_key(ref) else None
        info = self._store.revoke_key(None if digest else ref, digest, datetime.now(UTC))
        if info is None:
            raise NotFound("no such key")
        return info
