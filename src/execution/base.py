"""What every sandbox executor shares: AutoGen's CodeExecutor protocol, result
formatting, output capping, observer events and close-from-any-thread semantics.

Subclasses only say how one prepared command runs inside their kind of sandbox
(:meth:`SandboxExecutor._run`) and how to tear the sandbox down.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from autogen.coding.base import CodeBlock, CommandLineCodeResult
from autogen.coding.markdown_code_extractor import MarkdownCodeExtractor

from .codeprep import prepare_block
from .output import OutputCollector, cap_text
from .settings import SANDBOX_ENV
from .workdir import FileInfo, list_workdir_files, run_subdir, sandbox_cwd

# What an executor tells its observer, by these names (the app's event kinds use them as they are).
EVENT_START = "code_execution_start"
EVENT_RESULT = "code_execution_result"

log = logging.getLogger(__name__)

Observer = Callable[[str, dict], None]

# Exit code reported for a block stopped by the timeout, as AutoGen's own executors do.
TIMEOUT_EXIT_CODE = 124
CANCELLED_MESSAGE = "Execution cancelled: the sandbox was closed."
# The output of blocks that succeeded and printed nothing: said, so that the model writing the
# code does not read an empty output as an answer to guess around (an expression whose value
# was never printed).
NO_OUTPUT_NOTE = "(the code printed nothing: print() the result to see it)"
KILLED_EXIT_CODE = 137


def _note(text: str, note: str) -> str:
    """``note`` on a line of its own after ``text``."""
    return ("\n" if text and not text.endswith("\n") else "") + note


_live: weakref.WeakSet[SandboxExecutor] = weakref.WeakSet()


@atexit.register
def _close_live_executors() -> None:
    """Remove sandboxes of a server that exits without closing them (no orphans left)."""
    for executor in list(_live):
        try:
            executor.close()
        except Exception:
            log.exception("closing a %s sandbox at exit failed", executor.kind)


@dataclass
class RawRun:
    """How one command ended inside a sandbox."""

    exit_code: int
    output: OutputCollector
    timed_out: bool = False
    cancelled: bool = False


class SandboxExecutor(ABC):
    """Base of all executors handed to AutoGen as ``code_execution_config={"executor": ...}``."""

    kind: str = ""
    # (uid, gid) the sandbox's code runs as on the host, for dirs the server creates
    # for it; None: the server's own (nothing to hand over).
    _owner: tuple[int, int] | None = None
    # Whether _run() can feed the code to the bootstrap's stdin (see codeprep).
    _code_via_stdin: bool = False
    # A note for the run's answer about where the code runs (the local sandbox standing in
    # for Docker); None: it runs where the workflow asked.
    note: str | None = None

    def __init__(
        self,
        *,
        work_dir: Path,
        timeout_s: int,
        output_limit_bytes: int,
        run_id: str,
        observer: Observer | None = None,
        memory_limit: str = "",
        sub_dir: str | None = None,
    ) -> None:
        # The session dir is what sandboxes mount; the sub dir is only where the code
        # starts (see workdir.run_subdir for why no sub dir is ever mounted).
        self._session_dir = work_dir
        self._sub_dir = run_subdir(work_dir, sub_dir)
        self._cwd = sandbox_cwd(self._sub_dir)
        self._env = {**SANDBOX_ENV, "PYTHONPATH": self._cwd}
        self._memory_limit = memory_limit or "see the server settings"
        self._timeout_s = timeout_s
        self._output_limit = output_limit_bytes
        self._run_id = run_id
        self._observer = observer
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._extractor = MarkdownCodeExtractor()
        _live.add(self)

    # --- AutoGen CodeExecutor protocol -------------------------------------------------

    @property
    def code_extractor(self) -> MarkdownCodeExtractor:
        """Markdown fences, as in AutoGen's own command-line executors."""
        return self._extractor

    def execute_code_blocks(self, code_blocks: list[CodeBlock]) -> CommandLineCodeResult:
        """Run the blocks in order and stop at the first that fails, as AutoGen does.

        Faults of the code (errors, timeouts, kills) come back as a result. Only an
        infrastructure failure mid-run (the Docker engine cannot start the container)
        raises ExecutionUnavailable, which then propagates out of AutoGen's reply.
        """
        if not code_blocks:
            raise ValueError("No code blocks to execute.")
        outputs: list[str] = []
        exit_code = 0
        first_file: str | None = None
        for block in code_blocks:
            if self._closed.is_set():
                outputs.append(CANCELLED_MESSAGE)
                exit_code = 1
                break
            exit_code, text, code_path = self._execute_one(block)
            outputs.append(text)
            if first_file is None:
                first_file = code_path
            if exit_code != 0:
                break
        output, _ = cap_text("".join(outputs), self._output_limit)
        if exit_code == 0 and not output.strip():
            output = NO_OUTPUT_NOTE + "\n"
        return CommandLineCodeResult(exit_code=exit_code, output=output, code_file=first_file)

    def execute_quietly(self, block: CodeBlock) -> CommandLineCodeResult:
        """One block, contained exactly as `execute_code_blocks` contains it (timeout, output
        cap, cancel), without telling the observer: for a caller that reports the run itself
        (an agent's tool call, whose events name the tool rather than the program)."""
        if self._closed.is_set():
            return CommandLineCodeResult(exit_code=1, output=CANCELLED_MESSAGE)
        exit_code, text, code_path = self._execute_one(block, notify=False)
        output, _ = cap_text(text, self._output_limit)
        return CommandLineCodeResult(exit_code=exit_code, output=output, code_file=code_path)

    @abstractmethod
    def restart(self) -> None:
        """AutoGen calls this on agent reset; executors with state drop it here."""

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Tear the sandbox down; idempotent and safe from any thread.

        Called from another thread while a block runs, it kills that block: the
        block's result then says the execution was cancelled.
        """
        with self._close_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        try:
            self._close()
        finally:
            _live.discard(self)

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed.is_set()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- files ----------------------------------------------------------------------------

    @property
    def work_dir(self) -> Path:
        """Host path of the dir the code starts in (for display and tests: never mounted)."""
        return self._session_dir / self._sub_dir if self._sub_dir else self._session_dir

    @property
    def session_dir(self) -> Path:
        """Host dir the code sees as /workspace: the session's work dir."""
        return self._session_dir

    @property
    def sub_dir(self) -> str | None:
        """The sub dir of the session dir the code starts in (None: the session dir)."""
        return self._sub_dir

    @property
    def timeout_s(self) -> int:
        """Wall-clock limit per code block."""
        return self._timeout_s

    def list_files(self) -> list[FileInfo]:
        """Regular files the code left in its work dir (code files live in the sandbox's /tmp),
        named relative to the dir the code starts in."""
        return list_workdir_files(self._session_dir, self._sub_dir)

    # --- internals ------------------------------------------------------------------------

    def _notify(self, event: str, payload: dict) -> None:
        if self._observer is None:
            return
        try:
            self._observer(event, payload)
        except Exception:
            # A broken observer (UI, storage) must not change what the code run returns.
            log.exception("code execution observer failed on %s", event)

    def _execute_one(self, block: CodeBlock, notify: bool = True) -> tuple[int, str, str | None]:
        if notify:
            self._notify(EVENT_START, {"language": block.language, "code": block.code})
        started = time.monotonic()
        prepared = prepare_block(
            block.language, block.code, *self._code_dirs(), via_stdin=self._code_via_stdin
        )
        truncated = False
        if prepared.argv is not None and self._sub_dir is not None:
            # Earlier code may have removed the dir it starts in; a few syscalls bring it back.
            with contextlib.suppress(OSError):
                run_subdir(self._session_dir, self._sub_dir, self._owner)
        if prepared.argv is None:
            exit_code, text = 1, prepared.error or "The code block cannot be run.\n"
        else:
            raw = self._run(prepared.argv, self._timeout_s, prepared.stdin)
            text = raw.output.text()
            truncated = raw.output.truncated
            exit_code = raw.exit_code
            if raw.cancelled or (self._closed.is_set() and exit_code != 0):
                exit_code = exit_code or 1
                text += _note(text, CANCELLED_MESSAGE)
            elif raw.timed_out:
                exit_code = TIMEOUT_EXIT_CODE
                text += _note(
                    text, f"Timeout: the code block ran longer than {self._timeout_s} s and was stopped."
                )
            elif exit_code == KILLED_EXIT_CODE:
                # Usually the kernel's OOM killer; without a word the LLM only sees empty output.
                text += _note(
                    text,
                    "Killed (exit code 137): the code was stopped by SIGKILL, most likely for exceeding "
                    f"the sandbox's memory limit ({self._memory_limit}).",
                )
        duration = time.monotonic() - started
        if not notify:
            return exit_code, text, prepared.code_path
        self._notify(
            EVENT_RESULT,
            {
                "exit_code": exit_code,
                "output": text,
                "truncated": truncated,
                "duration_s": round(duration, 3),
            },
        )
        return exit_code, text, prepared.code_path

    def _code_dirs(self) -> tuple[str, str]:
        """(work dir, temp dir) as seen by the code; sandboxes mount them at fixed places."""
        return self._cwd, "/tmp"

    @abstractmethod
    def _run(self, argv: list[str], timeout_s: int, stdin: bytes | None) -> RawRun:
        """Run ``argv`` (an in-sandbox command), with ``stdin`` as its input, under the
        wall-clock limit; never raises for faults of the code."""

    @abstractmethod
    def _close(self) -> None:
        """Release the sandbox; called once."""
