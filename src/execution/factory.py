"""Choosing and opening the executor for a run, with a cheap preflight.

Everything that can make a run impossible is checked here, before the
conversation starts, so the user gets one clear ExecutionUnavailable instead of
a failure in the middle of a chat. Nothing slow happens here: no container is
started (that waits for the first code block) and no image is ever pulled.

Two people read that error: the person chatting, who can only pick another workflow or ask,
and the operator, who can fix the server. When no sandbox can run a workflow's code the
message speaks to both (`no_sandbox`). When Docker is asked for but has no engine here and the
local sandbox stands in (`fallback_to_local`), the executor carries a note saying so, which
the run's answer shows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

from .base import Observer, SandboxExecutor
from .docker_engine import PING_TIMEOUT_S, connect, require_image
from .docker_executor import DockerSandboxExecutor
from .errors import ExecutionUnavailable
from .local_executor import BwrapSandboxExecutor, UnsafeLocalExecutor
from .request import ExecutionRequest
from .settings import ExecutionSettings

log = logging.getLogger(__name__)


class _ExecutorArgs(TypedDict):
    """The keyword arguments every executor takes (Docker's adds its client and image)."""

    work_dir: Path
    sub_dir: str | None
    settings: ExecutionSettings
    timeout_s: int
    run_id: str
    observer: Observer | None


def docker_available(settings: ExecutionSettings) -> bool:
    """True if the configured Docker engine answers a ping (the image is not checked)."""
    try:
        client = connect(settings, timeout=PING_TIMEOUT_S)
    except ExecutionUnavailable:
        return False
    client.close()
    return True


def open_executor(
    request: ExecutionRequest,
    work_dir: Path,
    settings: ExecutionSettings,
    run_id: str,
    observer: Observer | None = None,
) -> SandboxExecutor:
    """The executor for one run, ready to hand to AutoGen.

    ``work_dir`` is the session's work dir (from session_workdir): the sandbox mounts
    it, and the request's sub dir is only where the code starts. With
    ``settings.fallback_to_local``, an unreachable engine or a missing default image
    gives the local sandbox instead; a missing image the user named explicitly is
    reported, not silently replaced. An image the server does not allow is refused
    before the engine is asked anything.
    """
    kind = request.executor or settings.executor
    timeout_s = request.timeout_s or settings.timeout_s
    image = request.image or settings.image
    if kind == "docker" and not settings.image_allowed(image):
        raise ExecutionUnavailable(
            f"sandbox image '{image}' is not allowed on this server: use the default image "
            f"'{settings.image}' or ask the operator to add it to code_execution.allowed_images"
        )
    common: _ExecutorArgs = {
        "work_dir": Path(work_dir),
        "sub_dir": request.work_dir,
        "settings": settings,
        "timeout_s": timeout_s,
        "run_id": run_id,
        "observer": observer,
    }

    if kind == "unsafe-local":
        return UnsafeLocalExecutor(**common)
    if kind == "local":
        try:
            return BwrapSandboxExecutor(**common)
        except ExecutionUnavailable as local_problem:
            raise no_sandbox(str(local_problem)) from None

    try:
        client = connect(settings)
        try:
            require_image(client, image, settings)
        except ExecutionUnavailable:
            client.close()
            raise
    except ExecutionUnavailable as docker_problem:
        if request.image not in (None, settings.image):
            raise  # an image the user named: theirs to change, never silently replaced
        if not settings.fallback_to_local:
            raise no_sandbox(
                f"{docker_problem}; or set code_execution.fallback_to_local to true "
                f"({FALLBACK_ENV}=true) to run such code in the local bubblewrap sandbox"
            ) from None
        try:
            executor = BwrapSandboxExecutor(**common)
        except ExecutionUnavailable as local_problem:
            raise no_sandbox(f"{docker_problem}; the local fallback failed too: {local_problem}") from None
        log.warning("Docker sandbox unavailable, using the local sandbox: %s", docker_problem)
        executor.note = FALLBACK_NOTE
        return executor
    return DockerSandboxExecutor(client=client, image=image, **common)


FALLBACK_ENV = "AUTOBOTS_CODE_EXECUTION__FALLBACK_TO_LOCAL"
FALLBACK_NOTE = (
    "the workflow asked for the Docker sandbox, which this server does not have: its code ran in "
    "the local (bubblewrap) sandbox instead"
)


def no_sandbox(operator_hint: str) -> ExecutionUnavailable:
    """The error for a workflow whose code no sandbox here can run: what the person chatting can
    do, then what the operator must set."""
    return ExecutionUnavailable(
        "This workflow runs code, and this server has no sandbox to run it in. You can pick a "
        "workflow that runs no code (or set the agent's code_execution_config to false), or ask "
        f"the server's operator to set up a sandbox. For the operator: {operator_hint}."
    )
