"""The sandboxes of one run: opened when an agent that runs code is built, closed with the run.

A run opens one executor (for Docker: one container) per distinct sandbox config (executor kind,
image, work dir, timeout), shared by every agent that asks for that config: the copies of the
sender that autonomous mode makes for parallel receivers, or several user proxies of a group
chat. All of them work in the session's work dir, so files a block writes are there for the
run's later blocks and for download afterwards. The tools (skills) an agent executes run in
that agent's sandbox, or in the server's default one for an agent that runs no code (`for_tools`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..execution import (
    ExecutionRequest,
    ExecutionSettings,
    SandboxExecutor,
    open_executor,
    session_workdir,
)
from ..schemas.workflow import AgentConfig, CodeExecutionObject

# (executor kind, image or None, sub dir or None, timeout in seconds)
SandboxKey = tuple[str, str | None, str | None, int]


class _Slot:
    """One sandbox config's executor, opened once by whichever agent asks first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: SandboxExecutor | None = None


class RunExecutors:
    """Opens, shares and closes the executors of one run; safe to use from several threads."""

    def __init__(
        self,
        settings: ExecutionSettings,
        run_id: str,
        session_id: str,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        owner: str | None = None,
    ) -> None:
        self._settings = settings
        self._run_id = run_id
        self._session_id = session_id
        self._owner = owner
        self._on_event = on_event
        self._lock = threading.Lock()  # guards _slots and _closed; never held while opening
        self._slots: dict[SandboxKey, _Slot] = {}
        self._closed = False

    def _request(self, cfg: AgentConfig) -> ExecutionRequest | None:
        spec = cfg.code_execution_config
        if spec is False:
            return None
        if isinstance(spec, CodeExecutionObject):
            return ExecutionRequest.model_validate(spec.model_dump(exclude_none=True))
        return ExecutionRequest(executor=spec)

    def _key(self, request: ExecutionRequest) -> SandboxKey:
        """The config as it will run, server defaults filled in: equal keys share a sandbox."""
        kind = request.executor or self._settings.executor
        image = (request.image or self._settings.image) if kind == "docker" else None
        return kind, image, request.work_dir, request.timeout_s or self._settings.timeout_s

    def __call__(self, cfg: AgentConfig) -> SandboxExecutor | None:
        """The executor for an agent: the run's one for this config, opened on first use.

        Opening (engine preflight) happens under the config's own lock only, so agents
        with other configs and a concurrent close() never wait for it.
        """
        request = self._request(cfg)
        if request is None:
            return None
        return self._open(request)

    def for_tools(self, cfg: AgentConfig | None) -> SandboxExecutor:
        """The sandbox the tools an agent executes run in: its own code-execution sandbox, or
        the server's default one when it runs no code (`cfg` None: the default user proxy)."""
        request = self._request(cfg) if cfg is not None else None
        return self._open(request or ExecutionRequest())

    def _open(self, request: ExecutionRequest) -> SandboxExecutor:
        with self._lock:
            slot = self._slots.setdefault(self._key(request), _Slot())
        with slot.lock:
            if slot.executor is None:
                slot.executor = open_executor(
                    request,
                    session_workdir(self._settings, self._session_id, self._owner),
                    self._settings,
                    self._run_id,
                    observer=self._tagged(slot),
                )
            executor = slot.executor
        with self._lock:
            closed = self._closed
        if closed:  # the run was cancelled while this agent was being built
            executor.close()
        return executor

    def _tagged(self, slot: _Slot) -> Callable[[str, dict[str, Any]], None] | None:
        """The run's observer, told which executor ran the code (`executor`: what really ran,
        the local sandbox where Docker fell back to it), for the event and the metrics."""
        on_event = self._on_event
        if on_event is None:
            return None

        def observe(kind: str, data: dict[str, Any]) -> None:
            executor = slot.executor
            on_event(kind, {**data, "executor": executor.kind} if executor is not None else data)

        return observe

    def _executors(self) -> list[SandboxExecutor]:
        with self._lock:
            slots = list(self._slots.values())
        return [slot.executor for slot in slots if slot.executor is not None]

    def close(self) -> None:
        """Idempotent, from any thread: kills running blocks and removes containers."""
        with self._lock:
            self._closed = True
        for executor in self._executors():
            executor.close()

    def files(self) -> list[dict[str, Any]]:
        """What the run's code left in its work dirs (name relative to the session dir, size)."""
        seen: dict[str, int] = {}
        for executor in self._executors():
            prefix = executor.sub_dir
            for info in executor.list_files():
                seen[f"{prefix}/{info.name}" if prefix else info.name] = info.size
        return [{"name": name, "size": size} for name, size in sorted(seen.items())]
