"""Session work dirs on the host, and safe access to the files sandboxed code leaves there.

Everything in a work dir was possibly written by untrusted code, which may plant
symlinks pointing anywhere on the host. The server reads those files as its own
(often root) user, so every lookup here refuses to leave the work dir.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

import pydantic

from .request import check_relative_subpath
from .settings import ExecutionSettings

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# list_files stops after this many entries: a sandbox can create millions of files and
# the listing is shown to a person, not used for accounting.
MAX_LISTED_FILES = 10_000


class FileInfo(pydantic.BaseModel):
    """A regular file in a work dir, by path relative to it."""

    name: str
    size: int


def validate_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is safe as a single directory name, else raise ValueError."""
    if not isinstance(session_id, str) or not _SESSION_ID_RE.match(session_id):
        raise ValueError(
            "invalid session id: use 1-128 characters from letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return session_id


def work_root(settings: ExecutionSettings) -> Path:
    """The absolute directory holding all session work dirs."""
    return Path(settings.work_root).expanduser().resolve()


def session_workdir(settings: ExecutionSettings, session_id: str) -> Path:
    """Create (if needed) and return the work dir of a session.

    The root is 0755 and root-owned when the server is root; sandboxes never see it
    (only the session dir or a sub dir is mounted), so its mode only matters to
    host users.
    """
    validate_session_id(session_id)
    root = work_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    path = root / session_id
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"work dir for session {session_id!r} is not a directory")
    return path


def run_subdir(session_dir: Path, sub_dir: str | None) -> Path:
    """The dir a run's code sees as its work dir: the session dir or a sub dir of it.

    Created component by component without following symlinks, because a previous
    run may have replaced any of them with a link pointing outside.
    """
    if sub_dir is None:
        return session_dir
    parts = check_relative_subpath(sub_dir).split("/")
    current = session_dir
    for part in parts:
        current = current / part
        with contextlib.suppress(FileExistsError):
            current.mkdir(mode=0o755)
        st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"work_dir {sub_dir!r} is not a directory inside the session's work dir")
    # Re-check the whole chain once more and hand out the real path: what gets
    # mounted is then a directory that was inside the session dir just now. (Only
    # code running concurrently in the same session could race this.)
    real = current.resolve(strict=True)
    if not real.is_relative_to(session_dir.resolve(strict=True)):
        raise ValueError(f"work_dir {sub_dir!r} is not a directory inside the session's work dir")
    return real


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give a work dir tree to the sandbox's uid so sandboxed code can write it.

    Only meaningful (and only done) when the server runs as root. Never follows
    symlinks: a link planted by earlier code must not make root chown a host file.
    Hard links to host files cannot exist in a work dir: sandboxes only see the
    work dir writable and link(2) does not cross mounts.
    """
    if os.geteuid() != 0:
        return

    def fix(p: str) -> None:
        st = os.lstat(p)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(p, uid, gid, follow_symlinks=False)

    fix(str(path))
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in (*dirnames, *filenames):
            try:
                fix(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue


def list_workdir_files(path: Path, exclude_dirs: frozenset[str] = frozenset()) -> list[FileInfo]:
    """Regular files under ``path`` (symlinks are neither listed nor followed), sorted by name."""
    files: list[FileInfo] = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        rel_dir = os.path.relpath(dirpath, path)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in exclude_dirs]
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            files.append(FileInfo(name=rel, size=st.st_size))
            if len(files) >= MAX_LISTED_FILES:
                return files
    return files


def _session_dir_if_exists(settings: ExecutionSettings, session_id: str) -> Path | None:
    try:
        validate_session_id(session_id)
    except ValueError:
        return None
    path = work_root(settings) / session_id
    if path.is_symlink() or not path.is_dir():
        return None
    return path


def resolve_session_file(settings: ExecutionSettings, session_id: str, rel_path: str) -> Path | None:
    """The real path of a regular file inside a session's work dir, or None.

    None when the path is absolute, contains '..', resolves (through any symlink)
    outside the work dir, is not a regular file, or does not exist.

    Code may still be running in the sandbox and could swap a directory for a
    symlink between this check and the caller's open(); callers that serve file
    contents should prefer :func:`open_session_file`, which has no such window.
    """
    base = _session_dir_if_exists(settings, session_id)
    if base is None:
        return None
    try:
        rel = check_relative_subpath(rel_path)
        resolved = (base / rel).resolve(strict=True)
        base_real = base.resolve(strict=True)
    except (ValueError, OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(base_real) or resolved == base_real:
        return None
    if not resolved.is_file():
        return None
    return resolved


def open_session_file(settings: ExecutionSettings, session_id: str, rel_path: str) -> BinaryIO | None:
    """Open a regular file inside a session's work dir for reading, or return None.

    Walks the path one component at a time with O_NOFOLLOW relative to the previous
    directory's fd, so no symlink is ever followed, not even one created while the
    walk runs. Symlinks that :func:`resolve_session_file` would accept (pointing
    inside the work dir) are refused here; that is the price of having no race.
    """
    base = _session_dir_if_exists(settings, session_id)
    if base is None:
        return None
    try:
        parts = check_relative_subpath(rel_path).split("/")
    except ValueError:
        return None
    flags_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(base, flags_dir)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, flags_dir, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    except OSError:
        os.close(fd)
        return None
    os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        return None
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb")
