"""Sessions, messages and the gallery, with the ownership rules users rely on.

A user sees and changes only their own sessions and messages; an id that belongs to someone else
is answered exactly like an id that does not exist, so ids cannot be probed. Session ids are per
user: two users may both have a session "s1", each their own. A session's work dir (the files its
code wrote) is per user and session too, and goes when the session goes: a later session of the
same id starts empty.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import BinaryIO

from ..execution import (
    ExecutionSettings,
    is_owner_dir_name,
    open_session_file,
    owner_dir_name,
    remove_session_workdir,
    session_dir_name,
    work_root,
)
from ..schemas.chat import GalleryItem, Message, Session
from ..storage.repository import Conflict, Repository
from .errors import BadRequest, NotFound


class SessionService:
    def __init__(self, repo: Repository, execution: ExecutionSettings) -> None:
        self.repo = repo
        self._execution = execution

    def _own(self, user_id: str, session_id: str) -> Session:
        session = self.repo.get_session(user_id, session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found")
        return session

    def list_sessions(self, user_id: str) -> list[Session]:
        return self.repo.get_sessions(user_id)

    def create_session(self, user_id: str, session: Session) -> list[Session]:
        if session.user_id != user_id:
            raise BadRequest("session.user_id must match user_id")
        try:
            self.repo.create_session(user_id, session)
        except Conflict as exc:
            raise BadRequest(str(exc)) from exc
        return self.repo.get_sessions(user_id)

    def messages(self, user_id: str, session_id: str) -> list[Message]:
        self._own(user_id, session_id)
        return self.repo.load_messages(user_id, session_id)

    def delete_message(self, user_id: str, msg_id: str, session_id: str | None) -> list[Message]:
        """Delete one message; returns what remains of its session (the old clients expect it)."""
        if not self.repo.delete_message(user_id, msg_id, session_id):
            raise NotFound(f"message {msg_id} not found")
        return self.repo.load_messages(user_id, session_id) if session_id else []

    def clear_session(self, user_id: str, session_id: str) -> None:
        """Delete the session with its messages, runs and files (published copies stay)."""
        if not self.repo.delete_user_sessions(user_id, session_id):
            raise NotFound(f"session {session_id} not found")
        remove_session_workdir(self._execution, session_id, owner=user_id)

    def publish(self, user_id: str, session_id: str, tags: Sequence[str]) -> GalleryItem:
        """Publish the stored session (not the request's copy of it: what is shown is what was said)."""
        session = self._own(user_id, session_id)
        return self.repo.publish_session(session, tags)

    def open_file(self, user_id: str, session_id: str, rel_path: str) -> BinaryIO:
        """A file the session's code wrote; anything outside the session's work dir is absent."""
        self._own(user_id, session_id)
        try:
            handle = open_session_file(self._execution, session_id, rel_path, owner=user_id)
        except ValueError:
            handle = None
        if handle is None:
            raise NotFound(f"file {rel_path} not found")
        return handle

    def adopt_legacy_workdirs(self) -> tuple[int, int]:
        """At start: work dirs from before they were per user (`<root>/<session>`) move under their
        owner's dir; those whose session is gone are deleted. Returns (moved, deleted)."""
        root = work_root(self._execution)
        if not root.is_dir():
            return 0, 0
        legacy = [
            p for p in root.iterdir() if not is_owner_dir_name(p.name) and not p.is_symlink() and p.is_dir()
        ]
        if not legacy:
            return 0, 0
        owners = {session_dir_name(session_id): user_id for user_id, session_id in self.repo.session_keys()}
        moved = deleted = 0
        for path in legacy:
            owner = owners.get(path.name)
            if owner is None:
                shutil.rmtree(path, ignore_errors=True)
                deleted += 1
                continue
            target = root / owner_dir_name(owner) / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                path.rename(target)
                moved += 1
        return moved, deleted

    def gallery(self, gallery_id: str | None, tag: str | None) -> list[GalleryItem]:
        items = self.repo.get_gallery(gallery_id, tag)
        if gallery_id is not None and not items:
            raise NotFound(f"gallery item {gallery_id} not found")
        return items
