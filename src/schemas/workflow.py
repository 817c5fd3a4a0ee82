"""The workflow config that clients send: one JSON document that describes a team of agents.

The shape is the one existing clients already send (`flow_config`), so the models accept both
spellings the clients use and ignore unknown extra fields; everything the server acts on is
validated here, before any agent is built, so that a bad config is a 400 and never a half-run.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .skills import McpServer, SkillRef, SkillSpec, check_unique


class WorkflowType(StrEnum):
    autonomous = "autonomous"
    sequential = "sequential"
    groupchat = "groupchat"


class AgentType(StrEnum):
    assistant = "assistant"
    userproxy = "userproxy"
    groupchat = "groupchat"


class SpeakerSelection(StrEnum):
    auto = "auto"
    round_robin = "round_robin"
    random = "random"


class HumanInputMode(StrEnum):
    NEVER = "NEVER"
    ALWAYS = "ALWAYS"
    TERMINATE = "TERMINATE"


class SummaryMethod(StrEnum):
    last = "last"
    reflection_with_llm = "reflection_with_llm"


class LinkRole(StrEnum):
    sender = "sender"
    receiver = "receiver"


class _Lenient(BaseModel):
    """Ignore fields we do not know: old clients send extras that must not break them."""

    model_config = ConfigDict(extra="ignore", use_enum_values=False)


# A stored credential's name (`/api/credentials`), as a config entry refers to it.
CREDENTIAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"


class ModelEndpoint(_Lenient):
    """One entry of `config_list`. `api_key: null` means "use the server's credentials";
    `credential` names a key the user stored (`/api/credentials`), resolved when the run starts.

    Whether `base_url` may be called is the outbound rule's (`llm/outbound.py`), checked with the
    user's request. A key written into the URL (`http://user:sk-...@host`) is cut out here, as the
    URL is read, so that it is never stored or shown, wherever the config came from; the request
    that sent one is refused (`had_userinfo`)."""

    model: str = Field(min_length=1, max_length=200)
    # Excluded from every dump: a key must never be stored, returned or published.
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    credential: str | None = Field(
        default=None,
        pattern=CREDENTIAL_NAME_PATTERN,
        description="the name of a stored credential (POST /api/credentials): its key and endpoint",
    )
    base_url: str | None = Field(default=None, max_length=2000)
    api_type: Literal["openai"] | None = None
    price: tuple[float, float] | None = Field(
        default=None, description="USD per 1k prompt and completion tokens, for models without a known price"
    )
    _had_userinfo: bool = PrivateAttr(default=False)

    @field_validator("base_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and value and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value or None

    @field_validator("price")
    @classmethod
    def _non_negative(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and min(value) < 0:
            raise ValueError("prices must not be negative")
        return value

    @model_validator(mode="after")
    def _no_key_in_url(self) -> ModelEndpoint:
        if self.credential is not None and self.api_key is not None:
            raise ValueError(
                "give either api_key or credential, not both: a credential brings its own stored key"
            )
        if self.base_url is not None:
            stripped = without_userinfo(self.base_url)
            if stripped != self.base_url:
                self.base_url = stripped
                self._had_userinfo = True
        return self

    @property
    def had_userinfo(self) -> bool:
        """The URL as sent carried `user:password@` (cut out since)."""
        return self._had_userinfo


def without_userinfo(url: str) -> str:
    """`url` without any `user:password@` in its authority."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class LLMConfig(_Lenient):
    config_list: list[ModelEndpoint] = Field(default_factory=list, max_length=20)
    temperature: float = Field(0.0, ge=0, le=2)
    cache_seed: int | None = None
    timeout: float | None = Field(default=None, gt=0, le=3600)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    # None: the server decides: on for the embedded model (its replies take seconds: the page shows
    # them as they come), off for other endpoints.
    stream: bool | None = Field(
        default=None,
        description="stream tokens from the model (live runs show them); default: on for the embedded model",
    )


class CodeExecutionObject(_Lenient):
    """Options of one agent's sandbox, checked here so a bad one is a 400 before anything is stored.

    The checks are the execution package's own (one definition for the API and the
    sandbox). Whether the server lets this image run is a server setting, checked when
    the run opens its sandbox. AutoGen's legacy ``use_docker`` is read, not dropped.
    """

    executor: Literal["docker", "local"] | None = None
    timeout_s: int | None = Field(default=None, ge=1, le=3600)
    image: str | None = Field(default=None, max_length=300)
    work_dir: str | None = Field(default=None, max_length=300)

    @model_validator(mode="before")
    @classmethod
    def _legacy_use_docker(cls, data: Any) -> Any:
        from ..execution.request import resolve_legacy_use_docker

        return resolve_legacy_use_docker(data) if isinstance(data, dict) else data

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        from ..execution.request import check_image

        return None if value is None else check_image(value)

    @field_validator("work_dir")
    @classmethod
    def _work_dir(cls, value: str | None) -> str | None:
        from ..execution.request import check_work_dir

        return None if value is None else check_work_dir(value)


