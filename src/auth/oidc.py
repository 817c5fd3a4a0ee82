"""Bearer JWTs from an OpenID Connect provider (Keycloak, Auth0, Entra, Supabase), checked with
PyJWT against the provider's published keys (JWKS).

Everything a forged or stale token could slip through is checked: the signature, with an
algorithm from an asymmetric allowlist (never ``none``, never HS*); the key's own algorithm when
the JWKS names one, and its type (and curve) always, so a token cannot point an RS256 signature at
an EC key; expiry and not-before (with a small leeway for clock skew); issuer; audience; and the
user claim. The key set is cached; a token with an unknown ``kid`` (a key rotation) fetches it
again, but at most once per `jwks_min_refresh_s`, so a stream of made-up ``kid``s cannot turn the
server into a load generator against the provider. Whatever a token or the provider sends, the
answer is an `Identity` or `TokenRejected`, never another exception: keys PyJWT cannot load are
skipped, and a provider that cannot be read rejects only the tokens its cached keys cannot check.

This module imports nothing from the app: it takes its settings and a fetch function.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from .settings import OIDCSettings


class TokenRejected(Exception):
    """The token is not acceptable; the message says why, and never quotes the token."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    is_admin: bool
    expires_at: datetime | None


Fetch = Callable[[str, float], bytes]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a JWKS endpoint that redirects elsewhere is an error, not followed


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def fetch_json(url: str, timeout: float) -> bytes:
    """GET a small JSON document (discovery, JWKS): no redirects, no proxies, 1 MiB at most."""
    with _OPENER.open(
        urllib.request.Request(url, headers={"Accept": "application/json"}), timeout=timeout
    ) as r:
        return r.read(1_048_577)[:1_048_576]


class OIDCVerifier:
    def __init__(self, settings: OIDCSettings, fetch: Fetch = fetch_json) -> None:
        if not (settings.issuer and settings.audience):
            raise ValueError("OIDC needs an issuer and an audience")
        self._settings = settings
        self._fetch = fetch
        self._lock = threading.Lock()
        # kid -> (key, the algorithm the JWKS declares for it, if any)
        self._keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        self._anonymous: list[tuple[jwt.PyJWK, str | None]] = []  # keys published without a kid
        self._fetched_at = float("-inf")
        self._jwks_url = settings.jwks_url

    # the key set -------------------------------------------------------------------------------

    def _discover(self) -> str:
        issuer = (self._settings.issuer or "").rstrip("/")
        doc = json.loads(
            self._fetch(issuer + "/.well-known/openid-configuration", self._settings.jwks_timeout_s)
        )
        url = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url:
            raise TokenRejected("the identity provider's discovery document names no jwks_uri")
        return url

    def _refresh(self) -> None:
        """Fetch the key set (the caller holds the lock)."""
        self._fetched_at = time.monotonic()
        try:
            if self._jwks_url is None:
                self._jwks_url = self._discover()
            data = json.loads(self._fetch(self._jwks_url, self._settings.jwks_timeout_s))
            entries = data.get("keys") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise ValueError("no 'keys' list")
        except TokenRejected:
            raise
        except (OSError, ValueError, RecursionError, http.client.HTTPException) as exc:
            raise TokenRejected(
                f"the identity provider's keys could not be read ({type(exc).__name__})"
            ) from exc
        keys: dict[str, tuple[jwt.PyJWK, str | None]] = {}
        anonymous: list[tuple[jwt.PyJWK, str | None]] = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue  # an encryption key, or a symmetric one: never a signature key here
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError, NotImplementedError):
                continue  # a key type, curve or algorithm this server cannot use: skipped
            declared = entry.get("alg") if isinstance(entry.get("alg"), str) else None
            if isinstance(entry.get("kid"), str) and entry["kid"]:
                keys[entry["kid"]] = (key, declared)
            else:
                anonymous.append((key, declared))
        self._keys, self._anonymous = keys, anonymous

    def _key_for(self, kid: str | None) -> tuple[jwt.PyJWK, str | None]:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > self._settings.jwks_cache_s
            unknown = (kid not in self._keys) if kid else not self._anonymous
            may_refetch = time.monotonic() - self._fetched_at >= self._settings.jwks_min_refresh_s
            failed: TokenRejected | None = None
            if stale or (unknown and may_refetch):
                try:
                    self._refresh()
                except TokenRejected as exc:
                    failed = exc  # the cached keys still check the tokens they signed
            found = self._keys.get(kid) if kid else None
            if not kid and len(self._anonymous) == 1:
                found = self._anonymous[0]
        if found is None and failed is not None:
            raise failed
        if found is None:
            raise TokenRejected("the token was signed with a key the identity provider does not publish")
        return found

    # tokens ------------------------------------------------------------------------------------

    def verify(self, token: str) -> Identity:
        s = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise TokenRejected("the bearer token is not a JWT") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in s.algorithms:
            shown = repr(alg[:20]) if isinstance(alg, str) else type(alg).__name__
            raise TokenRejected(f"the token's algorithm {shown} is not accepted")
        kid = header.get("kid")
        key, declared = self._key_for(kid if isinstance(kid, str) else None)
        if (declared is not None and declared != alg) or not _fits(key, alg):
            raise TokenRejected("the token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token is meant for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the token was issued by another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("the token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"the token is not valid ({type(exc).__name__})") from exc
        except jwt.PyJWTError as exc:  # e.g. InvalidKeyError: the key cannot check this algorithm
            raise TokenRejected("the token's algorithm does not match its key") from exc
        user = _claim(claims, s.user_claim)
        if not isinstance(user, str) or not user or len(user) > 200:
            raise TokenRejected(f"the token has no usable '{s.user_claim}' claim")
        return Identity(user_id=user, is_admin=_is_admin(claims, s), expires_at=_expiry(claims.get("exp")))


# The key type each algorithm family needs; an EC key's curve must also be the algorithm's own.
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def _fits(key: jwt.PyJWK, alg: str) -> bool:
    if key.key_type != _KEY_TYPES.get(alg[:2]):
        return False
    # PyJWK names an EC key's algorithm after its curve (P-256: ES256) unless the JWKS names one.
    return key.key_type != "EC" or key.algorithm_name == alg


def _expiry(exp: Any) -> datetime | None:
    """`exp` as a time (PyJWT has checked it is a number in the future); None if out of range."""
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, ValueError, OSError):
        return None  # a year past 9999: the sign-in's own lifetime bounds it


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_admin(claims: dict[str, Any], s: OIDCSettings) -> bool:
    if not s.admin_claim:
        return False
    value = _claim(claims, s.admin_claim)
    if value is True:
        return True
    if isinstance(value, str):
        return value == s.admin_value
    if isinstance(value, list):
        return s.admin_value in value
    return False
