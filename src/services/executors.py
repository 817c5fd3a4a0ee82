"""The sandboxes of one run: opened when an agent that runs code is built, closed with the run.

Each agent with `code_execution_config` gets its own executor in the session's work dir, so files
a block writes are there for the run's later blocks and for download afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from autobots.execution import (
    ExecutionRequest,
    ExecutionSettings,
    SandboxExecutor,
    open_executor,
    session_workdir,
)
from autobots.schemas.workflow import AgentConfig, CodeExecutionObject


class RunExecutors:
    def __init__(
        self,
        settings: ExecutionSettings,
        run_id: str,
        session_id: str,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._run_id = run_id
        self._session_id = session_id
        self._on_event = on_event
        self._lock = threading.Lock()
        self._open: list[SandboxExecutor] = []
        self._closed = False

    def __call__(self, cfg: AgentConfig) -> SandboxExecutor | None:
        spec = cfg.code_execution_config
        if spec is False:
            return None
        if isinstance(spec, CodeExecutionObject):
            request = ExecutionRequest.model_validate(spec.model_dump(exclude_none=True))
        else:
            request = ExecutionRequest(executor=spec)
        executor = open_executor(
            request,
            session_workdir(self._settings, self._session_id),
            self._settings,
            self._run_id,
            observer=self._on_event,
        )
        with self._lock:
            closed = self._closed
            if not closed:
                self._open.append(executor)
        if closed:  # the run was cancelled while this agent was being built
            executor.close()
        return executor

    def close(self) -> None:
        """Idempotent, from any thread: kills running blocks and removes containers."""
        with self._lock:
            self._closed = True
            executors = list(self._open)
        for executor in executors:
            executor.close()

    def files(self) -> list[dict[str, Any]]:
        """What the run's code left in its work dirs (name relative to the session dir, size)."""
        seen: dict[str, int] = {}
        root = session_workdir(self._settings, self._session_id) if self._open else None
        for executor in self._open:
            prefix = executor.work_dir.relative_to(root).as_posix() if root else "."
            for info in executor.list_files():
                name = info.name if prefix in ("", ".") else f"{prefix}/{info.name}"
                seen[name] = info.size
        return [{"name": name, "size": size} for name, size in sorted(seen.items())]
