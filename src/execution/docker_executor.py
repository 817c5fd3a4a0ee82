"""Running code blocks in a locked-down Docker container, one container per run.

The container is started lazily by the first block that must run and reused for
the run's later blocks through ``exec``: a container start costs ~0.5 s, an exec
~0.1 s. Its PID 1 is Docker's init running ``sleep infinity``, so it only exists to
host the execs and reaps whatever they leave behind.

Ownership of the bind-mounted work dir: when the server runs as root, the run's
work dir tree is chowned to the image's ``sandbox`` user (uid/gid 61000) and the
container runs as 61000:61000, so code can write its files and the server (root)
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
from .docker_engine import ENGINE_ERRORS, LABEL_OWNER, LABEL_RUN, LABEL_SANDBOX, owner_label
from .errors import ExecutionUnavailable
from .output import OutputCollector
from .settings import (
    DOCKER_SANDBOX_GID,
    DOCKER_SANDBOX_UID,
    FILE_SIZE_LIMIT_BYTES,
    HOST_TIMEOUT_GRACE_S,
    OPEN_FILES_LIMIT,
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
        sub_dir: str | None = None,
    ) -> None:
        super().__init__(
            work_dir=work_dir,
            sub_dir=sub_dir,
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
        # One block at a time: agents of a run share this executor (parallel receivers
        # among them), and a timed-out block replaces the container, which would kill
        # a block of another agent running next to it.
        self._block_lock = threading.Lock()
        # Names of containers whose creation failed half way (engine timeout): the
        # engine may still have made them, so close() tries once more to remove them.
        self._maybe_created: list[str] = []
        if os.geteuid() == 0:
            self._owner = (DOCKER_SANDBOX_UID, DOCKER_SANDBOX_GID)
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
            "environment": dict(self._env),
            "hostname": "sandbox",
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={TMPFS_SIZE_BYTES}"},
            # Always the session dir, which no sandbox can replace (its parent is never
            # mounted); a sub dir is only the exec's working dir, resolved in the container.
            "volumes": {str(self._session_dir): {"bind": SANDBOX_WORKDIR, "mode": "rw"}},
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
        }

    def _ensure_container(self) -> Container | None:
        """The run's container, started on first use; None once the executor is closed."""
        with self._lock:
            if self._closed.is_set():
                return None
            if self._container is None:
                started = time.monotonic()
                self._container = self._start_container()
                log.debug("sandbox container started in %.3f s", time.monotonic() - started)
            return self._container

    def _start_container(self) -> Container:
        """Create and start the run's container; never pulls, never leaves one behind.

        ``containers.run`` would pull a missing image (the SDK does so on ImageNotFound),
        so the container is created and started in two calls; if the start fails, the
        created container is removed. Any engine failure becomes ExecutionUnavailable.
        """
        kwargs = self._create_kwargs()
        name = kwargs["name"]
        try:
            container = self._client.containers.create(**kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ExecutionUnavailable(
                f"sandbox image '{self._image}' not found in the Docker engine (it disappeared after the "
                "run started; images are never pulled): build it again with scripts/build-sandbox-image.sh"
            ) from exc
        except ENGINE_ERRORS as exc:
            # A timed-out create may still complete inside the engine: remove it now if
            # it exists, else close() looks for it again.
            self._maybe_created.append(name)
            self._remove_maybe_created(wait_s=0)
            raise self._unavailable("create", exc) from exc
        try:
            container.start()
        except ENGINE_ERRORS as exc:
            self._remove(container)
            raise self._unavailable("start", exc) from exc
        return container

    @staticmethod
    def _unavailable(step: str, exc: BaseException) -> ExecutionUnavailable:
        detail = getattr(exc, "explanation", None) or f"{type(exc).__name__}: {exc}"
        return ExecutionUnavailable(
            f"the Docker engine could not {step} the sandbox container ({str(detail)[:300]}); "
            "check the engine (scripts/start-dockerd.sh) or set code_execution.executor to 'local'"
        )

    def _remove_maybe_created(self, wait_s: float) -> None:
        """Remove containers whose create timed out, known only by name; best effort.

        One that is not there (yet) is looked for again until ``wait_s`` has passed:
        the engine may still be creating it. What is left after that is the orphan
        sweep's (next server start).
        """
        deadline = time.monotonic() + wait_s
        for name in list(self._maybe_created):
            while True:
                try:
                    self._client.containers.get(name).remove(force=True)
                except docker.errors.NotFound:
                    if time.monotonic() < deadline:
                        time.sleep(0.25)
                        continue
                    if wait_s > 0:
                        self._maybe_created.remove(name)
                except ENGINE_ERRORS as exc:
                    log.warning("could not remove sandbox container %s: %s", name, exc)
                else:
                    self._maybe_created.remove(name)
                break

    def _remove(self, container: Container) -> None:
        """Kill and remove a container; a container already gone is fine."""
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                log.warning("could not remove sandbox container %s: %s", container.short_id, exc)
        except ENGINE_ERRORS as exc:
            # The orphan sweep of the next server start removes what is left.
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
            self._remove_maybe_created(wait_s=2.0)
        finally:
            self._client.close()

    # --- one block ---------------------------------------------------------------------

    def _run(self, argv: list[str], timeout_s: int, stdin: bytes | None) -> RawRun:
        with self._block_lock:
            return self._run_one(argv, timeout_s)

    def _run_one(self, argv: list[str], timeout_s: int) -> RawRun:
        collector = OutputCollector(self._output_limit)
        container = self._ensure_container()
        if container is None:
            return RawRun(1, collector, cancelled=True)
        api = self._client.api
        command = ["timeout", "-s", "KILL", str(timeout_s), *argv]
        try:
            exec_id = api.exec_create(container.id, command, stdout=True, stderr=True, workdir=self._cwd)[
                "Id"
            ]
        except ENGINE_ERRORS as exc:
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
        except ENGINE_ERRORS:
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
