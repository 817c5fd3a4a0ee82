"""Session work dirs on the host, and safe access to the files sandboxed code leaves there.

Everything in a work dir was possibly written by untrusted code, which may plant
symlinks pointing anywhere on the host. The server reads those files as its own
(often root) user, so every lookup here refuses to leave the work dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import BinaryIO

import pydantic

from .request import check_relative_subpath
from .settings import SANDBOX_WORKDIR, ExecutionSettings

_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Names of hashed session dirs start with '_', which no id used as is can: the two
# kinds of names never collide.
_HASHED_PREFIX = "_s-"
# Each owner's sessions live in a dir of their own, named by a digest of the owner's id (user
# ids are often email addresses; the disk need not show them).
_OWNER_PREFIX = "_u-"
# Where a deleted session's dir goes on its way out: no session dir name starts with it.
_GONE_PREFIX = "_gone-"
# list_files stops after this many entries: a sandbox can create millions of files and
# the listing is shown to a person, not used for accounting.
MAX_LISTED_FILES = 10_000
# Walks hold one open fd per level; deeper levels (only sandboxed code makes them) are
# neither listed nor chowned.
MAX_WALK_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FileInfo(pydantic.BaseModel):
    """A regular file in a work dir, by path relative to it."""

    name: str
    size: int


def session_dir_name(session_id: str) -> str:
    """The directory name of a session's work dir: the id itself when it is a safe name.

    Any other id (old clients send ids like "my chat") gets ``_s-`` + its SHA-256, a
    safe name that cannot collide with an id used as is. The executors and the files
    endpoint both go through here, so they always agree on the directory.
    """
    if not isinstance(session_id, str) or not session_id:
        raise ValueError("invalid session id: it must be a non-empty string")
    if _SESSION_ID_RE.match(session_id):
        return session_id
    return _HASHED_PREFIX + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def owner_dir_name(owner: str) -> str:
    """The directory of one owner's session work dirs."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("invalid owner: it must be a non-empty string")
    return _OWNER_PREFIX + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def is_owner_dir_name(name: str) -> bool:
    return name.startswith(_OWNER_PREFIX)


def work_root(settings: ExecutionSettings) -> Path:
    """The absolute directory holding all session work dirs."""
    return Path(settings.work_root).expanduser().resolve()


def _session_path(settings: ExecutionSettings, session_id: str, owner: str | None) -> Path:
    """`<work root>/[<owner dir>/]<session dir>`: sessions of different owners may share an id."""
    root = work_root(settings)
    parent = root / owner_dir_name(owner) if owner is not None else root
    return parent / session_dir_name(session_id)


def session_workdir(settings: ExecutionSettings, session_id: str, owner: str | None = None) -> Path:
    """Create (if needed) and return the work dir of a session (of `owner`, when given).

    This is the directory sandboxes mount (at /workspace). Its parents (the owner's dir and
    the work root) are never visible to any sandbox, so no sandboxed code can swap the session
    dir itself for a symlink. They are 0755 and root-owned when the server is root.
    """
    path = _session_path(settings, session_id, owner)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise ValueError(f"work dir for session {session_id!r} is not a directory")
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    if path.is_symlink() or not path.is_dir():
        raise ValueError(f"work dir for session {session_id!r} is not a directory")
    return path


def remove_session_workdir(settings: ExecutionSettings, session_id: str, owner: str | None = None) -> bool:
    """Delete a session's work dir and everything in it (its session is gone); links inside are
    removed, never followed. True when there was one."""
    try:
        path = _session_path(settings, session_id, owner)
    except ValueError:
        return False
    if path.is_symlink():
        path.unlink()
        return True
    if not path.is_dir():
        return False
    # First moved aside (one rename, which cannot fail halfway), so that a later session of the
    # same id starts empty even if something inside cannot be deleted (a dir sandboxed code made
    # unreadable, on a server that is not root); then deleted, fd-based, never following links.
    gone = path.with_name(f"{_GONE_PREFIX}{uuid.uuid4().hex}")
    path.rename(gone)
    shutil.rmtree(gone, ignore_errors=True)
    return True


def sandbox_cwd(sub_dir: str | None) -> str:
    """Where a run's code starts inside the sandbox: /workspace or /workspace/<sub>."""
    return SANDBOX_WORKDIR if sub_dir is None else f"{SANDBOX_WORKDIR}/{check_relative_subpath(sub_dir)}"


def _open_dir(path: Path) -> int:
    """An fd of ``path`` itself, refusing a symlink (O_NOFOLLOW on the last component)."""
    return os.open(path, _DIR_FLAGS)


def _descend(fd: int, parts: list[str]) -> int | None:
    """Open ``parts`` below the dir ``fd`` one component at a time, never following a
    symlink; None if a component is missing or not a directory. ``fd`` stays open."""
    current = os.dup(fd)
    try:
        for part in parts:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = next_fd
    except OSError:
        os.close(current)
        return None
    return current


