"""Live runs: a bounded worker pool, stored events, cancel, human input, restart recovery.

Every run, blocking (`POST /api/messages`) or not (`POST /api/runs`), goes through here, so the
two behave the same and both leave the same record. Each event a run emits is stored before
listeners are woken, so a client that reconnects with `Last-Event-ID` gets exactly what it missed,
and a run cut short by a server restart still shows what was said.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autobots.llm.usage import LLMCall, summarize
from autobots.schemas.chat import Message
from autobots.schemas.workflow import AgentWorkFlowConfig
from autobots.services.chat import ChatService, NotFound, PreparedRun, RunControl, RunFailed, RunObserver
from autobots.services.event_writer import EventWriter
from autobots.settings import RunSettings
from autobots.storage.repository import Repository

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "cancelled", "interrupted"})
HEARTBEAT = None  # what `stream` yields when nothing happened for a while


@dataclass
class LiveRun:
    prepared: PreparedRun
    interactive: bool
    control: RunControl = field(default_factory=RunControl)
    status: str = "queued"
    input_prompt: str | None = None
    answers: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seq: int = 0
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=lambda: threading.Condition(threading.RLock()))
    done: threading.Event = field(default_factory=threading.Event)
    reply: Message | None = None
    error: RunFailed | None = None
    future: Future[None] | None = None

    @property
    def run_id(self) -> str:
        return self.prepared.run_id


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

    # starting ----------------------------------------------------------------------------------

    def submit(self, message: Message, flow: AgentWorkFlowConfig | None, interactive: bool = True) -> LiveRun:
        """Store the question and queue the run; a bad request raises before anything is stored."""
        live = LiveRun(self._chat.prepare(message, flow), interactive)
        with self._lock:
            self._live[live.run_id] = live
        self._emit(live, "status", {"status": "queued"})
        live.future = self._pool.submit(self._work, live)
        return live

    def run_blocking(self, message: Message, flow: AgentWorkFlowConfig | None) -> Message:
        """The old clients' way: wait for the answer. Nobody can answer a human-input prompt here,
        so such prompts get no input, as in AutoGen's NEVER mode."""
        live = self.submit(message, flow, interactive=False)
        live.done.wait()
        if live.error is not None:
            raise live.error
        assert live.reply is not None
        return live.reply

    def _work(self, live: LiveRun) -> None:
        try:
            if live.control.finished:  # cancelled while queued
                return
            self._set_status(live, "running")
            observer = RunObserver(
                on_message=lambda m: self._emit(live, "message", m.as_dict()),
                on_call=lambda c: self._emit(live, "llm_call", _call_event(c)),
                on_event=lambda kind, data: self._emit(live, kind, data),
                ask_human=lambda prompt: self._ask_human(live, prompt),
            )
            try:
                reply = self._chat.execute(live.prepared, observer, live.control)
            except RunFailed as exc:
                if live.control.reply is not None:  # cancelled meanwhile: that answer stands
                    self._conclude(live, live.control.reply)
                else:
                    live.error = exc
                    self._emit(live, "error", {"message": str(exc)})
                    self._set_status(live, "failed")
                return
            self._conclude(live, reply)
        except Exception:  # never leave a run hanging: record it as failed
            log.exception("run %s failed unexpectedly", live.run_id)
            if live.reply is None and live.error is None:
                live.error = RunFailed("the run failed unexpectedly", live.run_id, live.prepared.message)
                self._set_status(live, "failed")
        finally:
            self._writer.flush()  # everything the run said is stored before it counts as done
            live.done.set()
            with live.changed:
                live.changed.notify_all()
            with self._lock:
                self._live.pop(live.run_id, None)

    def _conclude(self, live: LiveRun, reply: Message) -> None:
        """Announce the answer once, whether the worker or a cancel gets here first."""
        with live.changed:
            if live.reply is not None:
                return
            live.reply = reply
            status = (reply.metadata or {}).get("status", "completed")
            self._emit(live, "final", {"message": reply.model_dump(mode="json")})
            self._set_status(live, status)

    # controlling -------------------------------------------------------------------------------

    def cancel(self, run_id: str) -> dict[str, Any]:
        live = self._live_run(run_id)
        if live is not None and live.status not in TERMINAL:
            live.answers.put(None)  # wake a run waiting for a human
            reply = self._chat.cancel(live.prepared, live.control)
            if reply is not None:
                self._conclude(live, reply)
            live.done.set()
        return self.describe(run_id)

    def provide_input(self, run_id: str, text: str) -> dict[str, Any]:
        live = self._live_run(run_id)
        if live is None or live.status != "awaiting_input":
            raise WrongState(f"run {run_id} is not waiting for input")
        live.answers.put(text)
        return self.describe(run_id)

    def _ask_human(self, live: LiveRun, prompt: str) -> str:
        if not live.interactive or live.control.finished:
            return ""
        live.input_prompt = prompt
        self._set_status(live, "awaiting_input")
        self._emit(live, "input_request", {"prompt": prompt, "agent": _asking_agent(prompt)})
        try:
            answer = live.answers.get(timeout=self._settings.input_timeout_s)
        except queue.Empty:
            answer = ""
        live.input_prompt = None
        if not live.control.finished:
            self._set_status(live, "running")
        return answer or ""

    # watching ----------------------------------------------------------------------------------

    def describe(self, run_id: str) -> dict[str, Any]:
        stored = self._repo.get_run(run_id)
        if stored is None:
            raise NotFound(f"run {run_id} not found")
        live = self._live_run(run_id)
        if live is not None:
            stored["status"] = live.status
            recorder = live.control.recorder
            if recorder is not None and stored["usage"] is None:
                stored["usage"] = recorder.summary()
        stored["input_prompt"] = live.input_prompt if live is not None else None
        if stored["usage"] is None:
            stored["usage"] = summarize([LLMCall.from_row(r) for r in self._repo.llm_calls(run_id)])
        for key in ("started_at", "ended_at"):
            if isinstance(stored[key], datetime):
                stored[key] = stored[key].isoformat()
        return stored

    def stream(self, run_id: str, after: int = 0) -> Iterator[tuple[int, str, dict[str, Any]] | None]:
        """The run's events after `after`, live until the run ends; None is a heartbeat."""
        live = self._live_run(run_id)
        if live is not None:
            return self._follow(live, after)
        if self._repo.get_run(run_id) is None:
            raise NotFound(f"run {run_id} not found")
        return iter(self._repo.events_after(run_id, after, limit=1_000_000))

    def _follow(self, live: LiveRun, after: int) -> Iterator[tuple[int, str, dict[str, Any]] | None]:
        """A live run's events come from memory: listeners never wait for the database."""
        last = after
        while True:
            with live.changed:
                fresh = live.events[last:] if last < len(live.events) else []
                finished = live.done.is_set()
                if not fresh and not finished:
                    live.changed.wait(timeout=self._settings.heartbeat_s)
                    fresh = live.events[last:]
                    finished = live.done.is_set()
            for event in fresh:
                last = event[0]
                yield event
            if finished and last >= len(live.events):
                return
            if not fresh and not finished:
                yield HEARTBEAT

    # recovery ----------------------------------------------------------------------------------

    def recover(self) -> int:
        """Runs left unfinished by a previous server process: mark them interrupted, keeping
        every message said so far in an answer that says what happened."""
        count = 0
        for run in self._repo.unfinished_runs():
            said = [
                data
                for _, kind, data in self._repo.events_after(run["run_id"], 0, limit=100_000)
                if kind == "message"
            ]
            calls = [LLMCall.from_row(r) for r in self._repo.llm_calls(run["run_id"])]
            usage = summarize(calls)
            user_msg = self._repo.get_message(run["user_msg_id"])
            last = next((m["content"] for m in reversed(said) if m.get("content")), "")
            content = (
                last + "\n\n" if last else ""
            ) + "[autobots: the run was interrupted by a server restart]"
            ended = datetime.now(UTC)
            reply = Message(
                user_id=run["user_id"],
                session_id=run["session_id"],
                role="assistant",
                content=content,
                root_msg_id=run["user_msg_id"],
                metadata={
                    "run_id": run["run_id"],
                    "status": "interrupted",
                    "usage": usage,
                    "timing": {
                        "start": run["started_at"].isoformat(),
                        "end": ended.isoformat(),
                        "duration_s": round((ended - run["started_at"]).total_seconds(), 6),
                    },
                    "messages": said,
                    "question": user_msg.content if user_msg else None,
                },
                timestamp=ended,
            )
            self._repo.finish_run(
                run["run_id"], "interrupted", usage, "the server restarted during the run", reply
            )
            seq = self._repo.last_event_seq(run["run_id"])
            self._repo.add_event(run["run_id"], seq + 1, "final", {"message": reply.model_dump(mode="json")})
            self._repo.add_event(run["run_id"], seq + 2, "status", {"status": "interrupted"})
            count += 1
        return count

    def shutdown(self) -> None:
        with self._lock:
            lives = list(self._live.values())
        for live in lives:
            live.answers.put(None)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._writer.flush()

    # internals ---------------------------------------------------------------------------------

    def _live_run(self, run_id: str) -> LiveRun | None:
        with self._lock:
            return self._live.get(run_id)

    def _set_status(self, live: LiveRun, status: str) -> None:
        if live.status in TERMINAL or live.status == status:
            return
        live.status = status
        if status not in TERMINAL:
            self._repo.set_run_status(live.run_id, status)
        self._emit(live, "status", {"status": status})

    def _emit(self, live: LiveRun, kind: str, data: dict[str, Any]) -> None:
        with live.changed:
            live.seq += 1
            live.events.append((live.seq, kind, data))
            self._writer.put_event(live.run_id, live.seq, kind, data)
            live.changed.notify_all()


class WrongState(ValueError):
    """The run is not in a state where this can be done (a 409)."""


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


__all__ = ["HEARTBEAT", "TERMINAL", "LiveRun", "RunManager", "WrongState"]
