"""Reaching the Docker engine, cheap preflight checks, and how our containers are labelled.

Preflight answers the two questions that make a run impossible (engine reachable?
image present?) before a conversation starts, with a message a user can act on.
Images are never pulled: the sandbox image is built locally on purpose, and a pull
of an arbitrary user-named image would be a download the operator did not approve.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

import docker
import docker.errors
import requests.exceptions

from .errors import ExecutionUnavailable
from .settings import ExecutionSettings

LABEL_SANDBOX = "autobots.sandbox"
LABEL_OWNER = "autobots.owner"
LABEL_RUN = "autobots.run_id"

# What an engine call can raise: the SDK's own errors, and the transport's (a read
# timeout of a loaded engine, a connection reset when dockerd dies) that it does not wrap.
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)

# API calls other than the streamed output of a block; generous because a loaded
# engine can take seconds to create a container.
API_TIMEOUT_S = 60
PING_TIMEOUT_S = 5


def engine_address(settings: ExecutionSettings) -> str:
    """Where we look for the engine, for messages (settings, else DOCKER_HOST, else the default socket)."""
    return settings.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(settings: ExecutionSettings, timeout: int = API_TIMEOUT_S) -> docker.DockerClient:
    """A client for the configured engine, or ExecutionUnavailable saying it is unreachable.

    Creating the client already talks to the engine (API version negotiation), so
    this doubles as the ping.
    """
    address = engine_address(settings)
    try:
        if settings.docker_host:
            client = docker.DockerClient(base_url=settings.docker_host, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        client.ping()
    except ENGINE_ERRORS as exc:
        raise ExecutionUnavailable(
            f"Docker engine not reachable at {address}: start dockerd (scripts/start-dockerd.sh prints "
            "the DOCKER_HOST to use) or set code_execution.executor to 'local'"
        ) from exc
    return client


def require_image(client: docker.DockerClient, image: str, settings: ExecutionSettings) -> None:
    """Raise ExecutionUnavailable unless ``image`` is already in the engine (never pulls)."""
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        if image == settings.image:
            hint = (
                "build it with scripts/build-sandbox-image.sh (or `docker build -t {0} .` from the repo root)"
            )
        else:
            hint = (
                "images are never pulled automatically; use the default image or ask the operator to load {0}"
            )
        raise ExecutionUnavailable(
            f"sandbox image '{image}' not found in the Docker engine at {engine_address(settings)}: "
            + hint.format(image)
        ) from exc
    except ENGINE_ERRORS as exc:
        raise ExecutionUnavailable(
            f"Docker engine at {engine_address(settings)} failed while looking up image '{image}'; "
            "check the engine's log, or set code_execution.executor to 'local'"
        ) from exc


def _process_start_ticks(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot), to tell a live pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


@lru_cache(maxsize=1)
def _owner_for(pid: int) -> str:
    return f"{socket.gethostname()}/{pid}/{_process_start_ticks(pid) or '0'}"


def owner_label() -> str:
    """Identifies this server process on this host; cached per pid (fork-safe)."""
    return _owner_for(os.getpid())


def owner_is_gone(owner: str | None) -> bool:
    """True if the process that labelled a container no longer runs on this host.

    Containers of other hosts sharing the engine are never judged gone: we cannot
    see their processes.
    """
    if not owner:
        return True
    parts = owner.split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    host, pid, ticks = parts
    if host != socket.gethostname():
        return False
    return _process_start_ticks(int(pid)) != ticks
