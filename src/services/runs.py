"""Live runs: queued, run once, watched, cancelled, asked for input, found when their process died.

Every run, blocking (`POST /api/messages`) or not (`POST /api/runs`), goes through here, in both
modes: one process (the default) or API processes and workers (`runs.broker_url`). What differs
between the two is behind the backends (`backends/`): where a queued run waits, how its events,
a stop and a human's answer cross processes, and how a dead process's runs are found. What a run
does, and in which order, is written once, here.

Four rules keep a run's story consistent whichever thread or process gets somewhere first:
- a run is claimed in the database (queued -> running) before it executes: a duplicate delivery
  finds it claimed, so no run is ever executed twice;
- every change of a run's status and every event is made under the run's `changed` lock, and
  once a terminal status is announced (`concluded`), nothing more is emitted;
- a human's answer belongs to one prompt: the database hands each prompt to one answer at most
  (`take_prompt`), so a late or second answer is refused (409), never carried over;
- ending a run is a conditional write: of a worker, a cancel and a process that found the worker
  dead, the first to store an outcome wins and the others store nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from ..agents.workflows import WorkflowOutcome
from ..auth.secretbox import SecretBox
from ..llm.usage import LLMCall, summarize
from ..schemas.chat import Message
from ..schemas.runs import TERMINAL, UNFINISHED, EventKind, RunStatus
from ..schemas.workflow import AgentWorkFlowConfig
from ..settings import RunSettings
from ..storage.repository import Repository
from ..storage.runstate import RunStateRepository
from . import handoff
from .answers import CANCELLED_NOTE
from .backends import Backends, EventFeed, follow
from .chat import ChatService, PreparedRun, RunControl, RunObserver
from .errors import DependencyUnavailable, LLMEndpointError, NotFound, RunFailed, WrongState
from .event_writer import EventWriter
from .live import HEARTBEAT, SEQ_SLACK, LiveFeed, LiveRun, StoredFeed
from .recovery import INTERRUPTED_NOTE, WORKER_LOST_NOTE, end_stored_run
from .shared_files import SharedFiles

log = logging.getLogger(__name__)

FIRST_SEQ = 1  # every run's event 1 is its "queued" status, written by the process that queued it
LATE_ANSWER_S = 10.0  # an answer taken just as its prompt expired is on its way: wait this long
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
        self._files = files  # the distributed mode: a session's files kept for every process
        self._live: dict[str, LiveRun] = {}
        self._lock = threading.Lock()
        self._closing = False
        backends.queue.start(self.execute)
        backends.stops.listen(self._on_stop)

    @property
    def distributed(self) -> bool:
        return self._b.distributed

    # starting ----------------------------------------------------------------------------------

    def submit(
        self, message: Message, flow: AgentWorkFlowConfig | None, interactive: bool = True
    ) -> PreparedRun:
        """Store the question and queue the run; a bad request raises before anything is stored."""
        return self._start(message, flow, interactive)[0]

    def _start(
        self, message: Message, flow: AgentWorkFlowConfig | None, interactive: bool
    ) -> tuple[PreparedRun, LiveRun | None]:
        prepared = self._chat.prepare(message, flow, interactive)
        run_id = prepared.run_id
        queued = {"status": RunStatus.QUEUED}
        live = None
        if self._b.distributed:
            assert self._box is not None
            payload = handoff.seal(self._box, prepared)
            self._writer.put_event(run_id, FIRST_SEQ, EventKind.STATUS, queued)
        else:
            payload = ""
            live = LiveRun(prepared, interactive)
            with self._lock:
                self._live[run_id] = live
            self._emit(live, EventKind.STATUS, queued)
        try:
            self._b.queue.submit(run_id, payload)
        except Exception as exc:  # the broker is unreachable: the run must not wait forever
            log.exception("could not queue run %s", run_id)
            text = f"the run could not be queued ({type(exc).__name__}): the run queue is unreachable"
            self._end_unheld(run_id, RunStatus.FAILED, text)
            raise DependencyUnavailable(text, run_id, prepared.message) from exc
        return prepared, live

    def run_blocking(self, message: Message, flow: AgentWorkFlowConfig | None) -> Message:
        """The old clients' way: wait for the answer. Nobody can answer a human-input prompt here,
        so such prompts get no input, as in AutoGen's NEVER mode. Whatever ended the run (its
        worker, a cancel, a shutdown) decides the outcome: an answer, or the failure raised."""
        prepared, live = self._start(message, flow, interactive=False)
        if live is not None:
            with live.changed:
                while not live.concluded:
                    live.changed.wait()
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

    def execute(self, run_id: str, payload: str) -> None:
        """Run a queued run in this thread (the pool's, or a Celery worker's), if this process
        claims it; a run someone else claimed, cancelled or deleted is dropped."""
        live = self._live_run(run_id)
        if live is not None and live.concluded:
            return
        if self._closing or not self._state.claim(run_id, self._b.worker_id):
            log.info("run %s is not queued any more (claimed, cancelled or deleted): dropped", run_id)
            return
        if live is None:  # queued by another process
            live = self._adopt(run_id, payload)
            if live is None:
                return
        self._b.liveness.hold(run_id)
        message = live.prepared.message
        try:
            if self._b.stops.requested(run_id):  # cancelled just before this process held it
                self._on_stop(run_id)
            if self._files is not None:
                self._files.restore(message.user_id, message.session_id or "")
            self._work(live)
        finally:
            self._b.liveness.release(run_id)
            if self._files is not None:
                try:
                    self._files.store(message.user_id, message.session_id or "")
                except Exception:
                    log.exception("could not store the files of run %s", run_id)

    def _adopt(self, run_id: str, payload: str) -> LiveRun | None:
        run = self._repo.get_run(run_id)
        message = self._repo.get_message(run["user_id"], run["user_msg_id"]) if run else None
        if run is None or message is None:
            return None
        assert self._box is not None
        try:
            prepared = handoff.restore(self._box, self._chat.teams, run, message, payload)
        except Exception as exc:
            text = str(exc) if isinstance(exc, handoff.Unsealable) else f"the run could not be rebuilt: {exc}"
            log.warning("run %s: %s", run_id, text)
            self._end_unheld(run_id, RunStatus.FAILED, text, when=frozenset({RunStatus.RUNNING}))
            return None
        live = LiveRun(prepared, bool(run["interactive"]))
        live.seq = live.flushed_seq = FIRST_SEQ
        with self._lock:
            self._live[run_id] = live
        return live

    def _work(self, live: LiveRun) -> None:
        cap: threading.Timer | None = None
        try:
            if live.concluded:  # cancelled while queued
                return
            with live.changed:
                self._change_status(live, RunStatus.RUNNING)  # stored by the claim
            # The hard wall-time cap: limits are checked before every LLM call and code block,
            # but one call or block may hang past the cap; this ends the run then regardless.
            cap = threading.Timer(self._chat.settings.limits.max_run_seconds, self._time_cap, (live,))
            cap.daemon = True
            cap.start()
            observer = RunObserver(
                on_message=lambda m: self._emit(live, EventKind.MESSAGE, m.as_dict()),
                on_call=lambda c: self._emit(live, EventKind.LLM_CALL, _call_event(c)),
                on_event=lambda kind, data: self._emit(live, kind, data),
                ask_human=lambda prompt: self._ask_human(live, prompt),
            )
            try:
                reply = self._chat.execute(live.prepared, observer, live.control)
            except RunFailed as exc:
                if live.control.reply is not None:  # cancelled meanwhile: that answer stands
                    self._conclude(live, reply=live.control.reply)
                else:
                    self._conclude(live, error=exc)
                return
            self._conclude(live, reply=reply)
        except Exception:  # never leave a run hanging: record it as failed
            log.exception("run %s failed unexpectedly", live.run_id)
            self._fail_unexpectedly(live)
        finally:
            if cap is not None:
                cap.cancel()
            if not live.concluded:  # a conclusion that itself failed: still end the run
                self._fail_unexpectedly(live)
            self._writer.flush()  # everything the run said is stored before it counts as done
            live.done.set()
            with live.changed:
                live.changed.notify_all()
            with self._lock:
                self._live.pop(live.run_id, None)

    def _fail_unexpectedly(self, live: LiveRun) -> None:
        error = RunFailed("the run failed unexpectedly", live.run_id, live.prepared.message)
        control = live.control
        try:
            with control.lock:
                if not control.finished:
                    control.finished = True
                    self._repo.finish_run(live.run_id, RunStatus.FAILED, None, str(error))
        except Exception:
            log.exception("could not store run %s as failed", live.run_id)
        if control.reply is not None:
            self._conclude(live, reply=control.reply)
        else:
            self._conclude(live, error=error)

    def _conclude(self, live: LiveRun, reply: Message | None = None, error: RunFailed | None = None) -> bool:
        """Announce the outcome once, whoever gets here first (the worker, a cancel, a shutdown):
        the answer (`final`) or the failure (`error`), then the terminal status, then nothing."""
        with live.changed:
            if live.concluded:
                return False
            live.reply, live.error = reply, error
            if reply is not None:
                status = (reply.metadata or {}).get("status", RunStatus.COMPLETED)
                self._append(live, EventKind.FINAL, {"message": reply.model_dump(mode="json")})
            else:
                status = RunStatus.FAILED
                self._append(live, EventKind.ERROR, {"message": str(error), "kind": type(error).__name__})
            live.status = status
            live.input_prompt = live.prompt_id = None
            self._append(live, EventKind.STATUS, {"status": status})
            live.concluded = True
            return True

    # controlling -------------------------------------------------------------------------------

    def cancel(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        stored = self._owned(user_id, run_id)
        if stored["status"] in UNFINISHED:
            unheld = stored["status"] == RunStatus.QUEUED and self._live_run(run_id) is None
            if not (
                unheld and self._end_unheld(run_id, RunStatus.CANCELLED, None, frozenset({RunStatus.QUEUED}))
            ):
                self._b.stops.request(run_id)
                self._await_end(run_id)
        return self.describe(user_id, run_id)

    def _await_end(self, run_id: str) -> None:
        """A stop sent to another process: answer once it took effect (or after CANCEL_WAIT_S)."""
        if self._live_run(run_id) is not None:
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

    def _on_stop(self, run_id: str) -> None:
        live = self._live_run(run_id)
        if live is not None:
            self._stop(live, self._chat.cancel)

    def _time_cap(self, live: LiveRun) -> None:
        self._stop(live, self._chat.stop_at_time_cap)

    def _stop(self, live: LiveRun, stop: Callable[[PreparedRun, RunControl], Message | None]) -> None:
        """End a live run from outside its worker (a cancel, the time cap): `stop` stores the
        answer with what was said; None means the worker's failure was stored first, and the
        worker announces it."""
        if live.concluded:
            return
        reply = stop(live.prepared, live.control)
        if reply is not None:
            self._conclude(live, reply=reply)
        with live.changed:
            live.changed.notify_all()
        self._b.inputs.wake()  # a run waiting for a human stops waiting

    def provide_input(
        self, user_id: str | None, run_id: str, text: str, prompt_id: str | None = None
    ) -> dict[str, Any]:
        """Answer the prompt the run is waiting on now. `prompt_id`, when given, must be that
        prompt's: an answer to a prompt that timed out or was already answered is refused (409)
        rather than taken as the answer to a later question."""
        self._owned(user_id, run_id)
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
        self._b.inputs.deliver(run_id, taken, text)
        return self.describe(user_id, run_id)

    def _ask_human(self, live: LiveRun, prompt: str) -> str:
        """Ask the run's client and wait for its answer; "" when nobody answers in time (the
        run's iostream then does what AutoGen's NEVER mode would). The prompt is stored before it
        is announced, so any API process can take the answer to it."""
        if not live.interactive:
            return ""
        prompt_id = uuid.uuid4().hex
        with live.changed:
            if self._stopping(live):
                return ""
        if not self._state.ask(live.run_id, prompt, prompt_id):
            return ""  # the run ended meanwhile
        with live.changed:
            if live.concluded:
                return ""
            live.prompt_id, live.input_prompt = prompt_id, prompt
            self._change_status(live, RunStatus.AWAITING_INPUT)
            self._append(
                live,
                EventKind.INPUT_REQUEST,
                {"prompt": prompt, "agent": _asking_agent(prompt), "prompt_id": prompt_id},
            )

        def stopping() -> bool:
            return self._stopping(live)

        answer = self._b.inputs.wait(live.run_id, prompt_id, self._settings.input_timeout_s, stopping)
        if answer is None and not stopping():
            if self._state.take_prompt(live.run_id, prompt_id) is not None:  # unanswered: it expires now
                with live.changed:
                    live.prompt_id = live.input_prompt = None
                    if not live.concluded:
                        self._append(live, EventKind.INPUT_TIMEOUT, {"prompt_id": prompt_id})
                        self._change_status(live, RunStatus.RUNNING)
                return ""
            answer = self._b.inputs.wait(live.run_id, prompt_id, LATE_ANSWER_S, stopping)  # taken just now
        with live.changed:
            live.prompt_id = live.input_prompt = None
            self._change_status(live, RunStatus.RUNNING)
        return answer or ""

    def _stopping(self, live: LiveRun) -> bool:
        return live.concluded or live.control.finished or self._closing

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
        live = self._live_run(run_id)
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
        a finished one from the database."""
        self._owned(user_id, run_id)
        live = self._live_run(run_id)
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

        self._b.liveness.start(reap)
        return reaped[0]

    def _reap(self, run_id: str) -> bool:
        if self._b.distributed:
            cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.dead_after_s)
            events = end_stored_run(
                self._repo,
                self._chat.settings.code_execution,
                run_id,
                RunStatus.INTERRUPTED,
                "the worker running it stopped",
                WORKER_LOST_NOTE,
                stale_before=cutoff,
            )
            if events:
                log.warning("run %s interrupted: its worker stopped beating", run_id)
        else:
            events = end_stored_run(
                self._repo,
                self._chat.settings.code_execution,
                run_id,
                RunStatus.INTERRUPTED,
                "the server restarted during the run",
                INTERRUPTED_NOTE,
            )
        self._b.events.published(events)
        return bool(events)

    def _end_unheld(
        self, run_id: str, status: RunStatus, why: str | None, when: frozenset[str] = UNFINISHED
    ) -> bool:
        note = CANCELLED_NOTE if status == RunStatus.CANCELLED else f"[autobots: {why}]"
        events = end_stored_run(
            self._repo, self._chat.settings.code_execution, run_id, status, why, note, when
        )
        self._b.events.published(events)
        return bool(events)

    def drain(self, grace_s: float) -> None:
        """A worker's graceful stop: let the runs it holds finish for up to `grace_s`, then
        interrupt the ones still going."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._live:
                    break
            time.sleep(0.1)
        self.shutdown()

    def shutdown(self) -> None:
        """The process is stopping: end every live run it holds now as interrupted (what was said
        is stored with it), so none keeps the process alive waiting for a human or the pool."""
        self._closing = True
        with self._lock:
            lives = list(self._live.values())
        self._b.queue.close()
        for live in lives:
            try:
                self._interrupt(live)
            except Exception:  # the next start's recover() marks it interrupted instead
                log.exception("could not mark run %s interrupted at shutdown", live.run_id)
        self._writer.flush()

    def _interrupt(self, live: LiveRun) -> None:
        if live.concluded:
            return
        control = live.control
        transcript = control.transcript
        said = [m.content for m in transcript.messages if m.content] if transcript is not None else []
        note = "[autobots: the run was interrupted: the server stopped]"
        outcome = WorkflowOutcome((said[-1] + "\n\n" if said else "") + note)
        # Stored before the worker is stopped, so the worker's own finish finds it and keeps it.
        reply = self._chat.finish(live.prepared, control, outcome, RunStatus.INTERRUPTED)
        control.cancel()
        self._conclude(live, reply=reply)
        with live.changed:
            live.changed.notify_all()
        self._b.inputs.wake()

    # internals ---------------------------------------------------------------------------------

    def _live_run(self, run_id: str) -> LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def _change_status(self, live: LiveRun, status: str) -> bool:
        # Called with live.changed held: the check and the change are one step.
        if live.concluded or live.status == status:
            return False
        live.status = status
        self._append(live, EventKind.STATUS, {"status": status})
        return True

    def _emit(self, live: LiveRun, kind: str, data: dict[str, Any]) -> None:
        """An event from the run; dropped once the run concluded (a late call's report)."""
        with live.changed:
            if not live.concluded:
                self._append(live, kind, data)

    def _append(self, live: LiveRun, kind: str, data: dict[str, Any]) -> None:
        # Called with live.changed held. The writer never takes a run's lock, so waiting for it
        # here cannot deadlock; it happens once per SEQ_SLACK events at most.
        if live.seq - live.flushed_seq >= SEQ_SLACK:
            self._writer.flush()
            live.flushed_seq = live.seq
        live.seq += 1
        live.events.append((live.seq, kind, data))
        self._writer.put_event(live.run_id, live.seq, kind, data)
        live.changed.notify_all()
        for wake in list(live.wakers):
            wake()


_REPLYING_AS = re.compile(r"Replying as ([^.\s]+)\.")


def _asking_agent(prompt: str) -> str | None:
    """The agent that asks: AutoGen's prompt begins "Replying as <name>."."""
    match = _REPLYING_AS.search(prompt)
    return match.group(1) if match else None


def _call_event(call: LLMCall) -> dict[str, Any]:
    return {
        "agent": call.agent,
        "model": call.model,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "total_tokens": call.total_tokens,
        "cost": float(call.cost),
        "cost_usd": str(call.cost),
        "latency_s": round(call.latency_s, 6),
        "cached": call.cached,
        "error": call.error,
    }


__all__ = ["HEARTBEAT", "SEQ_SLACK", "TERMINAL", "EventFeed", "LiveRun", "RunManager", "WrongState"]
