"""How the server knows who is asking (`auth.*` in the config).

- ``none``: one local server, no sign-in; the user is whatever `user_id` a request names, as the
  original clients send it. `serve` refuses to listen beyond loopback in this mode.
- ``token``: API keys made with `python -m autobots keys create USER`.
- ``oidc``: bearer JWTs of an identity provider, checked against its JWKS.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AuthMode(StrEnum):
    NONE = "none"
    TOKEN = "token"
    OIDC = "oidc"


# Asymmetric algorithms only: `none` is never accepted, and HS* would let anyone holding the
# provider's public key forge tokens.
SAFE_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OIDCSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuer: str | None = None
    audience: str | None = None
    # Default: the issuer's discovery document names it.
    jwks_url: str | None = None
    user_claim: str = "sub"
    # A claim (dotted path, e.g. "realm_access.roles") that makes a user an admin when it is true,
    # equals `admin_value`, or is a list holding it.
    admin_claim: str | None = None
    admin_value: str = "admin"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    leeway_s: float = Field(30, ge=0, le=600)
    # The key set is kept this long; an unknown `kid` fetches it again, at most once per
    # `jwks_min_refresh_s`, so forged `kid`s cannot make the server hammer the provider.
    jwks_cache_s: float = Field(3600, gt=0)
    jwks_min_refresh_s: float = Field(30, ge=0)
    jwks_timeout_s: float = Field(5, gt=0, le=60)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algorithms: list[str]) -> list[str]:
        bad = [a for a in algorithms if a not in SAFE_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(
                f"auth.oidc.algorithms: {bad or 'empty'} not allowed; choose from {', '.join(SAFE_ALGORITHMS)}"
            )
        return algorithms


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: AuthMode = AuthMode.NONE
    oidc: OIDCSettings = Field(default_factory=OIDCSettings)
    # The chat page's sign-in cookie: how long it lasts (an OIDC sign-in never outlives its token).
    session_ttl_s: float = Field(43_200, gt=0, le=30 * 86_400)
    cookie_name: str = "autobots_session"
    # Whether the cookie is marked Secure (HTTPS only). null: when the request itself came over
    # HTTPS. Behind a proxy that ends TLS (the server sees plain HTTP), set it to true.
    cookie_secure: bool | None = None

    @model_validator(mode="after")
    def _oidc_complete(self) -> AuthSettings:
        if self.mode is AuthMode.OIDC and not (self.oidc.issuer and self.oidc.audience):
            raise ValueError("auth.mode 'oidc' needs auth.oidc.issuer and auth.oidc.audience")
        return self
