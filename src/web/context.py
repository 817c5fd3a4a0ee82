"""The services an app instance serves, reachable from its request handlers."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from autobots.services.chat import ChatService
from autobots.services.runs import RunManager
from autobots.services.sessions import SessionService
from autobots.settings import Settings
from autobots.storage.repository import Repository


@dataclass
class Services:
    settings: Settings
    repo: Repository
    chat: ChatService
    sessions: SessionService
    runs: RunManager


def services() -> Services:
    return current_app.extensions["autobots"]
