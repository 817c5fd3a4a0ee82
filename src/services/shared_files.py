"""Files across processes (the distributed mode): what a run's code left is kept in the database.

Why not a shared volume: API processes and workers may be on different machines, each with its
own work root; the database is the one thing they all reach. After each run a worker stores the
session's work dir as it is (each file up to `runs.max_stored_file_bytes`; a bigger one is listed
with its size and served only where it was written), any API process serves a file from there
when its own disk has none, and a worker puts a session's files back into its work dir before
the session's next run there, so code can read what earlier code wrote on another machine.
"""

from __future__ import annotations

import io
import logging
import os
from typing import BinaryIO

from ..execution import ExecutionSettings, existing_session_dir
from ..execution.request import check_relative_subpath
from ..execution.workdir import list_workdir_files, session_workdir
from ..storage.runstate import RunStateRepository

log = logging.getLogger(__name__)


class SharedFiles:
    def __init__(self, state: RunStateRepository, execution: ExecutionSettings, max_bytes: int) -> None:
        self._state = state
        self._execution = execution
        self._max = max_bytes

    def store(self, user_id: str, session_id: str) -> None:
        """Keep the session's work dir as it is now (after a run)."""
        path = existing_session_dir(self._execution, session_id, user_id)
        if path is None:
            return
        kept: list[tuple[str, int, bytes | None]] = []
        for info in list_workdir_files(path):
            data = None
            if info.size <= self._max:
                try:
                    data = _read_inside(path, info.name)
                except OSError:
                    continue  # gone, or swapped for a symlink, since it was listed
            kept.append((info.name, info.size, data))
        self._state.save_files(user_id, session_id, kept)

    def restore(self, user_id: str, session_id: str) -> None:
        """Before a run: the session's stored files that this machine's work dir lacks."""
        stored = self._state.files(user_id, session_id)
        if not stored:
            return
        base = session_workdir(self._execution, session_id, owner=user_id)
        for name, _size, data in stored:
            if data is None:
                continue
            try:
                rel = check_relative_subpath(name)
            except ValueError:
                continue
            target = base / rel
            if target.exists() or target.is_symlink():
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            except OSError as exc:
                log.warning("could not restore %s of session %s: %s", name, session_id, exc)

    def open(self, user_id: str, session_id: str, rel_path: str) -> BinaryIO | None:
        """A stored file's content, or None (none stored, or too big to be)."""
        found = self._state.file(user_id, session_id, rel_path)
        if found is None or found[1] is None:
            return None
        return io.BytesIO(found[1])


def _read_inside(base: os.PathLike[str], rel: str) -> bytes:
    """Read `rel` under `base` without following a symlink anywhere on the way."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        parts = rel.split("/")
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as handle:
        return handle.read()
