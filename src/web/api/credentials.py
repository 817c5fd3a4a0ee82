"""Stored provider keys: store one, list them (never the key), delete one.

A workflow's `config_list` entry names a stored key by its name (`"credential": "my-openai"`);
see `services/credentials.py` for why and how they are kept.
"""

from __future__ import annotations

from datetime import datetime

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ...schemas.api import Envelope, ErrorResponse
from ...schemas.workflow import CREDENTIAL_NAME_PATTERN
from ...services.credentials import MAX_KEY_CHARS
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("credentials", __name__, url_prefix="/api", abp_tags=[Tag(name="credentials")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}


class StoreCredentialRequest(BaseModel):
    # A misspelt field (`key` for `api_key`) is a 400 naming it, not a credential without a key.
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    name: str = Field(pattern=CREDENTIAL_NAME_PATTERN, description="what config_list entries call it")
    base_url: str | None = Field(
        default=None,
        max_length=1000,
        description="the endpoint the key is for (default: the server's endpoint); must be allowed here",
    )
    api_key: SecretStr = Field(
        min_length=1, max_length=MAX_KEY_CHARS, description="kept encrypted, never shown"
    )


class CredentialsQuery(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)


class CredentialPath(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class Credential(BaseModel):
    name: str
    base_url: str | None = None
    created_at: datetime
    hint: str | None = Field(default=None, description="the key's ends, e.g. sk-…2f9a; never the key")


class CredentialResponse(Envelope[Credential]):
    pass


class CredentialsResponse(Envelope[list[Credential]]):
    pass


class DeletedCredential(BaseModel):
    name: str


class DeletedCredentialResponse(Envelope[DeletedCredential]):
    pass


@bp.post("/credentials", responses={200: CredentialResponse, **ERRORS})
def store_credential(body: StoreCredentialRequest) -> tuple[Response, int]:
    """Store a provider key under a name (a name you have already is a 400)."""
    info = services().credentials.store(
        acting_user(body.user_id), body.name, body.api_key.get_secret_value(), body.base_url
    )
    return envelope(True, f"credential {info.name} stored", data=info.as_dict())


@bp.get("/credentials", responses={200: CredentialsResponse, **ERRORS})
def list_credentials(query: CredentialsQuery) -> tuple[Response, int]:
    """Your stored credentials: name, base_url, created_at and a hint; never the key."""
    infos = services().credentials.list_credentials(acting_user(query.user_id))
    return envelope(True, "credentials retrieved", data=[i.as_dict() for i in infos])


@bp.delete("/credentials/<name>", responses={200: DeletedCredentialResponse, **ERRORS})
def delete_credential(path: CredentialPath, query: CredentialsQuery) -> tuple[Response, int]:
    """Delete a stored credential; configs that name it are a 400 from then on."""
    services().credentials.delete(acting_user(query.user_id), path.name)
    return envelope(True, f"credential {path.name} deleted", data={"name": path.name})
