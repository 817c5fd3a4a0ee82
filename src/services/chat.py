"""Answering a user's message: store it, run the workflow, store the answer with its cost.

The order matters to users: a bad config is refused before anything is stored (`prepare`); once
the user's message is stored it stays, whatever happens to the run (`execute`); the run's LLM
calls are stored with its outcome. A run can be stopped from another thread (`RunControl`): the
first of "finished" and "cancelled" to arrive decides what is stored.

What a request's config makes the server call, and whether it can run at all, is checked in
`prepare` by the `TeamGate` (`teams.py`). An endpoint's failure reaches the user as its HTTP status
and a short, cleaned reason, never the body it sent (`provider_errors.py`).
"""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
from autogen.io.base import IOStream

from ..agents.factory import AgentFactory, WorkflowConfigError
from ..agents.iostream import RunIOStream
from ..agents.transcript import InnerMessage, Transcript
from ..agents.workflows import Turn, WorkflowOutcome, run_workflow
from ..execution import ExecutionUnavailable
from ..llm.embedded import EmbeddedModelError
from ..llm.usage import LLMCall, RunCancelled, RunLimitExceeded, UsageRecorder, recording
from ..schemas.chat import Message, Session
from ..schemas.workflow import (
    AgentWorkFlowConfig,
)
from ..schemas.workflows import WorkflowRef
from ..settings import Settings
from ..storage.repository import Conflict, Repository, TooManyLiveRuns
from . import answers
from .credentials import CredentialService
from .errors import BadRequest, DependencyUnavailable, LLMEndpointError, RunFailed
from .executors import RunExecutors
from .limits import UserLimits
from .provider_errors import describe_failure, redact
from .teams import TeamGate, run_history, skill_library


@dataclass
class RunObserver:
    """Callbacks for watching a run as it happens (the CLI prints, live runs stream events)."""

    on_message: Callable[[InnerMessage], None] | None = None
    on_call: Callable[[LLMCall], None] | None = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    # Asked when an agent wants a human's reply; returns the reply ("" = none).
    ask_human: Callable[[str], str] | None = None


@dataclass
class PreparedRun:
    run_id: str
    message: Message
    # The config as stored with the session (credential references, no keys).
    flow: AgentWorkFlowConfig
    history: list[Turn]
    # The config as it runs: credentials resolved to keys (in memory only). None: `flow` as is.
    runtime: AgentWorkFlowConfig | None = field(default=None, repr=False)

    @property
    def runnable(self) -> AgentWorkFlowConfig:
        return self.runtime or self.flow


@dataclass
class RunControl:
    """What a running run shares with whoever may cancel it."""

    recorder: UsageRecorder | None = None
    transcript: Transcript | None = None
    executors: RunExecutors | None = None
    # Stop the run's LLM calls in flight (the factory's list, filled as agents are built).
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    requested_models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    reply: Message | None = None

    def cancel(self) -> None:
        if self.recorder is not None:
            self.recorder.cancel()
        if self.executors is not None:
            self.executors.close()
        for stop in list(self.stoppers):
            stop()


# A run with this little of its wall time left has reached its cap.
TIME_UP_S = 0.25

CallStore = Callable[[str, str, dict[str, Any]], None]


