"""Live runs: a bounded worker pool, stored events, cancel, human input, restart recovery.

Every run, blocking (`POST /api/messages`) or not (`POST /api/runs`), goes through here, so the
two behave the same and both leave the same record. Events live in memory for listeners and are
stored by the event writer a few milliseconds later, so a client that reconnects with
`Last-Event-ID` gets exactly what it missed, and a run cut short by a server restart still shows
what was said.

Three rules keep a run's story consistent whichever thread gets somewhere first:
- every change of a run's status and every event is made under the run's `changed` lock;
- once a terminal status is announced (`concluded`), nothing more is emitted: a cancelled run's
  worker whose pending LLM call returns later adds nothing after `cancelled`;
- a human's answer belongs to one prompt (`prompt_id`): a late or repeated answer is refused,
  never carried over to the next prompt.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ..agents.workflows import WorkflowOutcome
from ..llm.usage import LLMCall, summarize
from ..schemas.chat import Message
from ..schemas.runs import TERMINAL, EventKind, RunStatus
from ..schemas.workflow import AgentWorkFlowConfig
from ..settings import RunSettings
from ..storage.repository import Repository
from .chat import ChatService, PreparedRun, RunControl, RunObserver
from .errors import NotFound, RunFailed, WrongState
from .event_writer import EventWriter
from .live import HEARTBEAT, SEQ_SLACK, EventFeed, LiveFeed, LiveRun, StoredFeed
from .recovery import recover_unfinished

log = logging.getLogger(__name__)


class RunManager:
    def __init__(
        self, chat: ChatService, repo: Repository, settings: RunSettings, writer: EventWriter
    ) -> None:
        self._chat = chat
        self._repo = repo
        self._settings = settings
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=settings.pool_size, thread_name_prefix="run")
        self._live: dict[str, LiveRun] = {}
        self._lock = threading.Lock()
        self._closing = False

    # starting ----------------------------------------------------------------------------------

    def submit(self, message: Message, flow: AgentWorkFlowConfig | None, interactive: bool = True) -> LiveRun:
        """Store the question and queue the run; a bad request raises before anything is stored."""
        live = LiveRun(self._chat.prepare(message, flow), interactive)
        with self._lock:
            self._live[live.run_id] = live
        self._emit(live, EventKind.STATUS, {"status": RunStatus.QUEUED})
        live.future = self._pool.submit(self._work, live)
        return live

    def run_blocking(self, message: Message, flow: AgentWorkFlowConfig | None) -> Message:
        """The old clients' way: wait for the answer. Nobody can answer a human-input prompt here,
        so such prompts get no input, as in AutoGen's NEVER mode. Whatever ended the run (its
        worker, a cancel, a shutdown) decides the outcome: an answer, or the failure raised."""
        live = self.submit(message, flow, interactive=False)
        with live.changed:
            while not live.concluded:
                live.changed.wait()
        self._writer.flush()  # the run's events are stored before its answer is returned
        if live.reply is not None:
            return live.reply
        if live.error is not None:
            raise live.error
        raise RunFailed("the run ended without an answer", live.run_id, live.prepared.message)

    def _work(self, live: LiveRun) -> None:
        cap: threading.Timer | None = None
        try:
            if live.concluded:  # cancelled while queued
                return
            self._set_status(live, RunStatus.RUNNING)
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
                self._append(live, EventKind.ERROR, {"message": str(error)})
            live.status = status
            live.input_prompt = live.prompt_id = None
            self._append(live, EventKind.STATUS, {"status": status})
            live.concluded = True
            return True

    # controlling -------------------------------------------------------------------------------

    def cancel(self, user_id: str | None, run_id: str) -> dict[str, Any]:
        self._owned(user_id, run_id)
        live = self._live_run(run_id)
        if live is not None:
            self._stop(live, self._chat.cancel)
        return self.describe(user_id, run_id)

    def cancel_session(self, user_id: str, session_id: str) -> None:
        """Stop the user's live runs of a session (it is about to be deleted)."""
        with self._lock:
            lives = [
                live
                for live in self._live.values()
                if live.prepared.message.session_id == session_id and live.prepared.message.user_id == user_id
            ]
        for live in lives:
            self.cancel(user_id, live.run_id)

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
            live.changed.notify_all()  # wake a run waiting for a human

    def provide_input(
        self, user_id: str | None, run_id: str, text: str, prompt_id: str | None = None
    ) -> dict[str, Any]:
        """Answer the prompt the run is waiting on now. `prompt_id`, when given, must be that
        prompt's: an answer to a prompt that timed out or was already answered is refused (409)
        rather than taken as the answer to a later question."""
        self._owned(user_id, run_id)
        live = self._live_run(run_id)
        if live is None:
            raise WrongState(f"run {run_id} is not waiting for input: it has ended")
        with live.changed:
            if live.concluded or live.prompt_id is None:
                raise WrongState(f"run {run_id} is not waiting for input (status: {live.status})")
            if prompt_id is not None and prompt_id != live.prompt_id:
                raise WrongState(
                    f"prompt {prompt_id} of run {run_id} is no longer waiting for input (answered or "
                    f"timed out); the run is waiting on prompt {live.prompt_id}"
                )
            live.answer = text
            live.prompt_id = live.input_prompt = None
            changed = self._change_status(live, RunStatus.RUNNING)  # a second POST finds nothing to answer
        self._store_status(live, RunStatus.RUNNING, changed)
        return self.describe(user_id, run_id)

    def _ask_human(self, live: LiveRun, prompt: str) -> str:
        """Ask the run's client and wait for its answer; "" when nobody answers in time (the
        run's iostream then does what AutoGen's NEVER mode would)."""
        if not live.interactive:
            return ""
        deadline = time.monotonic() + self._settings.input_timeout_s
        with live.changed:
            if self._stopping(live):
                return ""
            prompt_id = uuid.uuid4().hex
            live.prompt_id, live.input_prompt, live.answer = prompt_id, prompt, None
            asked = self._change_status(live, RunStatus.AWAITING_INPUT)
            self._append(
                live,
                EventKind.INPUT_REQUEST,
                {"prompt": prompt, "agent": _asking_agent(prompt), "prompt_id": prompt_id},
            )
        self._store_status(live, RunStatus.AWAITING_INPUT, asked)
        resumed = False
        with live.changed:
            while live.answer is None and not self._stopping(live):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                live.changed.wait(remaining)
            answer, live.answer = live.answer, None
            if live.prompt_id == prompt_id:  # unanswered: this prompt expires now
                live.prompt_id = live.input_prompt = None
                if not self._stopping(live):
                    self._append(live, EventKind.INPUT_TIMEOUT, {"prompt_id": prompt_id})
                    resumed = self._change_status(live, RunStatus.RUNNING)
        self._store_status(live, RunStatus.RUNNING, resumed)
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
        stored = self._owned(user_id, run_id)
        live = self._live_run(run_id)
        stored["input_prompt"] = stored["input_prompt_id"] = None
        if live is not None:
            with live.changed:
                status, concluded = live.status, live.concluded
                prompt, prompt_id = live.input_prompt, live.prompt_id
            if concluded:  # ended since the row was read: its error, usage and end are stored now
                stored = {**self._owned(user_id, run_id), "input_prompt": None, "input_prompt_id": None}
            stored["status"] = status
            stored["input_prompt"], stored["input_prompt_id"] = prompt, prompt_id
            recorder = live.control.recorder
            if recorder is not None and stored["usage"] is None:
                stored["usage"] = recorder.summary()
        if stored["usage"] is None:
            stored["usage"] = summarize([LLMCall.from_row(r) for r in self._repo.llm_calls(run_id)])
        for key in ("started_at", "ended_at"):
            if isinstance(stored[key], datetime):
                stored[key] = stored[key].isoformat()
        return stored

    def stream(
        self, user_id: str | None, run_id: str, after: int = 0
    ) -> Iterator[tuple[int, str, dict[str, Any]] | None]:
        """The run's events after `after`, live until the run ends; None is a heartbeat."""
        self._owned(user_id, run_id)
        live = self._live_run(run_id)
        if live is not None:
            return self._follow(live, after)
        return iter(self._repo.events_after(run_id, after, limit=1_000_000))

    def feed(self, user_id: str | None, run_id: str) -> EventFeed:
        """A non-blocking view of the run's events for listeners on an event loop (the SSE
        server): `take` never waits, `subscribe` says when there is something new."""
        self._owned(user_id, run_id)
        live = self._live_run(run_id)
        if live is not None:
            return LiveFeed(live)
        return StoredFeed(self._repo, run_id)

    def _follow(self, live: LiveRun, after: int) -> Iterator[tuple[int, str, dict[str, Any]] | None]:
        """A live run's events come from memory: listeners never wait for the database. The
        stream ends with the terminal status, after which a run emits nothing."""
        last = after
        while True:
            with live.changed:
                fresh = live.events[last:] if last < len(live.events) else []
                finished = live.concluded
                if not fresh and not finished:
                    live.changed.wait(timeout=self._settings.heartbeat_s)
                    fresh = live.events[last:]
                    finished = live.concluded
            for event in fresh:
                last = event[0]
                yield event
            if finished and last >= len(live.events):
                return
            if not fresh and not finished:
                yield HEARTBEAT

    # recovery ----------------------------------------------------------------------------------

    def recover(self) -> int:
        """Runs left unfinished by a previous server process: marked interrupted (see
        `recovery.py`), each with an answer that keeps what was said."""
        return recover_unfinished(self._repo, self._chat.settings.code_execution)

    def shutdown(self) -> None:
        """The server is stopping: end every live run now as interrupted (what was said is
        stored with it), so none keeps the process alive waiting for a human or the pool."""
        self._closing = True
        with self._lock:
            lives = list(self._live.values())
        self._pool.shutdown(wait=False, cancel_futures=True)
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

    # internals ---------------------------------------------------------------------------------

    def _live_run(self, run_id: str) -> LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def _set_status(self, live: LiveRun, status: str) -> None:
        """A non-terminal status; never after the run concluded (terminal ones: `_conclude`)."""
        with live.changed:
            changed = self._change_status(live, status)
        self._store_status(live, status, changed)

    def _change_status(self, live: LiveRun, status: str) -> bool:
        # Called with live.changed held: the check and the change are one step.
        if live.concluded or live.status == status:
            return False
        live.status = status
        self._append(live, EventKind.STATUS, {"status": status})
        return True

    def _store_status(self, live: LiveRun, status: str, changed: bool) -> None:
        """Outside the run's lock: listeners must not wait for the database. Only a restart
        reads a live run's stored status (any unfinished one means interrupted), and the
        repository never overwrites a finished run's, so these writes need no ordering."""
        if changed:
            self._repo.set_run_status(live.run_id, status)

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


__all__ = ["HEARTBEAT", "SEQ_SLACK", "TERMINAL", "LiveRun", "RunManager", "WrongState"]
