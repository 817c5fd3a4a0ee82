"""Running code blocks in a locked-down Docker container, one container per run.

The container is started lazily by the first block that must run and reused for
the run's later blocks through ``exec``: a container start costs ~0.5 s, an exec
~0.1 s. Its PID 1 is Docker's init running ``sleep infinity``, so it only exists to
host the execs and reaps whatever they leave behind.

Ownership of the bind-mounted work dir: when the server runs as root, the run's
work dir tree is chowned to the image's ``sandbox`` user (uid/gid 1000) and the
container runs as 1000:1000, so code can write its files and the server (root)
can still read them. When the server is not root it cannot chown; the container
then runs as the server's own uid/gid, which owns the dir already. Either way the
process in the container is not root and has no capabilities.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Ulimit

from .base import TIMEOUT_EXIT_CODE, Observer, RawRun, SandboxExecutor
from .docker_engine import LABEL_OWNER, LABEL_RUN, LABEL_SANDBOX, owner_label
from .errors import ExecutionUnavailable
from .output import OutputCollector
from .settings import (
    DOCKER_SANDBOX_GID,
    DOCKER_SANDBOX_UID,
    FILE_SIZE_LIMIT_BYTES,
    HOST_TIMEOUT_GRACE_S,
    OPEN_FILES_LIMIT,
    SANDBOX_ENV,
    SANDBOX_WORKDIR,
    TMPFS_SIZE_BYTES,
    ExecutionSettings,
)
from .workdir import chown_tree

log = logging.getLogger(__name__)

# `timeout -s KILL` ends with 137 (it is killed by its own signal to the group);
# plain `timeout` with 124.
_TIMEOUT_EXIT_CODES = (124, 137)
# How long to wait for the output stream to end once the container was killed.
_DRAIN_AFTER_KILL_S = 5.0


class DockerSandboxExecutor(SandboxExecutor):
    """Code runs in a container with no network, no capabilities, a read-only root
    file system, cgroup limits on memory/pids/CPU and the work dir as its only
    writable persistent storage."""

    kind = "docker"

    def __init__(
        self,
        *,
        client: docker.DockerClient,
        image: str,
        work_dir: Path,
        settings: ExecutionSettings,
        timeout_s: int,
        run_id: str,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(
            work_dir=work_dir,
            timeout_s=timeout_s,
            output_limit_bytes=settings.output_limit_bytes,
            memory_limit=settings.memory,
            run_id=run_id,
            observer=observer,
        )
        self._client = client
        self._image = image
        self._settings = settings
        self._container: Container | None = None
        self._lock = threading.Lock()  # guards _container (close() may come from any thread)
        if os.geteuid() == 0:
            chown_tree(work_dir, DOCKER_SANDBOX_UID, DOCKER_SANDBOX_GID)
            self._user = f"{DOCKER_SANDBOX_UID}:{DOCKER_SANDBOX_GID}"
        else:
            self._user = f"{os.getuid()}:{os.getgid()}"

    @property
    def image(self) -> str:
        """The image the run's container is created from."""
        return self._image

    @property
    def container_id(self) -> str | None:
        """The current container, if one is running (for tests and diagnostics)."""
        container = self._container
        return container.id if container is not None else None

    def restart(self) -> None:
        """Drop the container; the next block starts a fresh one (files in the work dir stay)."""
        with self._lock:
            container, self._container = self._container, None
        if container is not None:
            self._remove(container)

    # --- container lifecycle -----------------------------------------------------------

    def _create_kwargs(self) -> dict:
        safe_run = re.sub(r"[^A-Za-z0-9_.-]", "-", self._run_id)[:40] or "run"
        size_limit = FILE_SIZE_LIMIT_BYTES
        return {
            "image": self._image,
            "name": f"autobots-sandbox-{safe_run}-{uuid.uuid4().hex[:8]}",
            "entrypoint": ["sleep", "infinity"],
            "command": [],
            "detach": True,
            "init": True,
            "labels": {LABEL_SANDBOX: "1", LABEL_OWNER: owner_label(), LABEL_RUN: self._run_id[:200]},
            "user": self._user,
            "working_dir": SANDBOX_WORKDIR,
            "environment": dict(SANDBOX_ENV),
            "hostname": "sandbox",
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={TMPFS_SIZE_BYTES}"},
            "volumes": {str(self._work_dir): {"bind": SANDBOX_WORKDIR, "mode": "rw"}},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "ipc_mode": "private",
            "mem_limit": self._settings.memory,
            "memswap_limit": self._settings.memory,
            "pids_limit": self._settings.pids_limit,
            "nano_cpus": int(self._settings.cpus * 1_000_000_000),
            "ulimits": [
                Ulimit(name="nofile", soft=OPEN_FILES_LIMIT, hard=OPEN_FILES_LIMIT),
                Ulimit(name="fsize", soft=size_limit, hard=size_limit),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "auto_remove": False,
        }

    def _ensure_container(self) -> Container | None:
        """The run's container, started on first use; None once the executor is closed."""
        with self._lock:
            if self._closed.is_set():
                return None
            if self._container is None:
                started = time.monotonic()
                try:
                    self._container = self._client.containers.run(**self._create_kwargs())
                except docker.errors.ImageNotFound as exc:
                    raise ExecutionUnavailable(
                        f"sandbox image '{self._image}' disappeared from the Docker engine: "
                        "build it again with scripts/build-sandbox-image.sh"
                    ) from exc
                except docker.errors.DockerException as exc:
                    detail = getattr(exc, "explanation", None) or type(exc).__name__
                    raise ExecutionUnavailable(
                        f"the Docker engine could not start the sandbox container ({str(detail)[:300]}); "
                        "check the engine (scripts/start-dockerd.sh) or set code_execution.executor to 'local'"
                    ) from exc
                log.debug("sandbox container started in %.3f s", time.monotonic() - started)
            return self._container

    def _remove(self, container: Container) -> None:
        """Kill and remove a container; a container already gone is fine."""
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                log.warning("could not remove sandbox container %s: %s", container.short_id, exc)

    def _discard(self, container: Container) -> None:
        with self._lock:
            if self._container is container:
                self._container = None
        self._remove(container)

    def _close(self) -> None:
        with self._lock:
            container, self._container = self._container, None
        try:
            if container is not None:
                self._remove(container)
        finally:
            self._client.close()

    # --- one block ---------------------------------------------------------------------

    def _run(self, argv: list[str], timeout_s: int, stdin: bytes | None) -> RawRun:
        collector = OutputCollector(self._output_limit)
        container = self._ensure_container()
        if container is None:
            return RawRun(1, collector, cancelled=True)
        api = self._client.api
        command = ["timeout", "-s", "KILL", str(timeout_s), *argv]
        try:
            exec_id = api.exec_create(container.id, command, stdout=True, stderr=True)["Id"]
        except docker.errors.DockerException as exc:
            if self._closed.is_set():
                return RawRun(1, collector, cancelled=True)
            # The container died under us (OOM of PID 1, killed from outside): start over next time.
            self._discard(container)
            collector.feed(
                f"sandbox error: could not run the code in the container ({type(exc).__name__})\n".encode()
            )
            return RawRun(1, collector)

        done = threading.Event()

        def pump() -> None:
            try:
                for chunk in api.exec_start(exec_id, stream=True):
                    collector.feed(chunk)
            except Exception:
                # Stream cut because the container was killed (timeout, close()); the
                # exit status below tells what happened.
                pass
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=pump, name="sandbox-output", daemon=True).start()
        # The in-container `timeout` normally ends the block; the host-side wait is the
        # backstop for a sandbox that stopped responding, so a block never hangs the run.
        if not done.wait(timeout_s + HOST_TIMEOUT_GRACE_S):
            self._discard(container)
            done.wait(_DRAIN_AFTER_KILL_S)
            if self._closed.is_set():
                return RawRun(1, collector, cancelled=True)
            return RawRun(TIMEOUT_EXIT_CODE, collector, timed_out=True)
        elapsed = time.monotonic() - started

        if self._closed.is_set():
            return RawRun(1, collector, cancelled=True)
        try:
            exit_code = api.exec_inspect(exec_id).get("ExitCode")
        except docker.errors.DockerException:
            exit_code = None
        if exit_code is None:
            # No status: the container went away while the block ran (e.g. restart()).
            self._discard(container)
            collector.feed(b"\nsandbox error: the container stopped while the code ran\n")
            return RawRun(1, collector)
        timed_out = exit_code in _TIMEOUT_EXIT_CODES and elapsed >= timeout_s - 0.05
        if timed_out:
            # `timeout` only kills its own process group; anything the block moved out
            # of it (setsid, daemons) would live on. A fresh container guarantees none does.
            self._discard(container)
        return RawRun(int(exit_code), collector, timed_out=timed_out)
