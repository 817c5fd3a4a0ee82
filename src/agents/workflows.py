"""The three workflow types, run on fresh agents: autonomous, sequential and groupchat.

A run either ends normally, or stops on a limit (its answer then says so and keeps what was said);
any other exception propagates to the caller, which records the failure.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from autogen import ConversableAgent

from ..llm.usage import RunLimitExceeded
from ..schemas.workflow import (
    AgentFlowSpec,
    AgentType,
    AgentWorkFlowConfig,
    SummaryMethod,
    WorkflowType,
)
from .factory import AgentFactory, WorkflowConfigError


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of the session, given to the agents as context."""

    role: str  # "user" or "assistant"
    content: str


@dataclass
class WorkflowOutcome:
    answer: str
    limit: RunLimitExceeded | None = None
    parts: dict[str, str] = field(default_factory=dict)


def run_workflow(
    flow: AgentWorkFlowConfig, task: str, history: Sequence[Turn], factory: AgentFactory
) -> WorkflowOutcome:
    runner: Callable[[AgentWorkFlowConfig, str, Sequence[Turn], AgentFactory], WorkflowOutcome] = {
        WorkflowType.autonomous: _autonomous,
        WorkflowType.sequential: _sequential,
        WorkflowType.groupchat: _groupchat,
    }[flow.type]
    return runner(flow, task, history, factory)


def _sender(flow: AgentWorkFlowConfig, factory: AgentFactory) -> ConversableAgent:
    senders = flow.senders()
    if not senders:
        return factory.default_user_proxy()
    if senders[0].type is AgentType.groupchat:
        raise WorkflowConfigError("the sender must be a userproxy or assistant agent, not a groupchat")
    return factory.build(senders[0])


def _chat(
    sender: ConversableAgent,
    receiver: ConversableAgent,
    message: str,
    factory: AgentFactory,
    history: Sequence[Turn] = (),
    carryover: list[str] | None = None,
    summary_method: SummaryMethod = SummaryMethod.last,
) -> tuple[str, str, RunLimitExceeded | None]:
    """One two-party chat: returns its final answer, its summary and the limit that stopped it."""
    with factory.transcript.chat(sender.name) as scope:
        if history:
            _replay(sender, receiver, history, factory)
        kwargs: dict[str, Any] = {"message": message, "clear_history": not history}
        if carryover:
            kwargs["carryover"] = carryover
        if summary_method is SummaryMethod.reflection_with_llm:
            kwargs["summary_method"] = "reflection_with_llm"
        else:
            kwargs["summary_method"] = lambda *_args, **_kw: scope.final_answer()
        try:
            result = sender.initiate_chat(receiver, **kwargs)
        except RunLimitExceeded as hit:
            return scope.final_answer(), scope.final_answer(), hit
        return scope.final_answer(), str(result.summary or scope.final_answer()), None


def _replay(
    sender: ConversableAgent, receiver: ConversableAgent, history: Sequence[Turn], factory: AgentFactory
) -> None:
    """Give fresh agents the session's earlier turns, as if they had been said to them."""
    with factory.transcript.muted():
        for turn in history:
            if turn.role == "user":
                sender.send(turn.content, receiver, request_reply=False, silent=True)
            else:
                receiver.send(turn.content, sender, request_reply=False, silent=True)


def _history_preface(task: str, history: Sequence[Turn]) -> str:
    """Earlier turns as text, for team chats where replaying into every member is not possible."""
    if not history:
        return task
    lines = [f"{t.role}: {t.content}" for t in history]
    return "Earlier in this conversation:\n" + "\n\n".join(lines) + f"\n\nNow: {task}"


def _autonomous(
    flow: AgentWorkFlowConfig, task: str, history: Sequence[Turn], factory: AgentFactory
) -> WorkflowOutcome:
    receivers = flow.receivers()

    def one(spec: AgentFlowSpec) -> tuple[str, RunLimitExceeded | None]:
        sender = _sender(flow, factory)  # each receiver gets its own copy of the sender
        receiver = factory.build(spec)
        if spec.type is AgentType.groupchat:
            answer, _, hit = _chat(sender, receiver, _history_preface(task, history), factory)
        else:
            answer, _, hit = _chat(sender, receiver, task, factory, history=history)
        return answer, hit

    if len(receivers) == 1:
        answer, hit = one(receivers[0])
        return WorkflowOutcome(answer, hit, {receivers[0].agent_name: answer})

    # Receivers chat at the same time; each thread carries the run's context (its recorder).
    with ThreadPoolExecutor(max_workers=len(receivers), thread_name_prefix="receiver") as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, spec) for spec in receivers]
        results = [f.result() for f in futures]
    parts = {spec.agent_name: answer for spec, (answer, _) in zip(receivers, results, strict=True)}
    hit = next((h for _, h in results if h is not None), None)
    combined = "\n\n".join(f"### {name}\n{answer or '(no answer)'}" for name, answer in parts.items())
    return WorkflowOutcome(combined, hit, parts)


def _sequential(
    flow: AgentWorkFlowConfig, task: str, history: Sequence[Turn], factory: AgentFactory
) -> WorkflowOutcome:
    sender = _sender(flow, factory)
    summaries: list[str] = []
    parts: dict[str, str] = {}
    answer = ""
    message = _history_preface(task, history)
    receivers = flow.receivers()
    for index, spec in enumerate(receivers):
        receiver = factory.build(spec)
        # The last chat's summary is handed to nobody: an LLM reflection on it would be a call
        # whose answer is thrown away.
        last = index == len(receivers) - 1
        answer, summary, hit = _chat(
            sender,
            receiver,
            message,
            factory,
            carryover=list(summaries),
            summary_method=SummaryMethod.last if last else flow.summary_method,
        )
        parts[spec.agent_name] = answer
        if hit is not None:
            return WorkflowOutcome(answer, hit, parts)
        summaries.append(summary)
    return WorkflowOutcome(answer, None, parts)


def _groupchat(
    flow: AgentWorkFlowConfig, task: str, history: Sequence[Turn], factory: AgentFactory
) -> WorkflowOutcome:
    members = flow.groupchat_members()
    proxies = [m for m in members if m.type is AgentType.userproxy]
    if proxies:
        # The team's own user proxy starts the chat as a member; it is built with the others.
        manager = factory.group_manager(flow.groupchat_manager(), members)
        # GroupChat types its agents as Agent; the factory built them all as ConversableAgent.
        initiator = next(
            a
            for a in manager.groupchat.agents
            if isinstance(a, ConversableAgent) and a.name == proxies[0].agent_name
        )
    else:
        # A user proxy linked as sender outside the members (members nested in the manager)
        # starts the chat; without one, a default user proxy does.
        names = {m.agent_name for m in members}
        outside = [s for s in flow.senders() if s.type is AgentType.userproxy and s.agent_name not in names]
        initiator = factory.build(outside[0]) if outside else factory.default_user_proxy()
        manager = factory.group_manager(flow.groupchat_manager(), members)
    answer, _, hit = _chat(initiator, manager, _history_preface(task, history), factory)
    return WorkflowOutcome(answer, hit, {manager.name: answer})


def build_team(flow: AgentWorkFlowConfig, factory: AgentFactory) -> None:
    """Build every agent of the workflow once, so that a config that cannot run fails before
    anything is stored or any LLM is called."""
    if flow.type is WorkflowType.groupchat:
        factory.group_manager(flow.groupchat_manager(), flow.groupchat_members())
        return
    _sender(flow, factory)
    for spec in flow.receivers():
        factory.build(spec)
