"""Sandboxed execution of LLM-written code (Docker containers or bubblewrap).

The lead's entry points: open_executor() for a run, session_workdir() and
resolve_session_file()/open_session_file() for files, sweep_orphans() at server
start, docker_available() for status pages.
"""

from .base import SandboxExecutor
from .docker_executor import DockerSandboxExecutor
from .errors import ExecutionUnavailable
from .factory import docker_available, open_executor
from .local_executor import BwrapSandboxExecutor, UnsafeLocalExecutor
from .orphans import sweep_orphans
from .request import ExecutionRequest
from .settings import ExecutionSettings
from .workdir import (
    FileInfo,
    existing_session_dir,
    is_owner_dir_name,
    open_session_file,
    owner_dir_name,
    remove_session_workdir,
    resolve_session_file,
    session_dir_name,
    session_workdir,
    work_root,
)

__all__ = [
    "BwrapSandboxExecutor",
    "DockerSandboxExecutor",
    "ExecutionRequest",
    "ExecutionSettings",
    "ExecutionUnavailable",
    "FileInfo",
    "SandboxExecutor",
    "UnsafeLocalExecutor",
    "docker_available",
    "existing_session_dir",
    "is_owner_dir_name",
    "open_executor",
    "open_session_file",
    "owner_dir_name",
    "remove_session_workdir",
    "resolve_session_file",
    "session_dir_name",
    "session_workdir",
    "sweep_orphans",
    "work_root",
]
