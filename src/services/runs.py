"""Live runs as requests see them: queued, watched, cancelled, answered, found when their
process died; every call takes the acting user.

Every run, blocking (`POST /api/messages`) or not (`POST /api/runs`), goes through here, in both
modes: one process (the default) or API processes and workers (`runs.broker_url`). What differs
between the two is behind the backends (`backends/`): where a queued run waits, how its events,
a stop and a human's answer cross processes, and how a dead process's runs are found. What a run
does once a thread runs it is written once, in `run_worker.py`.

Three rules keep a run's story consistent whichever process gets somewhere first:
- a run is claimed in the database (queued -> running) before it executes: a duplicate delivery
  finds it claimed, so no run is ever executed twice;
- a human's answer belongs to one prompt: the database hands each prompt to one answer at most
  (`take_prompt`), so a late or second answer is refused (409), never carried over;
- ending a run is a conditional write: of a worker, a cancel and a process that found the worker
  dead, the first to store an outcome wins and the others store nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ..agents.workflows import Turn
from ..auth.secretbox import SecretBox
from ..llm.usage import LLMCall, summarize
from ..schemas.chat import Message
from ..schemas.runs import TERMINAL, UNFINISHED, EventKind, RunStatus
from ..schemas.workflow import AgentWorkFlowConfig
from ..schemas.workflows import WorkflowRef
from ..settings import RunSettings
from ..storage.repository import Repository
from ..storage.runstate import RunStateRepository
from . import handoff
from .answers import CANCELLED_NOTE
from .backends import Backends, EventFeed, follow
from .chat import ChatService, PreparedRun
from .errors import DependencyUnavailable, LLMEndpointError, NotFound, RunFailed, Unavailable, WrongState
from .event_writer import EventWriter
from .live import HEARTBEAT, SEQ_SLACK, LiveFeed, LiveRun, StoredFeed
from .recovery import INTERRUPTED_NOTE, WORKER_LOST_NOTE, end_stored_run, fail_stored_run
from .run_worker import FIRST_SEQ, RunWorker
from .shared_files import SharedFiles

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 2.0  # a cancel answers once the run has ended, or after this long
ERRORS: dict[str, type[RunFailed]] = {
    cls.__name__: cls for cls in (RunFailed, LLMEndpointError, DependencyUnavailable)
}


class RunManager:
    def __init__(
        self,
        chat: ChatService,
        repo: Repository,
        settings: RunSettings,
        writer: EventWriter,
        backends: Backends,
        box: SecretBox | None = None,
        files: SharedFiles | None = None,
    ) -> None:
        self._chat = chat
        self._repo = repo
        self._state = RunStateRepository.alongside(repo)
        self._settings = settings
        self._writer = writer
        self._b = backends
        self._box = box
        self._worker = RunWorker(chat, repo, settings, writer, backends, box, files)
        backends.queue.start(self._worker.execute)
        backends.stops.listen(self._worker.on_stop)

    # starting ----------------------------------------------------------------------------------

    def submit(
        self,
        message: Message,
        flow: AgentWorkFlowConfig | None,
        interactive: bool = True,
        workflow: WorkflowRef | None = None,
        history: list[Turn] | None = None,
        webhook: str | None = None,
    ) -> PreparedRun:
        """Store the question and queue the run; a bad request raises before anything is stored.
        `workflow`, `history` and `webhook`: see `ChatService.prepare`."""
        return self._start(message, flow, interactive, workflow, history, webhook)[0]

    def _start(
        self,
        message: Message,
        flow: AgentWorkFlowConfig | None,
        interactive: bool,
        workflow: WorkflowRef | None = None,
        history: list[Turn] | None = None,
        webhook: str | None = None,
    ) -> tuple[PreparedRun, LiveRun | None]:
        prepared = self._chat.prepare(message, flow, interactive, workflow, history, webhook)
        run_id = prepared.run_id
        live = None
        if self._b.distributed:
            assert self._box is not None
            payload = handoff.seal(self._box, prepared)
            queued = (run_id, FIRST_SEQ, EventKind.STATUS, {"status": RunStatus.QUEUED})
            self._writer.put_event(*queued)
            # Listeners find the run's stream at once, not only after the writer's next commit
            # (the writer's own publish of it is then a no-op).
            self._b.events.published([queued])
        else:
            payload = ""
            live = self._worker.hold(prepared, interactive)
        try:
            self._b.queue.submit(run_id, payload)
        except Exception as exc:  # the broker is unreachable: the run must not wait forever
            log.exception("could not queue run %s", run_id)
            text = f"the run could not be queued ({type(exc).__name__}): the run queue is unreachable"
            self._worker.forget(run_id)
            self._b.events.published(
                fail_stored_run(self._repo, run_id, text, DependencyUnavailable.__name__)
            )
            raise DependencyUnavailable(text, run_id, prepared.message) from exc
        return prepared, live

    def run_blocking(
        self,
        message: Message,
        flow: AgentWorkFlowConfig | None,
        workflow: WorkflowRef | None = None,
        history: list[Turn] | None = None,
    ) -> Message:
        """The old clients' way: wait for the answer. Nobody can answer a human-input prompt here,
        so such prompts get no input, as in AutoGen's NEVER mode. Whatever ended the run (its
        worker, a cancel, a shutdown) decides the outcome: an answer, or the failure raised."""
        prepared, live = self._start(message, flow, False, workflow, history)
        if live is not None:
            live.ended.wait()  # woken once, at the end, not at each of the run's events
            self._writer.flush()  # the run's events are stored before its answer is returned
            if live.reply is not None:
                return live.reply
            if live.error is not None:
                raise live.error
        else:
            feed = self._b.events.feed(prepared.run_id) or StoredFeed(self._repo, prepared.run_id)
            for _ in follow(feed, 0, self._settings.heartbeat_s):
                pass
            return self.outcome(prepared)
        raise RunFailed("the run ended without an answer", prepared.run_id, prepared.message)

    def outcome(self, prepared: PreparedRun) -> Message:
        """A run that ended: its stored answer, or its failure raised as it was."""
        user_id = prepared.message.user_id
        run = self._repo.get_run(prepared.run_id)
        if run is not None and run["assistant_msg_id"]:
            reply = self._repo.get_message(user_id, run["assistant_msg_id"])
            if reply is not None:
                return reply
        failure = next(
            (
                d
                for _, k, d in reversed(self._repo.events_after(prepared.run_id, 0, 100_000))
                if k == EventKind.ERROR
            ),
            None,
        )
        text = (failure or {}).get("message") or (run or {}).get("error") or "the run ended without an answer"
        kind = ERRORS.get((failure or {}).get("kind", ""), RunFailed)
        raise kind(text, prepared.run_id, prepared.message)

    # controlling -------------------------------------------------------------------------------

    def cancel(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        stored = self._owned(user_id, run_id)
        if stored["status"] in UNFINISHED:
            unheld = stored["status"] == RunStatus.QUEUED and self._worker.live(run_id) is None
            if not (unheld and self._cancel_queued(run_id)):
                try:
                    self._b.stops.request(run_id)
                except Exception as exc:  # Redis unreachable: nothing was sent, nothing changed
                    log.warning("could not send the stop of run %s: %s", run_id, exc)
                    raise Unavailable("the cancel could not be sent to the run now: try again") from exc
                self._await_end(run_id)
        return self.describe(user_id, run_id)

    def _await_end(self, run_id: str) -> None:
        """A stop sent to another process: answer once it took effect (or after CANCEL_WAIT_S)."""
        if self._worker.live(run_id) is not None:
            return  # stopped in this process already, synchronously
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            run = self._repo.get_run(run_id)
            if run is None or run["status"] in TERMINAL:
                return
            time.sleep(0.05)

    def cancel_session(self, user_id: str, session_id: str) -> None:
        """Stop the user's live runs of a session (it is about to be deleted)."""
        for run_id in self._state.unfinished_in_session(user_id, session_id):
            self.cancel(user_id, run_id)

    def provide_input(
        self, user_id: str | None, run_id: str, text: str, prompt_id: str | None = None
    ) -> dict[str, Any]:
        """Answer the prompt the run is waiting on now. `prompt_id`, when given, must be that
        prompt's: an answer to a prompt that timed out or was already answered is refused (409)
        rather than taken as the answer to a later question."""
        asked = self._owned(user_id, run_id)["input_prompt"]
        taken = self._state.take_prompt(run_id, prompt_id)
        if taken is None:
            stored = self._owned(user_id, run_id)
            if stored["status"] in TERMINAL:
                raise WrongState(f"run {run_id} is not waiting for input: it has ended")
            waiting = stored["input_prompt_id"]
            if prompt_id is not None and waiting is not None:
                raise WrongState(
                    f"prompt {prompt_id} of run {run_id} is no longer waiting for input (answered or "
                    f"timed out); the run is waiting on prompt {waiting}"
                )
            raise WrongState(f"run {run_id} is not waiting for input (status: {stored['status']})")
        try:
            self._b.inputs.deliver(run_id, taken, text)
        except Exception as exc:  # Redis unreachable: the prompt waits for an answer again
            log.warning("could not deliver the answer to run %s: %s", run_id, exc)
            self._state.ask(run_id, asked or "", taken)
            raise Unavailable("the answer could not be delivered to the run now: send it again") from exc
        return self.describe(user_id, run_id)

    # watching ----------------------------------------------------------------------------------

    def _owned(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        """The stored run, if it is this user's; anyone else's answers like a missing one.
        `user_id` None (no sign-in, no user named): the run's id alone finds it."""
        stored = self._repo.get_run(run_id)
        if stored is None or (user_id is not None and stored["user_id"] != user_id):
            raise NotFound(f"run {run_id} not found")
        return stored

    def describe(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        """The stored run: its status, the prompt it waits on, and its usage so far."""
        stored = self._owned(user_id, run_id)
        for internal in ("interactive", "worker_id"):
            stored.pop(internal, None)
        live = self._worker.live(run_id)
        recorder = live.control.recorder if live is not None else None
        if stored["usage"] is None and recorder is not None:
            stored["usage"] = recorder.summary()
        if stored["usage"] is None:
            stored["usage"] = summarize([LLMCall.from_row(r) for r in self._repo.llm_calls(run_id)])
        for key in ("started_at", "ended_at"):
            if isinstance(stored[key], datetime):
                stored[key] = stored[key].isoformat()
        return stored

    def feed(self, user_id: str | None, run_id: str) -> EventFeed:
        """A non-blocking view of the run's events for listeners on an event loop (the SSE
        server): a run this process holds from memory, another process's through the event log,
        a finished one from the database. A run this process holds is known to be stored and
        whose it is: no read of its row."""
        live = self._worker.live(run_id)
        if live is None or user_id not in (None, live.prepared.message.user_id):
            self._owned(user_id, run_id)
            live = self._worker.live(run_id)  # held here since the first look, perhaps
        if live is not None:
            return LiveFeed(live)
        return self._b.events.feed(run_id) or StoredFeed(self._repo, run_id)

    def stream(
        self, user_id: str | None, run_id: str, after: int = 0
    ) -> Iterator[tuple[int, str, dict[str, Any]] | None]:
        """The run's events after `after`, live until the run ends; None is a heartbeat."""
        return follow(self.feed(user_id, run_id), after, self._settings.heartbeat_s)

    # processes that died, and this one stopping -----------------------------------------------

    def recover(self) -> int:
        """Start watching for runs whose process died: in one process, those a previous one
        left unfinished, now; across processes, runs whose worker stopped beating, from now on.
        Each is interrupted with an answer that keeps what was said. Returns how many now."""
        reaped = [0]

        def reap(run_id: str) -> None:
            reaped[0] += self._reap(run_id)

        self._b.liveness.start(reap, self._expire_queued, self._worker.abandon)
        return reaped[0]

    def _expire_queued(self, run_id: str) -> None:
        """A run no worker took within `runs.queued_timeout_s`: it fails, saying why."""
        why = (
            f"no worker took the run within {self._settings.queued_timeout_s:g} s of its start: "
            "is `python -m autobots worker` running (on the same broker and queue)?"
        )
        events = fail_stored_run(
            self._repo, run_id, why, DependencyUnavailable.__name__, frozenset({RunStatus.QUEUED})
        )
        if events:
            log.warning("run %s failed: %s", run_id, why)
        self._b.events.published(events)

    def _reap(self, run_id: str) -> bool:
        stale_before = None
        why, note = "the server restarted during the run", INTERRUPTED_NOTE
        if self._b.distributed:  # only a run whose worker stopped beating, never a live one
            stale_before = datetime.now(UTC) - timedelta(seconds=self._settings.dead_after_s)
            why, note = "the worker running it stopped", WORKER_LOST_NOTE
        events = end_stored_run(
            self._repo,
            self._chat.settings.code_execution,
            run_id,
            RunStatus.INTERRUPTED,
            why,
            note,
            stale_before=stale_before,
        )
        if events and self._b.distributed:
            log.warning("run %s interrupted: its worker stopped beating", run_id)
        self._b.events.published(events)
        return bool(events)

    def _cancel_queued(self, run_id: str) -> bool:
        """Cancel a run no worker took yet, if it still is queued (else a worker holds it now)."""
        events = end_stored_run(
            self._repo,
            self._chat.settings.code_execution,
            run_id,
            RunStatus.CANCELLED,
            None,
            CANCELLED_NOTE,
            frozenset({RunStatus.QUEUED}),
        )
        self._b.events.published(events)
        return bool(events)

    def drain(self, grace_s: float) -> None:
        """A worker's graceful stop: let the runs it holds finish for up to `grace_s`, then
        interrupt the ones still going."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._worker.held():
            time.sleep(0.1)
        self.shutdown()

    def shutdown(self) -> None:
        """The process is stopping: end every live run it holds now as interrupted (what was said
        is stored with it), so none keeps the process alive waiting for a human or the pool."""
        self._worker.closing = True
        self._b.queue.close()
        self._worker.interrupt_all()
        self._writer.flush()


__all__ = ["HEARTBEAT", "SEQ_SLACK", "TERMINAL", "EventFeed", "LiveRun", "RunManager", "WrongState"]
