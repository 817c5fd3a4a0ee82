"""Saved workflows: a user's named flow_configs, versioned, and the built-ins every user sees.

Contract:
- `create` stores version 1 under the workflow's own `name`, unique per user (a clash is a 409
  naming the workflow that has it); `update` stores the next version (older ones stay readable,
  since sessions and runs record the version they ran); `delete` removes every version.
- A workflow is checked like a run's (`check_flow`: stored credentials it names, the outbound
  rule, the team built once) before it is saved, so a saved workflow is one that can run. Keys
  written inline are never saved (`api_key` is never dumped): name a stored `credential`.
- Another user's workflow answers exactly like a missing one (404).
- The built-ins are the ready examples (`web/examples/*.json`), read from their files whenever
  they are asked for (they are edited as files, never copied into code), with ids
  `builtin:<file stem>` and one version; they cannot be changed or deleted (403): `copy` makes
  the user's own workflow of one.
- `resolve` turns a run request's `workflow_id` (and version), or a model name of the
  OpenAI-compatible endpoint, into the flow to run and the `WorkflowRef` the run records.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..agents.factory import WorkflowConfigError
from ..schemas.pagination import Page
from ..schemas.workflow import AgentWorkFlowConfig
from ..schemas.workflows import SavedWorkflow, WorkflowRef
from ..storage.workflows import NameTaken, StoredWorkflow, WorkflowRepository, from_micros
from .errors import BadRequest, Forbidden, NotFound, WrongState
from .pagination import Listing, listing, start_after
from .teams import TeamGate

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "web" / "examples"
BUILTIN_PREFIX = "builtin:"
WORKFLOWS = "workflows"
# A page's sort key: (0, 0, builtin id) within the built-ins, then (1, updated_at in
# microseconds, workflow id) within the user's own.
KEY_SHAPE: tuple[type, ...] = (int, int, str)
BUILTINS_PHASE, OWN_PHASE = 0, 1
OWN_START = (OWN_PHASE, 0, "")  # the user's own, from the first

CheckFlow = Callable[[str, AgentWorkFlowConfig], None]


def runnable_check(teams: TeamGate) -> CheckFlow:
    """The check a run makes of its workflow (`ChatService.prepare`): the user's stored
    credentials and the outbound rule, then the team built once; anything refused is a 400."""

    def check(user_id: str, flow: AgentWorkFlowConfig) -> None:
        try:
            teams.validate_flow(teams.runtime_flow(user_id, flow))
        except WorkflowConfigError as exc:
            raise BadRequest(str(exc)) from exc

    return check


@dataclass(frozen=True)
class Builtin:
    workflow_id: str
    name: str
    flow: AgentWorkFlowConfig


class WorkflowService:
    def __init__(
        self, store: WorkflowRepository, check_flow: CheckFlow | None = None, builtin_dir: Path = BUILTIN_DIR
    ) -> None:
        self._store = store
        self._check_flow = check_flow
        self._builtin_dir = builtin_dir

    # built-ins -------------------------------------------------------------------------------

    def builtins(self) -> list[Builtin]:
        """The ready examples as they are on disk now, by file name; a file that is not a valid
        workflow is left out (and logged)."""
        found = []
        for path in sorted(self._builtin_dir.glob("*.json")):
            try:
                flow = AgentWorkFlowConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, ValidationError) as exc:
                log.error("built-in workflow %s left out: %s", path.name, exc)
                continue
            found.append(Builtin(BUILTIN_PREFIX + path.stem, flow.name or path.stem, flow))
        return sorted(found, key=lambda b: b.workflow_id)

    def _builtin(self, workflow_id: str) -> Builtin | None:
        return next((b for b in self.builtins() if b.workflow_id == workflow_id), None)

    # reading -------------------------------------------------------------------------------------

    def list_workflows(self, user_id: str, limit: int, cursor: str | None = None) -> Listing[SavedWorkflow]:
        """The built-ins, then the user's workflows (the most recently saved first), one page."""
        after = start_after(WORKFLOWS, cursor, KEY_SHAPE)
        phase = BUILTINS_PHASE if after is None else after[0]
        if phase not in (BUILTINS_PHASE, OWN_PHASE):
            raise BadRequest(f"invalid request: cursor: not a cursor of this list ({WORKFLOWS})")
        items: list[SavedWorkflow] = []
        since: tuple[datetime, str] | None = None
        if phase == BUILTINS_PHASE:
            builtins = self.builtins()
            if after is not None:
                builtins = [b for b in builtins if b.workflow_id > str(after[2])]
            if len(builtins) > limit:
                shown = builtins[:limit]
                key = (BUILTINS_PHASE, 0, shown[-1].workflow_id)
                return listing(WORKFLOWS, Page([_builtin_info(b, False) for b in shown], key))
            items = [_builtin_info(b, False) for b in builtins]
        elif after != OWN_START:
            assert after is not None
            try:
                since = (from_micros(int(after[1])), str(after[2]))
            except OverflowError as exc:
                raise BadRequest(f"invalid request: cursor: not a cursor of this list ({WORKFLOWS})") from exc
        room = limit - len(items)
        if room == 0:  # a page that ends with the last built-in: the user's own come next
            more = bool(self._store.page(user_id, 1).items)
            return listing(WORKFLOWS, Page(items, OWN_START if more else None))
        page = self._store.page(user_id, room, since)
        items += [_info(s, with_flow=False) for s in page.items]
        next_key = None if page.next_key is None else (OWN_PHASE, *page.next_key)
        return listing(WORKFLOWS, Page(items, next_key))

    def get(self, user_id: str, workflow_id: str, version: int | None = None) -> SavedWorkflow:
        if workflow_id.startswith(BUILTIN_PREFIX):
            builtin = self._builtin(workflow_id)
            if builtin is None or version not in (None, 1):
                raise NotFound(_missing(workflow_id, version))
            return _builtin_info(builtin, with_flow=True)
        stored = self._store.get(user_id, workflow_id, version)
        if stored is None:
            raise NotFound(_missing(workflow_id, version))
        return _info(stored, with_flow=True)

    def export(
        self, user_id: str, workflow_id: str, version: int | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The workflow's name and its flow_config, as a file of it holds it."""
        found = self.get(user_id, workflow_id, version)
        assert found.workflow is not None
        return found.name, found.workflow

    def resolve(
        self, user_id: str, workflow_id: str, version: int | None = None
    ) -> tuple[AgentWorkFlowConfig, WorkflowRef]:
        """The flow a run of this workflow runs, and what the run records of it."""
        found = self.get(user_id, workflow_id, version)
        assert found.workflow is not None
        return AgentWorkFlowConfig.model_validate(found.workflow), WorkflowRef(found.id, found.version)

    def for_run(
        self,
        user_id: str,
        flow: AgentWorkFlowConfig | None,
        workflow_id: str | None,
        version: int | None = None,
    ) -> tuple[AgentWorkFlowConfig | None, WorkflowRef | None]:
        """A run request's workflow: the saved one it names, else its own flow_config (or None:
        the session's), which records no saved workflow."""
        if workflow_id is None:
            return flow, None
        return self.resolve(user_id, workflow_id, version)

    def find(self, user_id: str, model: str) -> SavedWorkflow:
        """A workflow by id, else by name (the user's own first, then a built-in's): what the
        OpenAI-compatible endpoint's `model` names."""
        try:
            return self.get(user_id, model)
        except NotFound:
            pass
        own = self._store.by_name(user_id, model)
        if own is not None:
            return _info(own, with_flow=False)
        builtin = next((b for b in self.builtins() if b.name == model), None)
        if builtin is None:
            raise NotFound(f"workflow {model} not found")
        return _builtin_info(builtin, with_flow=False)

    def every(self, user_id: str, most: int = 500) -> list[SavedWorkflow]:
        """The built-ins and the user's `most` most recently saved workflows."""
        own = self._store.page(user_id, most).items
        return [_builtin_info(b, with_flow=False) for b in self.builtins()] + [
            _info(s, with_flow=False) for s in own
        ]

    # changing ------------------------------------------------------------------------------------

    def create(self, user_id: str, flow: AgentWorkFlowConfig) -> SavedWorkflow:
        name = self._checked(user_id, flow)
        workflow_id = "wf_" + uuid.uuid4().hex
        try:
            stored = self._store.create(user_id, workflow_id, name, flow.model_dump(mode="json"))
        except NameTaken as exc:
            raise self._clash(user_id, name) from exc
        return _info(stored, with_flow=True)

    def update(self, user_id: str, workflow_id: str, flow: AgentWorkFlowConfig) -> SavedWorkflow:
        self._refuse_builtin(workflow_id, "changed")
        name = self._checked(user_id, flow)
        try:
            stored = self._store.save_version(user_id, workflow_id, name, flow.model_dump(mode="json"))
        except NameTaken as exc:
            raise self._clash(user_id, name) from exc
        if stored is None:
            raise NotFound(_missing(workflow_id, None))
        return _info(stored, with_flow=True)

    def delete(self, user_id: str, workflow_id: str) -> None:
        self._refuse_builtin(workflow_id, "deleted")
        if not self._store.delete(user_id, workflow_id):
            raise NotFound(_missing(workflow_id, None))

    def copy(
        self, user_id: str, workflow_id: str, version: int | None = None, name: str | None = None
    ) -> SavedWorkflow:
        """The user's own new workflow, made of a built-in or of a version of their own."""
        original = self.get(user_id, workflow_id, version)
        assert original.workflow is not None
        flow = AgentWorkFlowConfig.model_validate(original.workflow)
        if name is not None:
            flow.name = name
        return self.create(user_id, flow)

    def _checked(self, user_id: str, flow: AgentWorkFlowConfig) -> str:
        """The workflow's name, once the workflow is known to be one that can run."""
        name = (flow.name or "").strip()
        if not name:
            raise BadRequest("invalid request: workflow.name: required (it names the saved workflow)")
        flow.name = name
        if self._check_flow is not None:
            self._check_flow(user_id, flow)
        return name

    def _clash(self, user_id: str, name: str) -> WrongState:
        other = self._store.by_name(user_id, name)
        where = f" ({other.workflow_id})" if other is not None else ""
        return WrongState(
            f"workflow.name: you already have a workflow named '{name}'{where}: give this one another "
            "name, or save it as a new version of that one (PUT /api/workflows/<id>)"
        )

    @staticmethod
    def _refuse_builtin(workflow_id: str, what: str) -> None:
        if workflow_id.startswith(BUILTIN_PREFIX):
            raise Forbidden(
                f"workflow {workflow_id} is built-in and cannot be {what}: copy it "
                f"(POST /api/workflows/{workflow_id}/copy) and change your copy"
            )


def _missing(workflow_id: str, version: int | None) -> str:
    if version is None:
        return f"workflow {workflow_id} not found"
    return f"workflow {workflow_id} version {version} not found"


def _info(stored: StoredWorkflow, with_flow: bool) -> SavedWorkflow:
    flow = stored.flow or {}
    return SavedWorkflow(
        id=stored.workflow_id,
        name=stored.name,
        version=stored.version,
        latest_version=stored.latest_version,
        builtin=False,
        type=str(flow.get("type", "")),
        description=flow.get("description"),
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        workflow=stored.flow if with_flow else None,
    )


def _builtin_info(builtin: Builtin, with_flow: bool = False) -> SavedWorkflow:
    return SavedWorkflow(
        id=builtin.workflow_id,
        name=builtin.name,
        version=1,
        latest_version=1,
        builtin=True,
        type=builtin.flow.type.value,
        description=builtin.flow.description,
        workflow=builtin.flow.model_dump(mode="json") if with_flow else None,
    )
