"""Provider keys a user stores once (`/api/credentials`) and workflows name by their name
(`{"model": "gpt-4o-mini", "credential": "my-openai"}`).

Why: a key sent in a request lives only as long as that request. A session's follow-up without
`flow_config`, a schedule or a worker has no request to take a key from, so the follow-up went
out with no key and the provider's 401 was all the user saw. A stored credential is kept
encrypted with the server's secret (`auth/secretbox.py`), is never returned (a list shows a hint
such as `sk-…2f9a`) nor logged, and a session keeps the reference, not the key: its follow-ups
use the same credential, resolved again when each run starts.

Rules: names are per user, and another user's credential answers as if it did not exist (unknown
in a workflow, 404 to delete); a credential's `base_url` must pass the outbound rule
(`llm/outbound.py`) like a request's; a name is stored once (storing it again is a 400: delete it
first, so that a key is never replaced unseen).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from ..auth.secretbox import SECRET_FILE, SecretBox, Unreadable, load_secret
from ..llm.outbound import OutboundPolicy, OutboundRefused
from ..schemas.workflow import CREDENTIAL_NAME_PATTERN
from ..settings import Settings
from ..storage.credentials import CredentialExists, CredentialRepository
from ..storage.store import Store
from .errors import BadRequest, NotFound

_NAME = re.compile(CREDENTIAL_NAME_PATTERN)
MAX_KEY_CHARS = 4096


@dataclass(frozen=True)
class CredentialInfo:
    """What the API shows of a credential: never the key, at most a hint of its ends."""

    name: str
    base_url: str | None
    created_at: datetime
    hint: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "created_at": self.created_at.isoformat(),
            "hint": self.hint,
        }


@dataclass(frozen=True)
class UsableCredential:
    """A credential decrypted for a run (in memory only, for the run's life)."""

    name: str
    base_url: str | None
    api_key: str = field(repr=False)


def key_hint(key: str) -> str:
    """`sk-…2f9a`: enough to tell keys apart, too little to use (short keys show no characters)."""
    prefix = "sk-" if key.startswith("sk-") else ""
    return f"{prefix}…{key[-4:]}" if len(key) >= 20 else f"{prefix}…"


class CredentialService:
    def __init__(self, box: SecretBox, store: CredentialRepository, policy: OutboundPolicy) -> None:
        self._box = box
        self._store = store
        self._policy = policy

    @property
    def box(self) -> SecretBox:
        """The server's secret, for what else it encrypts (a queued run's keys: `handoff.py`)."""
        return self._box

    def store(self, user_id: str, name: str, api_key: str, base_url: str | None = None) -> CredentialInfo:
        if not _NAME.fullmatch(name):
            raise BadRequest(
                "name: 1 to 100 letters, digits, '_', '-' and '.', starting with a letter or digit"
            )
        if not api_key or len(api_key) > MAX_KEY_CHARS:
            raise BadRequest(f"api_key: 1 to {MAX_KEY_CHARS} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in api_key):
            raise BadRequest("api_key: must not contain spaces or control characters")
        if base_url is not None:
            try:
                self._policy.check(base_url)
            except OutboundRefused as exc:
                raise BadRequest(f"base_url: {exc}") from exc
        try:
            row = self._store.add(user_id, name, base_url, self._box.encrypt(api_key))
        except CredentialExists as exc:
            raise BadRequest(
                f"name: you already have a credential named '{name}': delete it first to replace it"
            ) from exc
        return CredentialInfo(row.name, row.base_url, row.created_at, key_hint(api_key))

    def list_credentials(self, user_id: str) -> list[CredentialInfo]:
        infos = []
        for row in self._store.of_user(user_id):
            try:
                hint: str | None = key_hint(self._box.decrypt(row.token))
            except Unreadable:
                hint = None  # stored under another secret: unusable until stored again
            infos.append(CredentialInfo(row.name, row.base_url, row.created_at, hint))
        return infos

    def delete(self, user_id: str, name: str) -> None:
        if not self._store.delete(user_id, name):
            raise NotFound(f"credential {name} not found")

    def usable(self, user_id: str, names: Collection[str]) -> dict[str, UsableCredential]:
        """The user's credentials of these names, decrypted; names the user has none of are
        absent (the caller says which field named them)."""
        found: dict[str, UsableCredential] = {}
        for name, row in self._store.get_many(user_id, names).items():
            try:
                key = self._box.decrypt(row.token)
            except Unreadable as exc:
                raise BadRequest(
                    f"the stored credential '{name}' cannot be read with this server's secret_key "
                    "(was the secret changed?): delete it and store it again"
                ) from exc
            found[name] = UsableCredential(name, row.base_url, key)
        return found


def secret_path(settings: Settings) -> Path:
    """Where a generated server secret is kept: `data_dir`, else the SQLite database's
    directory, else the working directory."""
    if settings.data_dir:
        return Path(settings.data_dir) / SECRET_FILE
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).resolve().parent / SECRET_FILE
    return Path.cwd() / SECRET_FILE


def credential_service(settings: Settings, store: Store) -> CredentialService:
    """The service over `store`'s database, with the server's secret (read, or made, now)."""
    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    box = SecretBox(load_secret(configured, secret_path(settings)))
    return CredentialService(
        box, CredentialRepository.alongside(store), OutboundPolicy.from_settings(settings)
    )