CodeExecution = Literal[False] | Literal["docker", "local"] | CodeExecutionObject


class AgentConfig(_Lenient):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    llm_config: LLMConfig | Literal[False] | None = None
    human_input_mode: HumanInputMode = HumanInputMode.NEVER
    max_consecutive_auto_reply: int = Field(10, ge=0, le=1000)
    system_message: str | None = Field(default=None, max_length=100_000)
    is_termination_msg: str | None = Field(
        default=None,
        max_length=200,
        description='A message ending with this text ends the chat; null means "ends with TERMINATE".',
    )
    code_execution_config: CodeExecution = False
    default_auto_reply: str = Field(default="", max_length=10_000)
    description: str | None = Field(default=None, max_length=10_000)
    # Group chat managers only.
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)
    allow_repeat_speaker: bool = True
    max_round: int = Field(10, ge=1, le=1000)
    speaker_selection_method: SpeakerSelection = SpeakerSelection.auto
    # Tools the agent may call (function calling); the agent it talks to runs them (skills/MCP).
    skills: list[SkillRef] = Field(
        default_factory=list,
        max_length=50,
        description="tools offered to this agent: {name, description, code} skills, or the names of "
        "library skills (/api/skills) and built-ins (past_runs); run in the sandbox of the agent it talks to",
    )
    mcp_servers: list[McpServer] = Field(
        default_factory=list,
        max_length=10,
        description="streamable-HTTP MCP servers whose tools this agent is offered (tools.mcp_allowed_urls)",
    )

    @field_validator("skills")
    @classmethod
    def _unique_skills(cls, value: list[str | SkillSpec]) -> list[str | SkillSpec]:
        return check_unique(value)

    @field_validator("code_execution_config", mode="before")
    @classmethod
    def _none_is_off(cls, value: Any) -> Any:
        return False if value is None else value

    @field_validator("llm_config", mode="before")
    @classmethod
    def _true_is_default(cls, value: Any) -> Any:
        return {} if value is True else value


class AgentFlowSpec(_Lenient):
    """One agent. A groupchat agent lists its members in `agents`."""

    type: AgentType
    config: AgentConfig
    name: str | None = Field(default=None, max_length=64)
    agents: list[AgentFlowSpec] = Field(default_factory=list, max_length=50)

    @model_validator(mode="before")
    @classmethod
    def _unwrap_links(cls, data: Any) -> Any:
        """Members may come as bare specs or wrapped as `{agent, link}` like the top level."""
        if isinstance(data, dict) and isinstance(data.get("agents"), list):
            data = dict(data)
            data["agents"] = [
                m["agent"] if isinstance(m, dict) and isinstance(m.get("agent"), dict) else m
                for m in data["agents"]
            ]
        return data

    @model_validator(mode="after")
    def _check(self) -> AgentFlowSpec:
        if self.name is None:
            self.name = self.config.name
        if self.type is AgentType.groupchat:
            # No members at all is a manager-only spec, which a groupchat workflow may give for
            # its manager (its members are then the workflow's agents); the workflow checks that.
            if len(self.agents) == 1:
                raise ValueError(f"groupchat agent '{self.name}' needs at least 2 member agents in 'agents'")
            _unique_names(self.agents, where=f"members of '{self.name}'")
        return self

    @property
    def agent_name(self) -> str:
        return self.name or self.config.name


class AgentLink(_Lenient):
    agent_type: LinkRole
    sender_type: str | None = None


class LinkedAgent(_Lenient):
    """An entry of the workflow's `agents`: the agent and its role in the chat."""

    agent: AgentFlowSpec
    link: AgentLink


