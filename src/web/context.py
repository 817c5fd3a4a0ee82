"""The services an app instance serves (`services/core.py`), reachable from its request handlers."""

from __future__ import annotations

from flask import current_app

from ..services.core import Services

__all__ = ["Services", "services"]


def services() -> Services:
    return current_app.extensions["autobots"]
