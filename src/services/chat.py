"""Answering a user's message: store it, run the workflow, store the answer with its cost.

The order matters to users: a bad config is refused before anything is stored (`prepare`); once
the user's message is stored it stays, whatever happens to the run (`execute`); the run's LLM
calls are stored with its outcome. A run can be stopped from another thread (`RunControl`): the
first of "finished" and "cancelled" to arrive decides what is stored.

What a request's config makes the server call is checked in `prepare` too: every `base_url` (and
every stored credential's) against the outbound rule (`llm/outbound.py`), and every `credential`
it names against the user's own. A session keeps its config as sent (credential references, no
keys); each run resolves the references again (`_runtime_flow`), so a follow-up without
`flow_config` uses the same credential. An endpoint's failure reaches the user as its HTTP status
and a short, cleaned reason, never the body it sent (`_describe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import openai
from autogen.io.base import IOStream

from ..agents.factory import AgentFactory, WorkflowConfigError
from ..agents.iostream import RunIOStream
from ..agents.transcript import InnerMessage, Transcript
from ..agents.workflows import Turn, WorkflowOutcome, build_team, run_workflow
from ..execution import ExecutionUnavailable
from ..llm import endpoints
from ..llm.embedded import EmbeddedModelError, is_embedded
from ..llm.outbound import OutboundPolicy, OutboundRefused
from ..llm.usage import LLMCall, RunCancelled, RunLimitExceeded, UsageRecorder, recording
from ..schemas.chat import Message, Session
from ..schemas.workflow import (
    AgentConfig,
    AgentWorkFlowConfig,
    CodeExecutionObject,
    LLMConfig,
    ModelEndpoint,
)
from ..settings import Settings
from ..storage.repository import Conflict, Repository
from .credentials import CredentialService, UsableCredential
from .errors import BadRequest, DependencyUnavailable, LLMEndpointError, RunFailed
from .executors import RunExecutors
from .limits import UserLimits


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


_KEY_PATTERN = re.compile(r"(sk-|key-)[A-Za-z0-9_\-*]{6,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}")
_KEY_PARAM = re.compile(r"(?i)\b(api[_-]?key|key|token|secret|password)=[^&\s\"']+")
_MARKUP = re.compile(r"<[^>]{0,2000}>")
REASON_MAX_CHARS = 200


def redact(text: str, secrets: list[str]) -> str:
    """Remove API keys from text that may reach a user or a log (provider errors quote keys)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1 ***", text)
    text = _KEY_PARAM.sub(r"\1=***", text)
    return _KEY_PATTERN.sub(r"\1***", text)