class AgentWorkFlowConfig(_Lenient):
    """The whole team. `agents` is the source of truth; `sender`/`receiver` only point into it."""

    name: str = Field("workflow", max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    type: WorkflowType
    sender: AgentFlowSpec | None = None
    receiver: AgentFlowSpec | list[AgentFlowSpec] | None = None
    agents: list[LinkedAgent] = Field(default_factory=list, max_length=50)
    summary_method: SummaryMethod = SummaryMethod.last

    @field_validator("summary_method", mode="before")
    @classmethod
    def _autogen_spelling(cls, value: Any) -> Any:
        return "last" if value in ("last_msg", None) else value

    @model_validator(mode="after")
    def _check(self) -> AgentWorkFlowConfig:
        if not self.agents and self.receiver is None:
            raise ValueError("flow_config needs 'agents' (or at least a 'receiver')")
        _unique_names([a.agent for a in self.agents], where="agents")
        names = {a.agent.agent_name for a in self.agents}
        if self.agents:
            wanted = (
                self.receiver if isinstance(self.receiver, list) else [self.receiver] if self.receiver else []
            )
            for r in wanted:
                if r.agent_name not in names:
                    raise ValueError(
                        f"receiver '{r.agent_name}' names no agent in 'agents' (known: {', '.join(sorted(names))})"
                    )
        if self.type is WorkflowType.groupchat and len(self.groupchat_members()) < 2:
            raise ValueError("a groupchat workflow needs at least 2 member agents")
        manager = self.groupchat_manager() if self.type is WorkflowType.groupchat else None
        teams = [a.agent for a in self.agents if a.agent is not manager]
        if manager is None:
            teams += self.receivers()
        for spec in teams + (manager.agents if manager is not None else []):
            _check_teams(spec)
        if manager is not None and not manager.agents:
            extra = [a.agent.agent_name for a in self.agents if a.agent.type is AgentType.groupchat][1:]
            if extra:
                raise ValueError(
                    f"a groupchat workflow takes one groupchat agent (its manager); also got {extra}"
                )
        if self.type is not WorkflowType.groupchat and not self.receivers():
            raise ValueError("flow_config has no receiver: link one agent with agent_type 'receiver'")
        return self

    def groupchat_manager(self) -> AgentFlowSpec | None:
        """The `groupchat` agent whose config makes the manager of a groupchat workflow, if given."""
        return next((a.agent for a in self.agents if a.agent.type is AgentType.groupchat), None)

    def groupchat_members(self) -> list[AgentFlowSpec]:
        manager = self.groupchat_manager()
        if manager is not None and manager.agents:
            return list(manager.agents)
        return [a.agent for a in self.agents if a.agent.type is not AgentType.groupchat]

    def senders(self) -> list[AgentFlowSpec]:
        linked = [a.agent for a in self.agents if a.link.agent_type is LinkRole.sender]
        if linked:
            return linked
        return [self.sender] if self.sender is not None else []

    def receivers(self) -> list[AgentFlowSpec]:
        """Receivers in the order given: linked in `agents`, else the `receiver` field."""
        linked = [a.agent for a in self.agents if a.link.agent_type is LinkRole.receiver]
        if linked:
            return linked
        if isinstance(self.receiver, list):
            return list(self.receiver)
        return [self.receiver] if self.receiver is not None else []

    def agent_specs(self) -> Iterator[tuple[str, AgentFlowSpec]]:
        """Every agent spec the config holds, members included, with its path in the request
        (`flow_config.agents[1].agent`), so that a refused field can be named as the user wrote it."""
        tops: list[tuple[str, AgentFlowSpec]] = [
            (f"flow_config.agents[{i}].agent", a.agent) for i, a in enumerate(self.agents)
        ]
        if self.sender is not None:
            tops.append(("flow_config.sender", self.sender))
        if isinstance(self.receiver, list):
            tops += [(f"flow_config.receiver[{i}]", r) for i, r in enumerate(self.receiver)]
        elif self.receiver is not None:
            tops.append(("flow_config.receiver", self.receiver))
        while tops:
            path, spec = tops.pop(0)
            tops[:0] = [(f"{path}.agents[{i}]", member) for i, member in enumerate(spec.agents)]
            yield path, spec

    def endpoints(self) -> Iterator[tuple[str, ModelEndpoint]]:
        """Every `config_list` entry of every agent the config holds, with its path in the
        request (`flow_config.agents[1].agent.config.llm_config.config_list[0]`)."""
        for path, spec in self.agent_specs():
            if spec.config.llm_config:
                for i, entry in enumerate(spec.config.llm_config.config_list):
                    yield f"{path}.config.llm_config.config_list[{i}]", entry


def _check_teams(spec: AgentFlowSpec) -> None:
    """A groupchat agent that runs as a team (not a workflow's manager) needs its members."""
    if spec.type is AgentType.groupchat and len(spec.agents) < 2:
        raise ValueError(f"groupchat agent '{spec.agent_name}' needs at least 2 member agents in 'agents'")
    for member in spec.agents:
        _check_teams(member)


def _unique_names(specs: list[AgentFlowSpec], where: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.agent_name in seen:
            raise ValueError(f"agent name '{spec.agent_name}' is used twice in {where}")
        seen.add(spec.agent_name)


AgentFlowSpec.model_rebuild()
WorkflowConfigField = Annotated[AgentWorkFlowConfig, Field(description="The team of agents to run")]
