"""The one exception type the embedded-model layer raises to its callers."""

from __future__ import annotations


class EmbeddedModelError(Exception):
    """A local model cannot be used; the message is written for the person running the server.

    Every failure of this layer (weights not installed, weights corrupted, runtime missing,
    server failed to start) ends up here, so the web layer can show ``str(error)`` as-is
    instead of translating a zoo of OSError/HTTP/pydantic errors.  Messages name the fix
    (usually a ``pip install`` command) and never contain the local API token.
    """
