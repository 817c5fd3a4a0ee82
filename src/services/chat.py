"""Answering a user's message: store it, run the workflow, store the answer with its cost.

The order matters to users: a bad config is refused before anything is stored; once the user's
message is stored it stays, whatever happens to the run; the run's LLM calls are stored with it.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai
from autobots.agents.factory import AgentFactory, ExecutorSource, WorkflowConfigError
from autobots.agents.iostream import QuietIOStream
from autobots.agents.transcript import InnerMessage, Transcript
from autobots.agents.workflows import Turn, WorkflowOutcome, build_team, run_workflow
from autobots.llm import endpoints
from autobots.llm.usage import LLMCall, RunCancelled, UsageRecorder, recording
from autobots.schemas.chat import Message, Session
from autobots.schemas.workflow import AgentWorkFlowConfig, LLMConfig
from autobots.settings import Settings
from autobots.storage.repository import Conflict, Repository
from autogen.io.base import IOStream


class NotFound(LookupError):
    pass


class BadRequest(ValueError):
    pass


class LLMEndpointError(RuntimeError):
    """The LLM endpoint failed; the user's message and the failed run are stored."""

    def __init__(self, message: str, run_id: str, user_message: Message) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.user_message = user_message


@dataclass
class RunObserver:
    """Callbacks for watching a run as it happens (the CLI prints, the live API streams)."""

    on_message: Callable[[InnerMessage], None] | None = None
    on_call: Callable[[LLMCall], None] | None = None


_KEY_PATTERN = re.compile(r"(sk-|key-)[A-Za-z0-9_\-*]{6,}")


