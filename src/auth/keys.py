"""API keys: how they look, how they are made, and how they are kept.

A key is shown to its owner once, when it is made, and never again: the server keeps only its
SHA-256 digest. Keys carry 256 random bits, so a fast digest is enough (there is nothing to brute
force, unlike a password), and a lookup by digest is one indexed read. Every key starts with
``autobots_sk_`` so that secret scanners (and people) recognise one that leaked into a file or a
log. Comparison is by digest with `hmac.compare_digest`, so no byte of a stored digest leaks
through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "autobots_sk_"
KEY_ID_PREFIX = "key_"
_SECRET_BYTES = 32  # 256 bits


def new_key() -> str:
    """A fresh random API key (the only time it exists in clear text is in its owner's hands)."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def new_key_id() -> str:
    """A public id to list and revoke a key by; it reveals nothing of the key."""
    return KEY_ID_PREFIX + secrets.token_hex(8)


def looks_like_key(text: str) -> bool:
    return text.startswith(KEY_PREFIX) and len(text) > len(KEY_PREFIX) + 20


def digest(key: str) -> str:
    """What is stored in place of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matches(key: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(key), stored_digest)


def new_session_token() -> str:
    """An opaque token for the chat page's sign-in cookie; stored only as its digest too."""
    return secrets.token_urlsafe(_SECRET_BYTES)
