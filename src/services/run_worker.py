"""Executing runs: the thread that claims a run and runs it, and what stops it from outside.

`RunWorker` holds the runs this process executes (`LiveRun`, in memory) and does, for each, what
a run does in both modes: claim it in the database (a run someone else claimed, cancelled or
deleted is dropped), rebuild it if another process queued it (`handoff.py`), run the workflow with
the wall-time cap, ask a human and wait for the answer (`InputBroker`), take a stop (a cancel,
the cap, a shutdown), and announce the outcome once. `RunManager` (`runs.py`) is the other side:
what requests ask of runs, wherever they execute.

Two rules keep a run's story consistent whichever thread gets somewhere first:
- every change of a run's status and every event is made under the run's `changed` lock, and
  once a terminal status is announced (`concluded`), nothing more is emitted: a cancelled run's
  thread whose pending LLM call returns later adds nothing after `cancelled`;
- a prompt is stored before it is announced, and the database hands it to one answer at most.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from .. import logs
from ..agents.workflows import WorkflowOutcome
from ..auth.secretbox import SecretBox
from ..llm.usage import LLMCall
from ..schemas.chat import Message
from ..schemas.runs import EventKind, RunStatus
from ..settings import RunSettings
from ..storage.repository import Repository
from ..storage.runstate import RunStateRepository
from . import handoff
from .backends import Backends
from .chat import ChatService, PreparedRun, RunControl, RunObserver
from .deadlines import Deadline, Deadlines
from .errors import DependencyUnavailable, RunFailed
from .event_writer import EventWriter
from .live import SEQ_SLACK, LiveRun
from .recovery import fail_stored_run
from .shared_files import SharedFiles

log = logging.getLogger(__name__)

FIRST_SEQ = 1  # every run's event 1 is its "queued" status, written by the process that queued it
LATE_ANSWER_S = 10.0  # an answer taken just as its prompt expired is on its way: wait this long


class RunWorker:
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
        self._deadlines = Deadlines()  # every run's wall-time cap, on one thread
        self._lock = threading.Lock()
        self._starting = 0  # runs between their claim and being held in `_live`
        self.closing = False

    def hold(self, prepared: PreparedRun, interactive: bool) -> LiveRun:
        """A run queued in this process (the one-process mode): held from now, event 1 emitted."""
        live = LiveRun(prepared, interactive)
        with self._lock:
            self._live[prepared.run_id] = live
        self._emit(live, EventKind.STATUS, {"status": RunStatus.QUEUED})
        return live

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._live.pop(run_id, None)

    def live(self, run_id: str) -> LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def held(self) -> int:
        """Runs this process holds, the ones it is claiming included."""
        with self._lock:
            return len(self._live) + self._starting

    def interrupt_all(self) -> None:
        """This process is stopping: every run it holds ends now as interrupted."""
        with self._lock:  # with the lock: a run being claimed now sees `closing` once it is held
            self.closing = True
            lives = list(self._live.values())
        for live in lives:
            try:
                self._interrupt(live)
            except Exception:  # the next start (or another process) marks it interrupted instead
                log.exception("could not mark run %s interrupted at shutdown", live.run_id)

    def abandon(self, run_id: str) -> None:
        """Another process ended this run (its heartbeat was late): stop its calls and sandboxes
        and say nothing more; what that process stored stands."""
        live = self.live(run_id)
        if live is None:
            return
        with live.changed:
            live.conclude()
            live.changed.notify_all()
        live.control.cancel()
        self._b.inputs.wake()

    def _fail_stored(self, run_id: str, text: str) -> None:
        """A claimed run that cannot be rebuilt here ends failed, saying why."""
        events = fail_stored_run(
            self._repo, run_id, text, DependencyUnavailable.__name__, frozenset({RunStatus.RUNNING})
        )
        self._b.events.published(events)

    def execute(self, run_id: str, payload: str) -> None:
        """Run a queued run in this thread (the pool's, or a Celery worker's), if this process
        claims it; a run someone else claimed, cancelled or deleted is dropped."""
        live = self.live(run_id)
        if live is not None and live.concluded:
            return
        with self._lock:
            if self.closing:
                log.info("run %s not taken: this process is stopping", run_id)
                return
            self._starting += 1  # counted as held from here: a graceful stop waits for it too
        try:
            if not self._state.claim(run_id, self._b.worker_id):
                log.info("run %s is not queued any more (claimed, cancelled or deleted): dropped", run_id)
                return
            if live is None:  # queued by another process
                live = self._adopt(run_id, payload)
                if live is None:
                    return
        finally:
            with self._lock:
                self._starting -= 1
        self._b.liveness.hold(run_id)
        try:
            if self._b.stops.requested(run_id):  # cancelled just before this process held it
                self.on_stop(run_id)
            if self.closing:  # the stop's interrupt_all may have looked before this run was held
                self._interrupt(live)
            with logs.bound(logs.run_id, run_id), logs.bound(logs.user_id, live.prepared.message.user_id):
                self._work(live)  # every line the run's thread writes names the run
        finally:
            self._b.liveness.release(run_id)
            self.forget(run_id)
            if not live.files_kept:  # stopped from outside: what its code left, all the same
                self._keep_files(live)

    def _restore_files(self, live: LiveRun) -> None:
        if self._files is not None:
            message = live.prepared.message
            self._files.restore(message.user_id, message.session_id or "")

    def _keep_files(self, live: LiveRun) -> None:
        """Before the run's end is announced: a client may fetch a file it lists at once, from
        any API process."""
        live.files_kept = True
        if self._files is None:
            return
        message = live.prepared.message
        try:
            self._files.store(message.user_id, message.session_id or "")
        except Exception:
            log.exception("could not store the files of run %s", live.run_id)

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
            self._fail_stored(run_id, text)
            return None
        live = LiveRun(prepared, bool(run["interactive"]))
        live.seq = live.flushed_seq = FIRST_SEQ
        with self._lock:
            self._live[run_id] = live
        return live

    def _work(self, live: LiveRun) -> None:
        cap: Deadline | None = None
        try:
            if live.concluded:  # cancelled while queued
                return
            with live.changed:
                self._change_status(live, RunStatus.RUNNING)  # stored by the claim
            # The hard wall-time cap: limits are checked before every LLM call and code block,
            # but one call or block may hang past the cap; this ends the run then regardless.
            cap = self._deadlines.after(self._chat.settings.limits.max_run_seconds, self._time_cap, live)
            observer = RunObserver(
                on_message=lambda m: self._emit(live, EventKind.MESSAGE, m.as_dict()),
                on_call=lambda c: self._emit(live, EventKind.LLM_CALL, _call_event(c)),
                on_event=lambda kind, data: self._emit(live, kind, data),
                ask_human=lambda prompt: self._ask_human(live, prompt),
            )
            self._restore_files(live)
            try:
                reply = self._chat.execute(live.prepared, observer, live.control)
            except RunFailed as exc:
                self._keep_files(live)
                if live.control.reply is not None:  # cancelled meanwhile: that answer stands
                    self._conclude(live, reply=live.control.reply)
                else:
                    self._conclude(live, error=exc)
                return
            self._keep_files(live)
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
            self._append(live, EventKind.STATUS, {"status": status})
            live.conclude()
            return True

    def on_stop(self, run_id: str) -> None:
        live = self.live(run_id)
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
                    if not live.concluded:
                        self._append(live, EventKind.INPUT_TIMEOUT, {"prompt_id": prompt_id})
                        self._change_status(live, RunStatus.RUNNING)
                return ""
            answer = self._b.inputs.wait(live.run_id, prompt_id, LATE_ANSWER_S, stopping)  # taken just now
        with live.changed:
            self._change_status(live, RunStatus.RUNNING)
        return answer or ""

    def _stopping(self, live: LiveRun) -> bool:
        return live.concluded or live.control.finished or self.closing

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
