"""Removing sandbox containers that a previous server process left behind.

A server killed with SIGKILL (or a crashed host) never runs close() or its atexit
hook, so its containers keep their memory and pids reservations. Every container
we create carries the label ``autobots.sandbox=1`` and the identity of the server
process that made it; at start-up the server removes those whose process is gone.
Containers of live server processes (another instance on this host, or this one)
are left alone.
"""

from __future__ import annotations

import logging

import docker.errors

from .docker_engine import (
    ENGINE_ERRORS,
    LABEL_OWNER,
    LABEL_SANDBOX,
    PING_TIMEOUT_S,
    connect,
    owner_is_gone,
)
from .errors import ExecutionUnavailable
from .settings import ExecutionSettings

log = logging.getLogger(__name__)


def sweep_orphans(settings: ExecutionSettings) -> int:
    """Remove our leftover containers; returns how many. A no-op (0) without an engine."""
    try:
        client = connect(settings, timeout=PING_TIMEOUT_S * 6)
    except ExecutionUnavailable:
        return 0
    removed = 0
    try:
        containers = client.containers.list(all=True, filters={"label": f"{LABEL_SANDBOX}=1"})
        for container in containers:
            if not owner_is_gone(container.labels.get(LABEL_OWNER)):
                continue
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                continue
            except ENGINE_ERRORS as exc:
                log.warning("could not remove orphaned sandbox container %s: %s", container.short_id, exc)
    except ENGINE_ERRORS as exc:
        log.warning("sweeping orphaned sandbox containers failed: %s", exc)
    finally:
        client.close()
    if removed:
        log.info("removed %d orphaned sandbox container(s)", removed)
    return removed
