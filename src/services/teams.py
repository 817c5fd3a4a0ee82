"""The request's team, before anything runs: what a config makes the server call, and whether it
can run at all.

- `runtime_flow`: every `credential` a config names resolved to the user's own stored key and
  endpoint, and every `base_url` (a credential's too) checked against the outbound rule
  (`llm/outbound.py`). A session keeps its config as sent (credential references, no keys); each
  run resolves the references again, so a follow-up without `flow_config` uses the same one.
  Library skills an agent names (`"skills": ["add"]`) are resolved the same way, to the user's
  own (`/api/skills`), and every `mcp_servers` URL is checked against `tools.mcp_allowed_urls`.
- `validate_flow`: the whole team built once without running it (cached per distinct config), so
  a config that cannot run is a 400 before anything is stored: its tools offered (name clashes,
  skills on an agent without an LLM), nothing run and no MCP server contacted.
- `toolbox`: the run's tools (`agents/tools.py`): skills in the run's sandboxes, the built-in
  `past_runs` bound to the run's user, the MCP servers' tools.
Anything refused is a `BadRequest` naming the field.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from autogen.io.base import IOStream

from ..agents.factory import AgentFactory, WorkflowConfigError
from ..agents.iostream import RunIOStream
from ..agents.mcp import McpTools
from ..agents.tools import EventSink, SandboxSource, ServerTool, ToolBox
from ..agents.transcript import Transcript
from ..agents.workflows import build_team
from ..llm import endpoints
from ..llm.embedded import is_embedded
from ..llm.outbound import OutboundPolicy, OutboundRefused, check_listed
from ..llm.usage import UsageRecorder
from ..schemas.skills import SkillSpec
from ..schemas.workflow import AgentConfig, AgentWorkFlowConfig, CodeExecutionObject, LLMConfig, ModelEndpoint
from ..settings import Settings
from ..storage.history import HistoryRepository
from ..storage.skills import SkillRepository
from ..storage.store import Store
from .credentials import CredentialService, UsableCredential
from .errors import BadRequest
from .history import PAST_RUNS, RunHistory
from .skills import SkillService


class TeamGate:
    def __init__(
        self,
        settings: Settings,
        credentials: CredentialService | None = None,
        skills: SkillService | None = None,
        history: RunHistory | None = None,
    ) -> None:
        self.settings = settings
        # Stored provider keys that configs name; without it a config naming one is a 400.
        self._credentials = credentials
        # The users' skill libraries, and the run history `past_runs` reads.
        self._skills = skills
        self._history = history
        self._outbound = OutboundPolicy.from_settings(settings)
        # Clients send the same flow_config with every message; validate each one once.
        self._validated: OrderedDict[str, None] = OrderedDict()
        self._validated_lock = threading.Lock()

    def resolve_llm(self, config: LLMConfig, run_id: str) -> endpoints.ResolvedLLMConfig:
        return endpoints.resolve(config, self.settings, run_tag=run_id)

    def _check_llm(self, config: LLMConfig) -> endpoints.ResolvedLLMConfig:
        return endpoints.resolve(config, self.settings, start_embedded=False)

    def secrets(self, flow: AgentWorkFlowConfig) -> list[str]:
        found = [self.settings.openai_api_key.get_secret_value()] if self.settings.openai_api_key else []
        specs = [a.agent for a in flow.agents] + flow.receivers() + flow.senders()
        while specs:
            spec = specs.pop()
            specs.extend(spec.agents)
            if spec.config.llm_config:
                found.extend(e.api_key for e in spec.config.llm_config.config_list if e.api_key)
        return found

    def runtime_flow(self, user_id: str, flow: AgentWorkFlowConfig) -> AgentWorkFlowConfig:
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
        self._check_mcp(flow)
        library = {
            ref
            for _, spec in flow.agent_specs()
            for ref in spec.config.skills
            if isinstance(ref, str) and ref not in self.builtins(None)
        }
        runtime = flow.model_copy(deep=True) if names or library else flow
        if library:
            self._apply_library(user_id, runtime, library)
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

    def builtins(self, user_id: str | None, run_id: str | None = None) -> dict[str, ServerTool]:
        """The built-in server-side skills, bound to `user_id` (None: offered, never run)."""
        if self._history is None:
            return {}
        return {PAST_RUNS: self._history.past_runs_tool(user_id, run_id)}

    def toolbox(
        self, user_id: str, run_id: str, sandbox: SandboxSource, on_event: EventSink | None
    ) -> ToolBox:
        """The tools of one run: skills run in its sandboxes, built-ins for its user only."""
        mcp = McpTools(self.settings.tools.mcp_timeout_s)
        return ToolBox(sandbox, on_event, self.builtins(user_id, run_id), mcp)

    def _check_mcp(self, flow: AgentWorkFlowConfig) -> None:
        for path, spec in flow.agent_specs():
            for i, server in enumerate(spec.config.mcp_servers):
                try:
                    check_listed(server.url, self.settings.tools.mcp_allowed_urls, "tools.mcp_allowed_urls")
                except OutboundRefused as exc:
                    raise BadRequest(f"{path}.config.mcp_servers[{i}].url: {exc}") from exc

    def _apply_library(self, user_id: str, runtime: AgentWorkFlowConfig, names: set[str]) -> None:
        """Put the user's library skills in place of the names the config gives."""
        if self._skills is None:
            raise BadRequest("library skills are available through the server's API only")
        found = self._skills.resolve(user_id, names)
        for path, spec in runtime.agent_specs():
            resolved: list[str | SkillSpec] = []
            for i, ref in enumerate(spec.config.skills):
                if isinstance(ref, str) and ref in names:
                    if ref not in found:
                        raise BadRequest(
                            f"{path}.config.skills[{i}]: you have no skill named '{ref}' (store one with "
                            f"POST /api/skills; built-in: {', '.join(sorted(self.builtins(None))) or 'none'})"
                        )
                    resolved.append(found[ref])
                else:
                    resolved.append(ref)
            spec.config.skills = resolved

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
            (flow.model_dump_json() + "\0" + "\0".join(sorted(self.secrets(flow)))).encode()
        ).hexdigest()
        with self._validated_lock:
            if key in self._validated:
                self._validated.move_to_end(key)
                return
        recorder = UsageRecorder(self.settings.limits)
        factory = AgentFactory(recorder, Transcript(recorder), self._check_llm, self._check_execution)
        factory.tools = ToolBox(builtins=self.builtins(None)).attach
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


def skill_library(store: Store) -> SkillService:
    """The users' skill libraries over `store`'s database (the built-ins' names reserved)."""
    return SkillService(SkillRepository.alongside(store), reserved={PAST_RUNS})


def run_history(store: Store) -> RunHistory:
    """The run history over `store`'s database."""
    return RunHistory(HistoryRepository.alongside(store))