class ChatService:
    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        call_store: CallStore | None = None,
        limits: UserLimits | None = None,
        credentials: CredentialService | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self._limits = limits
        self.teams = TeamGate(settings, credentials, skills=skill_library(repo), history=run_history(repo))
        # Where each LLM call is stored as it completes (a batching writer in the server).
        self._store_call: CallStore = call_store or repo.add_llm_call

    # answering ---------------------------------------------------------------------------------

    def prepare(
        self,
        message: Message,
        flow: AgentWorkFlowConfig | None,
        interactive: bool = True,
        workflow: WorkflowRef | None = None,
        history: list[Turn] | None = None,
        webhook: str | None = None,
    ) -> PreparedRun:
        """Check the request, then store the question, the run (and a new session) together.
        `interactive`: whether a human may be asked during the run (stored for its worker).
        `workflow`: the saved workflow `flow` is (recorded with the run and a new session; a
        session's follow-up without a flow records the session's). `history`: the earlier turns
        as the client holds them (the OpenAI-compatible endpoint), instead of the session's.
        `webhook`: a URL (checked) to tell of the run's end, stored with the run."""
        if message.role != "user":
            raise BadRequest("message.role must be 'user' for a message to answer")
        if self._limits is not None:
            self._limits.check_new_run(message.user_id)
        session_id = message.session_id or str(uuid.uuid4())
        # Session ids are the user's own: another user's session of the same id is another session.
        # A session id made just now names no stored session: no read for it.
        session = self.repo.get_session(message.user_id, session_id) if message.session_id else None
        if flow is None:
            if session is None:
                raise BadRequest("flow_config (or workflow_id) is required for a new session")
            flow = session.flow_config
            if workflow is None and session.workflow_id is not None and session.workflow_version is not None:
                workflow = WorkflowRef(session.workflow_id, session.workflow_version)
        runtime = self.teams.runtime_flow(message.user_id, flow)
        try:
            self.teams.validate_flow(runtime)
        except WorkflowConfigError as exc:
            raise BadRequest(str(exc)) from exc

        message = message.model_copy(update={"session_id": session_id})
        keep = self.settings.limits.history_messages
        if history is None:
            earlier = (
                self.repo.last_messages(message.user_id, session_id, self.settings.limits.history_messages)
                if session is not None
                else []
            )
            history = [Turn(m.role, m.content) for m in earlier[-keep:]] if keep else []
        else:
            history = history[-keep:] if keep else []
        new_session = (
            Session(
                session_id=session_id,
                user_id=message.user_id,
                flow_config=flow,
                workflow_id=workflow.workflow_id if workflow else None,
                workflow_version=workflow.version if workflow else None,
            )
            if session is None
            else None
        )
        run_id = str(uuid.uuid4())
        max_live = self._limits.settings.live_runs if self._limits is not None else 0
        try:
            self.repo.start_run(
                run_id,
                message,
                new_session,
                flow=flow.model_dump(mode="json"),
                max_live=max_live,
                interactive=interactive,
                workflow=workflow,
                webhook=webhook,
            )
        except Conflict as exc:
            raise BadRequest(str(exc)) from exc
        except TooManyLiveRuns as exc:
            assert self._limits is not None
            raise self._limits.live_runs_exceeded() from exc
        return PreparedRun(run_id, message, flow, history, runtime=runtime)

    def send_message(
        self, message: Message, flow: AgentWorkFlowConfig | None, observer: RunObserver | None = None
    ) -> Message:
        """Prepare and run in this thread (the CLI's way)."""
        return self.execute(self.prepare(message, flow), observer or RunObserver(), RunControl())

    def execute(self, run: PreparedRun, observer: RunObserver, control: RunControl) -> Message:
        """Run the workflow; returns the stored answer, or raises RunFailed (stored as failed)."""
        session_id = run.message.session_id or ""

        user_id = run.message.user_id

        def on_call(call: LLMCall) -> None:
            self._store_call(run.run_id, session_id, {**call.row(), "user_id": user_id})
            if observer.on_call is not None:
                observer.on_call(call)

        guard = self._limits.run_guard(user_id, run.run_id) if self._limits is not None else None
        recorder = UsageRecorder(self.settings.limits, on_call=on_call, guard=guard)
        transcript = Transcript(recorder, on_message=observer.on_message)
        executors = RunExecutors(
            self.settings.code_execution, run.run_id, session_id, observer.on_event, owner=user_id
        )
        factory = AgentFactory(
            recorder, transcript, lambda config: self.teams.resolve_llm(config, run.run_id), executors
        )
        factory.tools = self.teams.toolbox(user_id, run.run_id, executors.for_tools, observer.on_event).attach
        with control.lock:
            control.recorder, control.transcript, control.executors = recorder, transcript, executors
            control.stoppers = factory.stoppers
            cancelled_early = control.finished
        if cancelled_early:
            recorder.cancel()
        stream = RunIOStream(ask_human=observer.ask_human, on_event=observer.on_event, transcript=transcript)
        try:
            with recording(recorder), IOStream.set_default(stream):
                outcome = run_workflow(run.runnable, run.message.content, run.history, factory)
            status = "completed"
        except RunCancelled:
            outcome, status = WorkflowOutcome(_last_said(transcript)), "cancelled"
        except (openai.APIError, TimeoutError) as exc:
            if isinstance(exc, openai.APITimeoutError | TimeoutError) and recorder.remaining_s <= TIME_UP_S:
                # The call ran out of the run's own time (no request outlasts the cap): that is
                # the wall-time cap ending the run, as its timer would a moment later, not a failure.
                outcome, status = WorkflowOutcome(_last_said(transcript), recorder.expire()), "completed"
            else:
                reason = describe_failure(exc, self.teams.secrets(run.runnable))
                self._fail(run, control, f"the LLM endpoint failed: {reason}", LLMEndpointError)
        except (ExecutionUnavailable, EmbeddedModelError) as exc:
            self._fail(run, control, str(exc), DependencyUnavailable)
        except WorkflowConfigError as exc:
            self._fail(run, control, str(exc), RunFailed)
        except Exception as exc:
            if _raised_reading_an_answer(exc):  # an endpoint that answered with no chat completion
                self._fail(
                    run,
                    control,
                    "the LLM endpoint failed: its answer was not an OpenAI chat completion",
                    LLMEndpointError,
                )
            self._fail(run, control, f"{type(exc).__name__}: {exc}", RunFailed)
        finally:
            executors.close()
            control.requested_models = factory.requested_models
            control.notes = factory.notes
        return self.finish(run, control, outcome, status, executors.files())

    def finish(
        self,
        run: PreparedRun,
        control: RunControl,
        outcome: WorkflowOutcome,
        status: str,
        files: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Store the answer once: whoever comes second (a late worker after a cancel) gets the
        stored answer. Calls are stored as they complete, so a late one still counts."""
        with control.lock:
            recorder = control.recorder
            calls = recorder.calls if recorder is not None else []
            if control.finished and control.reply is not None:
                return control.reply
            usage = recorder.summary() if recorder is not None else None
            transcript = control.transcript
            limit = outcome.limit
            reply = answers.build(
                answers.Answer(
                    run_id=run.run_id,
                    user_id=run.message.user_id,
                    session_id=run.message.session_id,
                    question_id=run.message.msg_id,
                    status=status,
                    text=outcome.answer,
                    started=control.started,
                    ended=datetime.now(UTC),
                    workflow=workflow_of(run.flow),
                    usage=usage,
                    messages=[m.as_dict() for m in transcript.messages] if transcript else [],
                    requested_models=control.requested_models,
                    answered_models=sorted({c.model for c in calls if not c.error}),
                    model_notes=control.notes,
                    limit=None if limit is None else (limit.kind, limit.detail),
                    parts=outcome.parts,
                    files=files or [],
                )
            )
            self.repo.finish_run(run.run_id, status, usage, None, reply)
            control.finished, control.reply = True, reply
            return reply

    def _fail(self, run: PreparedRun, control: RunControl, text: str, kind: type[RunFailed]) -> None:
        text = redact(text, self.teams.secrets(run.runnable))
        with control.lock:
            recorder = control.recorder
            if not control.finished:
                usage = recorder.summary() if recorder is not None else None
                self.repo.finish_run(run.run_id, "failed", usage, text)
                control.finished = True
        raise kind(text, run.run_id, run.message)

    def cancel(self, run: PreparedRun, control: RunControl) -> Message | None:
        """Stop the run now and store what was said; the worker thread finds it finished."""
        with control.lock:
            if control.finished:
                return control.reply
            if control.recorder is None:  # never started: nothing was said
                control.finished = True
        return self._stop_now(run, control, None)

    def stop_at_time_cap(self, run: PreparedRun, control: RunControl) -> Message | None:
        """The run's wall-time cap passed while an LLM call or a code block was still running:
        end the run now, as any cap does (what was said, and a note); the worker, when its call
        returns, finds it finished. None when the run already ended or never started."""
        with control.lock:
            if control.finished or control.recorder is None:
                return control.reply
            limit = control.recorder.expire()
        return self._stop_now(run, control, limit)

    def _stop_now(self, run: PreparedRun, control: RunControl, limit: RunLimitExceeded | None) -> Message:
        control.cancel()  # the pending call is abandoned; sandboxes are killed
        transcript = control.transcript
        said = _last_said(transcript) if transcript is not None else ""
        files = control.executors.files() if control.executors is not None else []
        status = "cancelled" if limit is None else "completed"
        return self.finish(run, control, WorkflowOutcome(said, limit), status, files)


def _raised_reading_an_answer(exc: BaseException) -> bool:
    """Whether the error came from inside the OpenAI SDK or AutoGen's client while it read an
    endpoint's answer (a body that is no chat completion breaks them with a TypeError or an
    AttributeError): that is the endpoint's failure, not the server's."""
    if not isinstance(exc, TypeError | AttributeError | KeyError | ValueError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or frames[-1].filename.startswith(_OWN_CODE):
        return False  # raised by this server's own code: a bug here, not the endpoint's answer
    return any("/openai/" in f.filename or "/autogen/oai/" in f.filename for f in frames)


_OWN_CODE = str(Path(__file__).resolve().parents[1])


def workflow_of(flow: AgentWorkFlowConfig) -> dict[str, Any]:
    return {"name": flow.name, "type": flow.type.value}


def _last_said(transcript: Transcript) -> str:
    said = [m.content for m in transcript.messages if m.content]
    return said[-1] if said else ""
