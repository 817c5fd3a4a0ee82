"""Server-side defaults for running LLM-written code, and the limits derived from them.

The lead loads :class:`ExecutionSettings` from the ``code_execution`` key of the web
config. Values are validated here, at load time, so a typo in the config fails the
server start instead of the first code block of some user.
"""

from __future__ import annotations

import re
from typing import Literal

import pydantic

from .request import check_image

# Container uid/gid for the Docker sandbox: the `sandbox` user of the image. Above the
# UID_MAX (60000) of Debian's login.defs, so it is never a person's uid on the host: a root
# server chowns work dirs to it, and a person who owned them could change what it serves.
DOCKER_SANDBOX_UID = 61000
DOCKER_SANDBOX_GID = 61000
# Host uid/gid the bubblewrap sandbox runs as when the server runs as root. Root must
# not be the sandbox's real uid: the kernel exempts root from RLIMIT_NPROC, so a
# fork bomb would only be stopped by the wall-clock timeout.
LOCAL_SANDBOX_UID = 65534
LOCAL_SANDBOX_GID = 65534


# Where the run's work dir appears inside every sandbox.
SANDBOX_WORKDIR = "/workspace"

# The whole environment sandboxed code gets. Nothing of the server's environment
# (API keys, database paths, DOCKER_HOST) is ever passed on.
SANDBOX_ENV: dict[str, str] = {
    "HOME": "/tmp",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Code files live in /tmp, so the script's own dir is not the work dir; this keeps
    # `import helper` working for a helper.py an earlier block wrote, as in AutoGen.
    "PYTHONPATH": SANDBOX_WORKDIR,
}

# Per-file size cap (RLIMIT_FSIZE). A runaway writer then fails with EFBIG instead of
# filling the host disk with one file.
FILE_SIZE_LIMIT_BYTES = 256 * 1024 * 1024
# Open files per process (RLIMIT_NOFILE).
OPEN_FILES_LIMIT = 256
# Size of the private /tmp of a sandbox (holds the code files of the blocks).
TMPFS_SIZE_BYTES = 64 * 1024 * 1024
# Extra seconds the host waits after the in-sandbox timeout before it kills the
# sandbox itself; covers a sandbox whose own `timeout` was killed or never started.
HOST_TIMEOUT_GRACE_S = 5.0

_MEMORY_RE = re.compile(r"^\s*(\d+)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_memory(value: str) -> int:
    """Bytes for a Docker-style memory size ("512m", "1g", "65536").

    Docker accepts the string as is; the local sandbox needs the number for
    RLIMIT_AS, and both must agree on what "m" means (MiB, as Docker reads it).
    """
    match = _MEMORY_RE.match(value)
    if not match:
        raise ValueError(f"invalid memory size {value!r}: use a number with an optional unit b, k, m or g")
    size = int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()]
    if size < 32 * 1024**2:
        raise ValueError(f"memory size {value!r} is below the 32m minimum a Python interpreter needs")
    return size


class ExecutionSettings(pydantic.BaseModel):
    """Server-wide code-execution defaults (config key ``code_execution``)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    executor: Literal["docker", "local", "unsafe-local"] = "docker"
    timeout_s: int = pydantic.Field(default=60, ge=1, le=3600)
    image: str = "autobots-sandbox:latest"
    work_root: str = "workdirs"
    memory: str = "512m"
    pids_limit: int = pydantic.Field(default=128, ge=8, le=65536)
    cpus: float = pydantic.Field(default=1.0, gt=0, le=256)
    output_limit_bytes: int = pydantic.Field(default=65536, ge=1024, le=64 * 1024 * 1024)
    # Where no Docker engine answers (or the default image is missing), run the code in the
    # local bubblewrap sandbox rather than fail the run: the shipped examples ask for Docker,
    # and a server without an engine should still run them. Only where bubblewrap works; the
    # answer's notes say so. An image a request names explicitly is never replaced.
    fallback_to_local: bool = True
    # Enables executor "unsafe-local": a plain subprocess with rlimits only. The code
    # then runs with the server's uid and sees the server's whole file system.
    allow_unsafe_local: bool = False
    docker_host: str | None = None
    # Images a request may name (besides ``image``, always allowed). A request cannot
    # run code in any other local image, such as the server's own with its secrets in
    # ENV. Unset: only ``image``.
    allowed_images: list[str] | None = None

    @pydantic.field_validator("image")
    @classmethod
    def _check_image(cls, value: str) -> str:
        return check_image(value)

    @pydantic.field_validator("allowed_images")
    @classmethod
    def _check_allowed_images(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_image(image) for image in value]

    @pydantic.model_validator(mode="after")
    def _default_allowed_images(self) -> ExecutionSettings:
        if self.allowed_images is None:
            self.allowed_images = [self.image]
        return self

    def image_allowed(self, image: str) -> bool:
        """Whether a run may use ``image``: the configured image or one of ``allowed_images``."""
        return image == self.image or image in (self.allowed_images or ())

    @pydantic.field_validator("memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        parse_memory(value)
        return value.strip()

    @property
    def memory_bytes(self) -> int:
        """Memory limit in bytes (RLIMIT_AS for the local sandbox, mem+swap for Docker)."""
        return parse_memory(self.memory)
