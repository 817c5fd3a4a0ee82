"""The server's secret, and what it encrypts: the provider keys users store (`/api/credentials`).

Keys are kept encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from `cryptography`): a copy of
the database alone gives nobody a working provider key. The Fernet key is derived from the
server's secret with HKDF-SHA256, so any long random string serves as the secret.

The secret is the `secret_key` setting (env `AUTOBOTS_SECRET_KEY`) when set. Otherwise one is
generated at the first start and kept in a file (`secret.key`, mode 0600, next to the SQLite
database or in `data_dir`) that later starts read; two processes starting at once agree on one
(the file is created whole, by a hard link, or not at all). Several processes or machines that
share a database must share the secret: set it explicitly there. A lost or changed secret makes
the stored keys unreadable (their owners store them again); it never makes them readable.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_FILE = "secret.key"
_INFO = b"autobots stored credentials v1"


class SecretUnavailable(RuntimeError):
    """The server's secret cannot be read or made; the message says where and what to do."""


class Unreadable(ValueError):
    """A stored value was not encrypted with this server's secret (or was changed)."""


class SecretBox:
    def __init__(self, secret: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError) as exc:
            raise Unreadable("not readable with this server's secret_key") from exc


def load_secret(configured: str | None, path: Path) -> bytes:
    """The configured secret, else the one kept at `path` (made there at the first start)."""
    if configured:
        return configured.encode("utf-8")
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path, secrets.token_urlsafe(48).encode("ascii"))
    except OSError as exc:
        raise SecretUnavailable(
            f"cannot keep the server's secret in {path} ({exc.strerror or exc}): set secret_key "
            "(AUTOBOTS_SECRET_KEY) or data_dir to a writable directory"
        ) from exc
    return _read(path)


def _create(path: Path, secret: bytes) -> None:
    """Write the file whole, then link it into place: a process that finds it finds all of it,
    and of two processes starting at once the first link wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: its secret is the one
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _read(path: Path) -> bytes:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretUnavailable(
            f"the server's secret {path} may be read by other users (mode {stat.filemode(info.st_mode)}): "
            f"chmod 600 {path}"
        )
    secret = path.read_bytes().strip()
    if len(secret) < 16:
        raise SecretUnavailable(
            f"the server's secret {path} is empty or too short: delete it or set secret_key"
        )
    return secret
