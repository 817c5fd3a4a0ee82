"""Building fresh AutoGen agents from a workflow's agent specs, wired for accounting.

Each request gets new agents: AutoGen agents keep per-conversation state, and sharing them across
requests would leak one user's chat into another's. Every agent built here checks the run's limits
before each LLM call, opens the call's time budget (`llm/budget.py`: all its tries within its
timeout), and reports each message it says to the run's transcript. Agents with an LLM call it
through the server's registered model client (`llm/model_client.py`: AutoGen's public
`register_model_client`), which shares one OpenAI client per endpoint across the process; an
agent offered no tools also takes its thread's AutoGen `LLMConfig` and `OpenAIWrapper` for its
config (`shared_wrapper`: neither holds conversation state) instead of building its own, set as
the agent's public `llm_config` and `client` after it is built without one. The agents
themselves stay fresh per request.

How the agents take their turns around code (termination, follow-ups, what a model reads of its
own earlier messages) is `code_turns.py`'s; the factory registers those rules on the agents they
concern.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

from autogen import AssistantAgent, ConversableAgent, GroupChat, GroupChatManager, UserProxyAgent
from autogen import LLMConfig as AutogenLLMConfig
from autogen.agentchat import Agent
from autogen.oai.client import OpenAIWrapper

from ..llm import budget
from ..llm.endpoints import NoUsableEndpoint, ResolvedLLMConfig
from ..llm.model_client import ServerModelClient, shared_wrapper
from ..llm.usage import UsageRecorder, billed_to
from ..schemas.workflow import AgentConfig, AgentFlowSpec, AgentType, LLMConfig
from .code_turns import (
    drop_terminate_in_code,
    end_when_nothing_to_add,
    follow_up_cut_off_code,
    hide_claims_made_before_the_run,
    termination_check,
)
from .iostream import answer_silence_as_never
from .transcript import Transcript

# Given an agent's config, the AutoGen code executor for it (or None for no execution).
ExecutorSource = Callable[[AgentConfig], Any]
# Offers an agent its config's tools and lets it run the other agents' (agents/tools.py ToolBox).
ToolAttacher = Callable[[ConversableAgent, AgentConfig | None], None]
# Given a request's llm_config, the resolved AutoGen config (credentials, prices).
LLMResolver = Callable[[LLMConfig], ResolvedLLMConfig]
# An agent handed through _wire keeps its own type (a GroupChatManager stays one).
_Agent = TypeVar("_Agent", bound=ConversableAgent)


class WorkflowConfigError(ValueError):
    """The workflow cannot be built as given; the message says what to change."""


class BudgetedGroupChat(GroupChat):
    """A GroupChat that checks the run's limits before each speaker selection (an LLM call) and
    gives the selection the manager's call timeout as its budget."""

    def __init__(
        self,
        *args: Any,
        recorder: UsageRecorder,
        manager_name: str,
        call_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._recorder = recorder
        self._manager_name = manager_name
        self._call_timeout = call_timeout

    def select_speaker(self, last_speaker: Agent, selector: ConversableAgent) -> Agent:
        self._recorder.check()
        budget.start_call(self._call_timeout)
        with billed_to(self._manager_name):
            return super().select_speaker(last_speaker, selector)


class AgentFactory:
    # Set by whoever builds the run's team when its agents may call tools (skills, MCP).
    tools: ToolAttacher | None = None

    def __init__(
        self,
        recorder: UsageRecorder,
        transcript: Transcript,
        resolve_llm: LLMResolver,
        executors: ExecutorSource | None = None,
    ) -> None:
        self.recorder = recorder
        self.transcript = transcript
        self._resolve_llm = resolve_llm
        self._executors = executors
        self.requested_models: list[str] = []
        self.notes: list[str] = []
        # Stop the agents' LLM calls in flight where the endpoint can (the embedded model).
        self.stoppers: list[Callable[[], None]] = []

    def _resolved(self, spec: AgentFlowSpec) -> tuple[dict[str, Any] | bool, bool]:
        """AutoGen's llm_config for an agent (assistants and managers get the default model), and
        whether it is the same for every run (not tagged with this run, as the embedded model's
        stoppable calls are): only such a config is worth keeping."""
        cfg = spec.config.llm_config
        if cfg is False or (cfg is None and spec.type is AgentType.userproxy):
            return False, False
        try:
            resolved = self._resolve_llm(cfg or LLMConfig())
        except NoUsableEndpoint as exc:
            raise WorkflowConfigError(f"agent '{spec.agent_name}': {exc}") from exc
        self.recorder.add_prices(resolved.prices)
        self.notes.extend(n for n in resolved.notes if n not in self.notes)
        self.stoppers.extend(resolved.stoppers)
        for model in resolved.requested_models:
            if model not in self.requested_models:
                self.requested_models.append(model)
        return resolved.llm_config, not resolved.stoppers

    def build(self, spec: AgentFlowSpec) -> ConversableAgent:
        if spec.type is AgentType.groupchat:
            return self.group_manager(spec, spec.agents)
        cfg = spec.config
        llm_config, reusable = self._resolved(spec)
        _check_name(spec.agent_name, llm_config)
        # Offering a tool rewrites the agent's llm_config and wrapper: such an agent has its own.
        shared = reusable and not (cfg.skills or cfg.mcp_servers)
        kwargs: dict[str, Any] = {
            "name": spec.agent_name,
            "llm_config": False if shared else llm_config,
            "human_input_mode": cfg.human_input_mode.value,
            "max_consecutive_auto_reply": cfg.max_consecutive_auto_reply,
            "is_termination_msg": termination_check(
                cfg.is_termination_msg, runs_code=cfg.code_execution_config is not False
            ),
            "code_execution_config": self._code_execution(cfg),
            "default_auto_reply": cfg.default_auto_reply,
        }
        if cfg.description:
            kwargs["description"] = cfg.description
        if spec.type is AgentType.assistant:
            kwargs["system_message"] = cfg.system_message or AssistantAgent.DEFAULT_SYSTEM_MESSAGE
            agent: ConversableAgent = AssistantAgent(**kwargs)
        else:
            kwargs["system_message"] = cfg.system_message or ""
            agent = UserProxyAgent(**kwargs)
        if shared:
            agent.llm_config, agent.client = shared_wrapper(cast(dict[str, Any], llm_config))
        if kwargs["code_execution_config"] is not False:
            drop_terminate_in_code(agent, cfg.is_termination_msg or "TERMINATE")
        if llm_config is False:
            if kwargs["code_execution_config"] is not False:
                follow_up_cut_off_code(agent)
            end_when_nothing_to_add(agent)
        else:
            hide_claims_made_before_the_run(agent)
        if self.tools is not None:
            self.tools(agent, cfg)
        return self._wire(agent, has_client=shared)

    def default_user_proxy(self, name: str = "userproxy") -> ConversableAgent:
        """The sender used when a workflow names none: no LLM, no code, never asks a human."""
        agent = UserProxyAgent(
            name=name,
            human_input_mode="NEVER",
            max_consecutive_auto_reply=0,
            code_execution_config=False,
            llm_config=False,
            is_termination_msg=termination_check(None),
        )
        end_when_nothing_to_add(agent)
        if self.tools is not None:
            self.tools(agent, None)
        return self._wire(agent)

    def group_manager(self, spec: AgentFlowSpec | None, members: list[AgentFlowSpec]) -> GroupChatManager:
        """A manager over fresh members; without a manager spec, defaults suitable for most teams."""
        built = [self.build(m) for m in members]
        cfg = spec.config if spec is not None else AgentConfig(name="group_chat_manager")
        own, reusable = self._resolved(spec) if spec is not None else (False, False)
        shared: AutogenLLMConfig | None = None
        client: OpenAIWrapper | None = None
        if own is False:  # a member's (an LLMConfig), with that member's wrapper
            donor = next((a for a in built if a.llm_config), None)
            if donor is not None and donor.llm_config:
                shared, client = donor.llm_config, donor.client
        elif isinstance(own, dict) and reusable:
            _check_name(cfg.name, own)
            shared, client = shared_wrapper(own)
        llm_config: dict[str, Any] | AutogenLLMConfig | bool = shared if shared is not None else own
        method = cfg.speaker_selection_method.value
        if method == "auto" and not llm_config:
            raise WorkflowConfigError(
                f"group chat '{cfg.name}': speaker_selection_method 'auto' needs an llm_config "
                "on the manager or a member"
            )
        groupchat = BudgetedGroupChat(
            agents=built,
            messages=list(cfg.messages),
            max_round=cfg.max_round,
            speaker_selection_method=method,
            allow_repeat_speaker=cfg.allow_repeat_speaker,
            select_speaker_auto_verbose=False,
            # "auto" selection's own helper agent calls through the same client as every agent
            # (AutoGen registers it only for a config it is given here: the manager's own).
            select_speaker_auto_model_client_cls=ServerModelClient,
            select_speaker_auto_llm_config=llm_config or None,
            recorder=self.recorder,
            manager_name=cfg.name,
            call_timeout=_timeout_of(llm_config),
        )
        manager = GroupChatManager(
            groupchat=groupchat,
            name=cfg.name,
            llm_config=False if shared is not None else llm_config,
            human_input_mode="NEVER",
            is_termination_msg=termination_check(cfg.is_termination_msg),
            system_message=cfg.system_message or "Group chat manager.",
        )
        if shared is not None:
            manager.llm_config, manager.client = shared, client
        return self._wire(manager, has_client=shared is not None)

    def _code_execution(self, cfg: AgentConfig) -> dict[str, Any] | bool:
        if cfg.code_execution_config is False:
            return False
        if self._executors is None:
            raise WorkflowConfigError(
                f"agent '{cfg.name}': code execution is not available on this server; "
                "set code_execution_config to false"
            )
        executor = self._executors(cfg)
        if executor is None:
            return False
        note = getattr(executor, "note", None)  # e.g. the local sandbox standing in for Docker
        if isinstance(note, str) and note not in self.notes:
            self.notes.append(note)
        return {"executor": executor}

    def _wire(self, agent: _Agent, has_client: bool = False) -> _Agent:
        """`has_client`: the agent's wrapper is a shared one, its model clients registered."""
        recorder, transcript, name = self.recorder, self.transcript, agent.name
        timeout = _timeout_of(agent.llm_config)

        def check_budget(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
            recorder.check()
            transcript.set_speaker(name)
            budget.start_call(timeout)
            return messages

        agent.register_hook("safeguard_llm_inputs", check_budget)
        if agent.llm_config and not has_client:  # after its tools: offering one rebuilds the wrapper
            # AutoGen fills one placeholder per call: once for each entry of the config_list.
            for _ in range(_entries_of(agent.llm_config, ServerModelClient.__name__)):
                agent.register_model_client(
                    cast(Any, ServerModelClient)
                )  # typed as an instance; takes the class
        answer_silence_as_never(agent)  # no human answer acts as NEVER mode (see iostream.py)
        self.transcript.attach(agent)
        return agent


_WHITESPACE = re.compile(r"\s")


def _check_name(name: str, llm_config: dict[str, Any] | bool) -> None:
    """The name rule AutoGen applies to an agent built with an llm_config, as a 400: AutoGen
    checks it only in the constructor of an agent given its llm_config (a ValueError from deep
    inside it), and an agent taking its thread's shared wrapper is built without one."""
    if llm_config is not False and _WHITESPACE.search(name):
        raise WorkflowConfigError(
            f"agent '{name}': an agent with an llm_config may not have whitespace in its name"
        )


def _entries_of(llm_config: Any, client_cls: str) -> int:
    """How many entries of an llm_config (ours a dict, AutoGen's an LLMConfig) name `client_cls`."""
    get = getattr(llm_config, "get", None)
    entries = get("config_list") if callable(get) else None
    return sum(
        1
        for e in entries or []
        if (e.get("model_client_cls") if hasattr(e, "get") else getattr(e, "model_client_cls", None))
        == client_cls
    )


def _timeout_of(llm_config: Any) -> float | None:
    """The `timeout` of an llm_config (ours a dict, AutoGen's an LLMConfig; False: none)."""
    get = getattr(llm_config, "get", None) if llm_config else None
    value = get("timeout") if callable(get) else None
    return float(value) if isinstance(value, int | float) and value > 0 else None
