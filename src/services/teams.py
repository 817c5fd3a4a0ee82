"""The request's team, before anything runs: what a config makes the server call, and whether it
can run at all.

- `runtime_flow`: every `credential` a config names resolved to the user's own stored key and
  endpoint, and every `base_url` (a credential's too) checked against the outbound rule
  (`llm/outbound.py`). A session keeps its config as sent (credential references, no keys); each
  run resolves the references again, so a follow-up without `flow_config` uses the same one.
- `validate_flow`: the whole team built once without running it (cached per distinct config), so
  a config that cannot run is a 400 before anything is stored.
Anything refused is a `BadRequest` naming the field.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from autogen.io.base import IOStream

from ..agents.factory import AgentFactory, WorkflowConfigError
from ..agents.iostream import RunIOStream
from ..agents.transcript import Transcript
from ..agents.workflows import build_team
from ..llm import endpoints
from ..llm.embedded import is_embedded
from ..llm.outbound import OutboundPolicy, OutboundRefused
from ..llm.usage import UsageRecorder
from ..schemas.workflow import AgentConfig, AgentWorkFlowConfig, CodeExecutionObject, LLMConfig, ModelEndpoint
from ..settings import Settings
from .credentials import CredentialService, UsableCredential
from .errors import BadRequest


class TeamGate:
    def __init__(self, settings: Settings, credentials: CredentialService | None = None) -> None:
        self.settings = settings
        # Stored provider keys that configs name; without it a config naming one is a 400.
        self._credentials = credentials
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
            (flow.model_dump_json() + "\0" + "\0".join(sorted(self.secrets(flow)))).encode()
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