def clean_reason(text: str, secrets: list[str], limit: int = REASON_MAX_CHARS) -> str:
    """A provider's text made fit to show: keys masked, markup and control characters gone,
    whitespace collapsed, at most `limit` characters."""
    text = redact(text, secrets)
    text = _MARKUP.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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
        # Stored provider keys that configs name; without it a config naming one is a 400.
        self._credentials = credentials
        self._outbound = OutboundPolicy.from_settings(settings)
        # Where each LLM call is stored as it completes (a batching writer in the server).
        self._store_call: CallStore = call_store or repo.add_llm_call
        # Clients send the same flow_config with every message; validate each one once.
        self._validated: OrderedDict[str, None] = OrderedDict()
        self._validated_lock = threading.Lock()

    # the request's flow ------------------------------------------------------------------------

    def _resolve_llm(self, config: LLMConfig, run_id: str) -> endpoints.ResolvedLLMConfig:
        return endpoints.resolve(config, self.settings, run_tag=run_id)

    def _check_llm(self, config: LLMConfig) -> endpoints.ResolvedLLMConfig:
        return endpoints.resolve(config, self.settings, start_embedded=False)

    def _secrets(self, flow: AgentWorkFlowConfig) -> list[str]:
        found = [self.settings.openai_api_key.get_secret_value()] if self.settings.openai_api_key else []
        specs = [a.agent for a in flow.agents] + flow.receivers() + flow.senders()
        while specs:
            spec = specs.pop()
            specs.extend(spec.agents)
            if spec.config.llm_config:
                found.extend(e.api_key for e in spec.config.llm_config.config_list if e.api_key)
        return found

    def _runtime_flow(self, user_id: str, flow: AgentWorkFlowConfig) -> AgentWorkFlowConfig:
        """The config as it will run for `user_id`: each `credential` resolved to the user's
        stored key and endpoint, and every endpoint it would call checked against the outbound
        rule. Anything refused is a 400 naming the field, before anything is stored."""
        for path, entry in flow.endpoints():
            if entry.had_userinfo:
                raise BadRequest(
                    f"{path}.base_url: must not carry credentials (user:password@): store the key with "
                    'POST /api/credentials and name it in the entry as "credential"'
                )
        names = {e.credential for _, e in flow.endpoints() if e.credential is not None}
        stored = self._usable_credentials(user_id, names)
        runtime = flow.model_copy(deep=True) if names else flow
        for path, entry in runtime.endpoints():
            field_name = f"{path}.base_url"
            if entry.credential is not None:
                field_name = self._apply_credential(path, entry, stored.get(entry.credential))
            if entry.base_url is None or is_embedded(entry.model):
                continue  # the server's own endpoint, or the embedded model (which ignores base_url)
            try:
                self._outbound.check(entry.base_url)
            except OutboundRefused as exc:
                raise BadRequest(f"{field_name}: {exc}") from exc
        return runtime

    def _usable_credentials(self, user_id: str, names: set[str]) -> dict[str, UsableCredential]:
        if not names:
            return {}
        if self._credentials is None:
            raise BadRequest("stored credentials are available through the server's API only")
        return self._credentials.usable(user_id, names)

    @staticmethod
    def _apply_credential(path: str, entry: ModelEndpoint, credential: UsableCredential | None) -> str:
        """Give the entry the credential's key and endpoint; returns the field to blame for the
        endpoint (the credential's, when it brings one)."""
        if credential is None:
            raise BadRequest(
                f"{path}.credential: you have no stored credential named '{entry.credential}' "
                "(store one with POST /api/credentials; GET /api/credentials lists yours)"
            )
        if (
            credential.base_url
            and entry.base_url
            and entry.base_url.rstrip("/") != credential.base_url.rstrip("/")
        ):
            raise BadRequest(
                f"{path}.base_url: the credential '{credential.name}' has its own base_url: leave "
                "base_url out of the entry"
            )
        entry.api_key = credential.api_key
        if credential.base_url:
            entry.base_url = credential.base_url
            return f"{path}.credential ('{credential.name}')"
        return f"{path}.base_url"

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
        factory = AgentFactory(recorder, Transcript(recorder), self._check_llm, self._check_execution)
        with IOStream.set_default(RunIOStream()):
            build_team(flow, factory)
        with self._validated_lock:
            self._validated[key] = None
            while len(self._validated) > 512:
                self._validated.popitem(last=False)

    def _check_execution(self, cfg: AgentConfig) -> None:
        """Validation builds agents without opening sandboxes, but refuses what the server's
        settings never allow, so that such a request is a 400 before anything is stored."""
        spec = cfg.code_execution_config
        image = spec.image if isinstance(spec, CodeExecutionObject) else None
        if image is not None and not self.settings.code_execution.image_allowed(image):
            raise WorkflowConfigError(
                f"agent '{cfg.name}': sandbox image '{image}' is not allowed on this server: "
                f"use the default image '{self.settings.code_execution.image}' or ask the operator "
                "to add it to code_execution.allowed_images"
            )
        return None

    # answering ---------------------------------------------------------------------------------

    def prepare(self, message: Message, flow: AgentWorkFlowConfig | None) -> PreparedRun:
        """Check the request, then store the question, the run (and a new session) together."""
        if message.role != "user":
            raise BadRequest("message.role must be 'user' for a message to answer")
        if self._limits is not None:
            self._limits.check_new_run(message.user_id)
        session_id = message.session_id or str(uuid.uuid4())
        # Session ids are the user's own: another user's session of the same id is another session.
        session = self.repo.get_session(message.user_id, session_id)
        if flow is None:
            if session is None:
                raise BadRequest("flow_config is required for a new session")
            flow = session.flow_config
        runtime = self._runtime_flow(message.user_id, flow)
        try:
            self.validate_flow(runtime)
        except WorkflowConfigError as exc:
            raise BadRequest(str(exc)) from exc

        message = message.model_copy(update={"session_id": session_id})
        earlier = (
            self.repo.last_messages(message.user_id, session_id, self.settings.limits.history_messages)
            if session is not None
            else []
        )
        keep = self.settings.limits.history_messages
        history = [Turn(m.role, m.content) for m in earlier[-keep:]] if keep else []
        new_session = (
            Session(session_id=session_id, user_id=message.user_id, flow_config=flow)
            if session is None
            else None
        )
        run_id = str(uuid.uuid4())
        try:
            self.repo.start_run(run_id, message, new_session)
        except Conflict as exc:
            raise BadRequest(str(exc)) from exc
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
            recorder, transcript, lambda config: self._resolve_llm(config, run.run_id), executors
        )
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
            reason = _describe(exc, self._secrets(run.runnable))
            self._fail(run, control, f"the LLM endpoint failed: {reason}", LLMEndpointError)
        except (ExecutionUnavailable, EmbeddedModelError) as exc:
            self._fail(run, control, str(exc), DependencyUnavailable)
        except WorkflowConfigError as exc:
            self._fail(run, control, str(exc), RunFailed)
        except Exception as exc:
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
            ended = datetime.now(UTC)
            usage = recorder.summary() if recorder is not None else None
            answer = outcome.answer or (
                "(the run was cancelled)" if status == "cancelled" else "(the agents gave no answer)"
            )
            limit = None
            if outcome.limit is not None:
                limit = {"kind": outcome.limit.kind, "detail": outcome.limit.detail}
                answer = f"{answer}\n\n[autobots: the run stopped early: {outcome.limit.detail}]"
            elif status == "cancelled":
                answer = f"{answer}\n\n[autobots: the run was cancelled]"
            transcript = control.transcript
            metadata: dict[str, Any] = {
                "run_id": run.run_id,
                "status": status,
                "workflow": {"name": run.flow.name, "type": run.flow.type.value},
                "usage": usage,
                "timing": _timing(control.started, ended),
                "messages": [m.as_dict() for m in transcript.messages] if transcript else [],
                "models": {
                    "requested": control.requested_models,
                    "answered": sorted({c.model for c in calls if not c.error}),
                    "notes": control.notes,
                },
                "limit_reached": limit,
                "parts": outcome.parts,
                "files": files or [],
            }
            reply = Message(
                user_id=run.message.user_id,
                session_id=run.message.session_id,
                role="assistant",
                content=answer,
                root_msg_id=run.message.msg_id,
                metadata=metadata,
                timestamp=ended,
            )
            self.repo.finish_run(run.run_id, status, usage, None, reply)
            control.finished, control.reply = True, reply
            return reply

    def _fail(self, run: PreparedRun, control: RunControl, text: str, kind: type[RunFailed]) -> None:
        text = redact(text, self._secrets(run.runnable))
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