def redact(text: str, secrets: list[str]) -> str:
    """Remove API keys from text that may reach a user or a log (provider errors quote keys)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub(r"\1***", text)


class ChatService:
    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        executors: Callable[[str, str], ExecutorSource] | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self._executors = executors
        # Clients send the same flow_config with every message; validate each one once.
        self._validated: OrderedDict[str, None] = OrderedDict()
        self._validated_lock = threading.Lock()

    # the request's flow ------------------------------------------------------------------------

    def _resolve_llm(self, config: LLMConfig) -> endpoints.ResolvedLLMConfig:
        return endpoints.resolve(config, self.settings)

    def _secrets(self, flow: AgentWorkFlowConfig) -> list[str]:
        found = [self.settings.openai_api_key.get_secret_value()] if self.settings.openai_api_key else []
        specs = [a.agent for a in flow.agents] + flow.receivers() + flow.senders()
        while specs:
            spec = specs.pop()
            specs.extend(spec.agents)
            if spec.config.llm_config:
                found.extend(e.api_key for e in spec.config.llm_config.config_list if e.api_key)
        return found

    def validate_flow(self, flow: AgentWorkFlowConfig) -> None:
        """Build the team once without running it: a config that cannot run is a 400."""
        # Keys change which endpoints are usable; they enter the cache key only as a digest.
        key = hashlib.sha256(
            (flow.model_dump_json() + "\0" + "\0".join(sorted(self._secrets(flow)))).encode()
        ).hexdigest()
        with self._validated_lock:
            if key in self._validated:
                self._validated.move_to_end(key)
                return
        recorder = UsageRecorder(self.settings.limits)
        factory = AgentFactory(recorder, Transcript(recorder), self._resolve_llm, _no_execution)
        with IOStream.set_default(QuietIOStream()):
            build_team(flow, factory)
        with self._validated_lock:
            self._validated[key] = None
            while len(self._validated) > 512:
                self._validated.popitem(last=False)

    # answering ---------------------------------------------------------------------------------

    def send_message(
        self,
        message: Message,
        flow: AgentWorkFlowConfig | None,
        observer: RunObserver | None = None,
        run_id: str | None = None,
    ) -> Message:
        if message.role != "user":
            raise BadRequest("message.role must be 'user' for a message to answer")
        session_id = message.session_id or str(uuid.uuid4())
        session = self.repo.get_session(message.user_id, session_id)
        if session is None and self.repo.session_owner(session_id) is not None:
            raise NotFound(f"session {session_id} not found")
        if flow is None:
            if session is None:
                raise BadRequest("flow_config is required for a new session")
            flow = session.flow_config
        try:
            self.validate_flow(flow)
        except WorkflowConfigError as exc:
            raise BadRequest(str(exc)) from exc

        message = message.model_copy(update={"session_id": session_id})
        earlier = self.repo.load_messages(message.user_id, session_id) if session is not None else []
        keep = self.settings.limits.history_messages
        history = [Turn(m.role, m.content) for m in earlier[-keep:]] if keep else []
        new_session = (
            Session(session_id=session_id, user_id=message.user_id, flow_config=flow)
            if session is None
            else None
        )
        run_id = run_id or str(uuid.uuid4())
        try:
            self.repo.start_run(run_id, message, new_session)
        except Conflict as exc:
            raise BadRequest(str(exc)) from exc
        return self._run(run_id, message, flow, history, observer or RunObserver())

    def _run(
        self,
        run_id: str,
        message: Message,
        flow: AgentWorkFlowConfig,
        history: list[Turn],
        observer: RunObserver,
    ) -> Message:
        recorder = UsageRecorder(self.settings.limits, on_call=observer.on_call)
        transcript = Transcript(recorder, on_message=observer.on_message)
        executors = self._executors(run_id, message.session_id or "") if self._executors else None
        factory = AgentFactory(recorder, transcript, self._resolve_llm, executors)
        started = datetime.now(UTC)
        try:
            with recording(recorder), IOStream.set_default(QuietIOStream()):
                outcome = run_workflow(flow, message.content, history, factory)
        except (openai.APIError, TimeoutError) as exc:
            text = redact(f"the LLM endpoint failed: {_describe(exc)}", self._secrets(flow))
            self.repo.finish_run(
                run_id, "failed", [c.row() for c in recorder.calls], recorder.summary(), text
            )
            raise LLMEndpointError(text, run_id, message) from exc
        except RunCancelled:
            outcome = WorkflowOutcome(_last_said(transcript))
            status = "cancelled"
        except BaseException as exc:
            error = redact(f"{type(exc).__name__}: {exc}", self._secrets(flow))
            self.repo.finish_run(
                run_id, "failed", [c.row() for c in recorder.calls], recorder.summary(), error
            )
            raise
        else:
            status = "completed"
        ended = datetime.now(UTC)

        answer = outcome.answer or "(the agents gave no answer)"
        limit = None
        if outcome.limit is not None:
            limit = {"kind": outcome.limit.kind, "detail": outcome.limit.detail}
            answer = f"{answer}\n\n[autobots: the run stopped early: {outcome.limit.detail}]"
        calls = recorder.calls
        usage = recorder.summary()
        metadata: dict[str, Any] = {
            "run_id": run_id,
            "status": status,
            "workflow": {"name": flow.name, "type": flow.type.value},
            "usage": usage,
            "timing": {
                "start": started.isoformat(),
                "end": ended.isoformat(),
                "duration_s": round((ended - started).total_seconds(), 6),
            },
            "messages": [m.as_dict() for m in transcript.messages],
            "models": {
                "requested": factory.requested_models,
                "answered": sorted({c.model for c in calls if not c.error}),
            },
            "limit_reached": limit,
            "parts": outcome.parts,
        }
        reply = Message(
            user_id=message.user_id,
            session_id=message.session_id,
            role="assistant",
            content=answer,
            root_msg_id=message.msg_id,
            metadata=metadata,
            timestamp=ended,
        )
        self.repo.finish_run(run_id, status, [c.row() for c in calls], usage, None, reply)
        return reply


def _no_execution(_cfg: Any) -> None:
    """Validation builds agents without opening sandboxes."""
    return None


def _last_said(transcript: Transcript) -> str:
    said = [m.content for m in transcript.messages if m.content]
    return said[-1] if said else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APIConnectionError):
        return f"could not connect ({exc.__cause__ or exc})"
    return str(exc) or type(exc).__name__
