"""The services an app instance serves, reachable from its request handlers."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..services.chat import ChatService
from ..services.credentials import CredentialService
from ..services.identity import IdentityService
from ..services.limits import UserLimits
from ..services.runs import RunManager
from ..services.sessions import SessionService
from ..settings import Settings
from ..storage.repository import Repository


@dataclass
class Services:
    settings: Settings
    repo: Repository
    chat: ChatService
    sessions: SessionService
    runs: RunManager
    identity: IdentityService
    limits: UserLimits
    credentials: CredentialService


def services() -> Services:
    return current_app.extensions["autobots"]