def _timing(start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "duration_s": round((end - start).total_seconds(), 6),
    }


def _last_said(transcript: Transcript) -> str:
    said = [m.content for m in transcript.messages if m.content]
    return said[-1] if said else ""


def _describe(exc: BaseException, secrets: list[str]) -> str:
    """What the user is told of an endpoint's failure: the HTTP status and a short reason (the
    provider's JSON `error.message` when it gave one, cleaned; else the status's name). Never the
    body itself: an endpoint's answer may hold anything, a key or another service's data."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {clean_reason(_provider_reason(exc), secrets)}"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return (
            "no answer in time: the endpoint did not answer within the call's timeout "
            "(llm_config.timeout) or the run's time left (limits.max_run_seconds)"
        )
    if isinstance(exc, openai.APIConnectionError):
        where = ""
        with contextlib.suppress(RuntimeError, AttributeError):
            where = f" to {exc.request.url.host}" + (
                f":{exc.request.url.port}" if exc.request.url.port else ""
            )
        return f"could not connect{where} ({clean_reason(str(exc.__cause__ or exc), secrets, 120)})"
    return clean_reason(str(exc) or type(exc).__name__, secrets)


def _provider_reason(exc: openai.APIStatusError) -> str:
    body = exc.body  # the JSON body's `error` object when there is one, else the whole body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message.strip():
            return message
    try:
        return HTTPStatus(exc.status_code).phrase
    except ValueError:
        return "the endpoint gave no reason"