def run_subdir(session_dir: Path, sub_dir: str | None, owner: tuple[int, int] | None = None) -> str | None:
    """Create the sub dir a run's code starts in; returns it normalised (None: the session dir).

    Sandboxes always mount the session dir and only *start* in the sub dir, so the sub
    dir is never a host path handed to a mount: if earlier code replaced a component
    with a symlink (``ln -s / sub``), the sandbox resolves it inside itself, where it
    reaches nothing of the host. Created here with mkdirat/openat relative to fds, so
    the server itself never follows such a link either; a component that is not a
    directory is left as it is. Dirs created here get ``owner`` (uid, gid) when the
    server is root, so the sandbox's user can write them.
    """
    if sub_dir is None:
        return None
    sub = check_relative_subpath(sub_dir)
    fd = _open_dir(session_dir)
    try:
        for part in sub.split("/"):
            created = False
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, mode=0o755, dir_fd=fd)
                created = True
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                break  # a symlink or a file planted by code: the sandbox resolves it itself
            os.close(fd)
            fd = next_fd
            if created and owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return sub


def _walk(fd: int, depth: int = 0) -> Generator[tuple[int, str, os.DirEntry[str]], None, None]:
    """(dir fd, path relative to the top, entry) for everything below the dir ``fd``.

    Directories are opened with O_NOFOLLOW relative to their parent's fd, so a
    symlink is never followed, not even one swapped in while the walk runs. Entries
    of a directory come sorted by name, each directory's before its sub dirs'.
    """
    with os.scandir(fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        yield fd, entry.name, entry
    if depth >= MAX_WALK_DEPTH:
        return
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue
        try:
            for child_fd, rel, sub_entry in _walk(child, depth + 1):
                yield child_fd, f"{entry.name}/{rel}", sub_entry
        finally:
            os.close(child)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give a work dir tree to the sandbox's uid so sandboxed code can write it.

    Only meaningful (and only done) when the server runs as root. Never follows
    symlinks, not even a top-level one: every chown is an lchown relative to a dir
    fd opened with O_NOFOLLOW, so a link planted by earlier code cannot make root
    chown a host file. Hard links to host files cannot exist in a work dir:
    sandboxes only see the work dir writable and link(2) does not cross mounts.
    """
    if os.geteuid() != 0:
        return
    try:
        fd = _open_dir(path)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        for dir_fd, _rel, entry in _walk(fd):
            try:
                st = entry.stat(follow_symlinks=False)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
    finally:
        os.close(fd)


def list_workdir_files(path: Path, sub_dir: str | None = None) -> list[FileInfo]:
    """Regular files under ``path`` (or its ``sub_dir``), names relative to that dir, sorted.

    Symlinks are neither listed nor followed, whether inside the tree, at ``path``
    itself or on the way to ``sub_dir``.
    """
    try:
        top = _open_dir(path)
    except OSError:
        return []
    try:
        fd = _descend(top, sub_dir.split("/")) if sub_dir else os.dup(top)
    finally:
        os.close(top)
    if fd is None:
        return []
    files: list[FileInfo] = []
    walker = _walk(fd)
    try:
        for _dir_fd, rel, entry in walker:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(FileInfo(name=rel, size=st.st_size))
                if len(files) >= MAX_LISTED_FILES:
                    break
    finally:
        walker.close()  # closes the fds of the levels still open
        os.close(fd)
    return sorted(files, key=lambda f: f.name)


def existing_session_dir(
    settings: ExecutionSettings, session_id: str, owner: str | None = None
) -> Path | None:
    """A session's work dir if it exists and is a real directory (never created here)."""
    try:
        path = _session_path(settings, session_id, owner)
    except ValueError:
        return None
    if path.is_symlink() or path.parent.is_symlink() or not path.is_dir():
        return None
    return path


def resolve_session_file(
    settings: ExecutionSettings, session_id: str, rel_path: str, owner: str | None = None
) -> Path | None:
    """The real path of a regular file inside a session's work dir, or None.

    None when the path is absolute, contains '..', resolves (through any symlink)
    outside the work dir, is not a regular file, or does not exist.

    Code may still be running in the sandbox and could swap a directory for a
    symlink between this check and the caller's open(); callers that serve file
    contents should prefer :func:`open_session_file`, which has no such window.
    """
    base = existing_session_dir(settings, session_id, owner)
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


def open_session_file(
    settings: ExecutionSettings, session_id: str, rel_path: str, owner: str | None = None
) -> BinaryIO | None:
    """Open a regular file inside a session's work dir for reading, or return None.

    Walks the path one component at a time with O_NOFOLLOW relative to the previous
    directory's fd, so no symlink is ever followed, not even one created while the
    walk runs. Symlinks that :func:`resolve_session_file` would accept (pointing
    inside the work dir) are refused here; that is the price of having no race.
    """
    base = existing_session_dir(settings, session_id, owner)
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
