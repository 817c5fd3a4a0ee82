"""Sessions, messages and the gallery, with the ownership rules users rely on.

A user sees and changes only their own sessions and messages; an id that belongs to someone else
is answered exactly like an id that does not exist, so ids cannot be probed. Session ids are per
user: two users may both have a session "s1", each their own. A session's work dir (the files its
code wrote) is per user and session too, and goes when the session goes: a later session of the
same id starts empty.

Every list is paged (`services/pagination.py`): sessions and the gallery newest first; a
session's messages oldest first within a page, and the first page is the newest ones, so a
client that ignores the cursor sees how the conversation stands now, in order, and the cursor
leads back to the messages before. Anyone may read the gallery; only its publisher can take an
item down, and someone else's item answers as if it did not exist.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
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
from ..schemas.pagination import DEFAULT_LIMIT
from ..schemas.workflow import AgentWorkFlowConfig
from ..storage.gallery import GalleryRepository
from ..storage.repository import Conflict, Repository
from .errors import BadRequest, NotFound
from .pagination import Listing, listing, start_after
from .shared_files import SharedFiles

# The lists' names in their cursors, and the types of their sort keys.
SESSIONS, MESSAGES, GALLERY = "sessions", "messages", "gallery"
ROW_ID: tuple[type, ...] = (int,)


class SessionService:
    def __init__(
        self,
        repo: Repository,
        execution: ExecutionSettings,
        check_flow: Callable[[str, AgentWorkFlowConfig], object] | None = None,
        shared_files: SharedFiles | None = None,
    ) -> None:
        self.repo = repo
        # The distributed mode: files code wrote on another machine, from the database.
        self._shared = shared_files
        self.gallery_repo = GalleryRepository.alongside(repo)
        self._execution = execution
        # The run's own check of what a workflow may call (`TeamGate.runtime_flow`): a session
        # stores no workflow that its first message would refuse.
        self._check_flow = check_flow

    def _own(self, user_id: str, session_id: str) -> Session:
        session = self.repo.get_session(user_id, session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found")
        return session

    def list_sessions(
        self, user_id: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> Listing[Session]:
        """The user's sessions, newest first, one page."""
        before = start_after(SESSIONS, cursor, ROW_ID)
        page = self.repo.sessions_page(user_id, limit, None if before is None else int(before[0]))
        return listing(SESSIONS, page)

    def create_session(self, user_id: str, session: Session) -> Listing[Session]:
        """Create the session; returns the first page of the user's sessions (the old clients
        expect the list)."""
        if session.user_id != user_id:
            raise BadRequest("session.user_id must match user_id")
        if self._check_flow is not None:
            self._check_flow(user_id, session.flow_config)
        try:
            self.repo.create_session(user_id, session)
        except Conflict as exc:
            raise BadRequest(str(exc)) from exc
        return self.list_sessions(user_id)

    def messages(
        self, user_id: str, session_id: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> Listing[Message]:
        """One page of the session's messages, oldest first; the first page is the newest ones."""
        before = start_after(MESSAGES, cursor, ROW_ID)
        self._own(user_id, session_id)
        page = self.repo.messages_page(user_id, session_id, limit, None if before is None else int(before[0]))
        return listing(MESSAGES, page)

    def delete_message(self, user_id: str, msg_id: str, session_id: str | None) -> Listing[Message]:
        """Delete one message; returns the first page of what remains of its session (the old
        clients expect it)."""
        if not self.repo.delete_message(user_id, msg_id, session_id):
            raise NotFound(f"message {msg_id} not found")
        if session_id is None:
            return Listing([])
        return listing(MESSAGES, self.repo.messages_page(user_id, session_id, DEFAULT_LIMIT))

    def clear_session(self, user_id: str, session_id: str) -> None:
        """Delete the session with its messages, runs and files (published copies stay)."""
        if not self.repo.delete_user_sessions(user_id, session_id):
            raise NotFound(f"session {session_id} not found")
        remove_session_workdir(self._execution, session_id, owner=user_id)

    def publish(self, user_id: str, session_id: str, tags: Sequence[str]) -> GalleryItem:
        """Publish the stored session (not the request's copy of it: what is shown is what was said)."""
        session = self._own(user_id, session_id)
        return self.gallery_repo.publish_session(session, tags)

    def open_file(self, user_id: str, session_id: str, rel_path: str) -> BinaryIO:
        """A file the session's code wrote; anything outside the session's work dir is absent."""
        self._own(user_id, session_id)
        try:
            handle = open_session_file(self._execution, session_id, rel_path, owner=user_id)
        except ValueError:
            handle = None
        if handle is None and self._shared is not None:
            handle = self._shared.open(user_id, session_id, rel_path)
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

    def gallery(
        self, tag: str | None, limit: int = DEFAULT_LIMIT, cursor: str | None = None
    ) -> Listing[GalleryItem]:
        """Published items (optionally with `tag`), newest first, one page."""
        key = start_after(GALLERY, cursor, (str, int))
        before = None
        if key is not None:
            try:
                before = (datetime.fromisoformat(str(key[0])), int(key[1]))
            except ValueError as exc:
                raise BadRequest("invalid request: cursor: not a cursor of this list (gallery)") from exc
        return listing(GALLERY, self.gallery_repo.gallery_page(tag, limit, before))

    def gallery_item(self, gallery_id: str) -> GalleryItem:
        item = self.gallery_repo.gallery_item(gallery_id)
        if item is None:
            raise NotFound(f"gallery item {gallery_id} not found")
        return item

    def unpublish(self, user_id: str, gallery_id: str) -> None:
        """Take the user's own published item down; anyone else's answers as a missing one."""
        if not self.gallery_repo.unpublish(user_id, gallery_id):
            raise NotFound(f"gallery item {gallery_id} not found")
