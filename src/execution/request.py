"""The per-conversation code-execution options a user may set.

These arrive from untrusted API input (the object form of ``code_execution_config``),
so everything is validated here before it can influence paths or images.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal

import pydantic

# Docker reference: [registry[:port]/]name[/name...][:tag][@digest]; no spaces or shell.
_IMAGE_RE = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


# The longest file or directory name Linux file systems take (a longer one is ENAMETOOLONG).
NAME_MAX = 255


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
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts):
        raise ValueError(
            f"path {value!r} has a name longer than {NAME_MAX} bytes, which no file system takes"
        )
    return "/".join(parts)


def check_image(value: str) -> str:
    """Return ``value`` if it is a plain Docker image reference, else raise ValueError.

    Shared by the API schema (so a bad image is a 400 before anything is stored) and
    the execution request (so nothing reaches the engine unchecked).
    """
    if not isinstance(value, str) or len(value) > 255 or not _IMAGE_RE.match(value):
        raise ValueError(f"invalid image reference {value!r}")
    return value


def check_work_dir(value: str) -> str:
    """Return the normalised sub dir of the session's work dir a run's code starts in.

    Only a plain relative path can name it; see :func:`check_relative_subpath`.
    """
    try:
        return check_relative_subpath(value)
    except ValueError as exc:
        raise ValueError(f"invalid work_dir: {exc}") from None


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
        return None if value is None else check_image(value)

    @pydantic.field_validator("work_dir")
    @classmethod
    def _check_work_dir(cls, value: str | None) -> str | None:
        return None if value is None else check_work_dir(value)


def resolve_legacy_use_docker(data: dict[str, Any]) -> dict[str, Any]:
    """Fold AutoGen's ``use_docker`` key into our ``executor``/``image`` options.

    Older clients send AutoGen's own ``code_execution_config`` (``use_docker`` false,
    true or an image name). Dropping the key would run their code somewhere they did
    not ask for, so it is read the way AutoGen reads it: false runs outside Docker
    (here: the local sandbox, never the bare host), true in the default image, a name
    in that image. A ``use_docker`` that contradicts ``executor`` or ``image`` is an
    error rather than a guess. Returns a copy without ``use_docker``.
    """
    if "use_docker" not in data:
        return data
    data = dict(data)
    legacy = data.pop("use_docker")
    if legacy is None:
        return data
    if isinstance(legacy, list) and len(legacy) == 1:
        legacy = legacy[0]
    executor = data.get("executor")
    if legacy is False:
        if executor not in (None, "local"):
            raise ValueError(f"use_docker: false contradicts executor {executor!r}; send only 'executor'")
        if data.get("image") is not None:
            raise ValueError("use_docker: false contradicts 'image'; send only 'executor' and 'image'")
        data["executor"] = "local"
        return data
    if legacy is True or isinstance(legacy, str):
        if executor not in (None, "docker"):
            raise ValueError(
                f"use_docker: {legacy!r} contradicts executor {executor!r}; send only 'executor'"
            )
        data["executor"] = "docker"
        if isinstance(legacy, str):
            image = data.get("image")
            if image is not None and image != legacy:
                raise ValueError(f"use_docker: {legacy!r} contradicts image {image!r}; send only 'image'")
            data["image"] = legacy
        return data
    raise ValueError("use_docker must be true, false or an image name; prefer 'executor' and 'image'")
