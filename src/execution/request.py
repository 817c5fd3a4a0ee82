"""The per-conversation code-execution options a user may set.

These arrive from untrusted API input (the object form of ``code_execution_config``),
so everything is validated here before it can influence paths or images.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Literal

import pydantic

# Docker reference: [registry[:port]/]name[/name...][:tag][@digest]; no spaces or shell.
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


def check_relative_subpath(value: str) -> str:
    """Return ``value`` normalised if it is a plain relative path, else raise ValueError.

    Used for anything a user or an LLM names inside a work dir: rejecting absolute
    paths and ``..`` up front means later joins can never leave the work dir by
    construction (symlinks are handled where files are opened).
    """
    if not value or "\x00" in value or "\\" in value:
        raise ValueError("path must be a non-empty relative path without NUL or backslash")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"path {value!r} must be relative")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise ValueError(f"path {value!r} names no sub directory")
    if any(p == ".." for p in parts):
        raise ValueError(f"path {value!r} must not contain '..'")
    return "/".join(parts)


class ExecutionRequest(pydantic.BaseModel):
    """What a user may choose for a conversation; ``None`` means the server default.

    Unknown keys are rejected rather than ignored so that, say, AutoGen's
    ``use_docker: false`` does not silently do something other than the user meant.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    executor: Literal["docker", "local", "unsafe-local"] | None = None
    timeout_s: int | None = pydantic.Field(default=None, ge=1, le=3600)
    image: str | None = None
    work_dir: str | None = None

    @pydantic.field_validator("image")
    @classmethod
    def _check_image(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > 255 or not _IMAGE_RE.match(value):
            raise ValueError(f"invalid image reference {value!r}")
        return value

    @pydantic.field_validator("work_dir")
    @classmethod
    def _check_work_dir(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_relative_subpath(value)
