"""Saved workflows: create, list, read (any version), save a new version, delete, copy, export
and import; the built-ins (`builtin:<name>`) are listed and readable by everyone, never changed.

Each route is one call of `services().workflows` (`services/workflows.py` holds the rules) and
answers with the `{status, message, data}` envelope, except `export`, which answers with the
flow_config itself as a JSON file to download (what `import` takes back).
"""

from __future__ import annotations

import json
import re

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict

from ...schemas.api import ErrorResponse
from ...schemas.workflow import AgentWorkFlowConfig
from ...schemas.workflows import (
    CopyWorkflowRequest,
    DeletedWorkflowResponse,
    SavedWorkflow,
    SavedWorkflowResponse,
    SavedWorkflowsResponse,
    SaveWorkflowRequest,
    WorkflowPath,
    WorkflowsQuery,
    WorkflowUserQuery,
    WorkflowVersionQuery,
)
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("workflows", __name__, url_prefix="/api", abp_tags=[Tag(name="workflows")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}
# A built-in cannot be changed (403); a name you have already is a 409.
CHANGE_ERRORS: ResponseDict = {**ERRORS, 403: ErrorResponse, 409: ErrorResponse}
EXPORT: ResponseDict = {
    200: {
        "description": "The workflow's flow_config, as a JSON file to download (`Content-Disposition: "
        "attachment`); POST /api/workflows:import takes it back",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **ERRORS,
}
UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _one(message: str, workflow: SavedWorkflow) -> tuple[Response, int]:
    return envelope(True, message, data=workflow.model_dump(mode="json"))


@bp.get("/workflows", responses={200: SavedWorkflowsResponse, **ERRORS})
def list_workflows(query: WorkflowsQuery) -> tuple[Response, int]:
    """The built-ins, then your saved workflows (the most recently saved first), one page; the
    items leave out `workflow` (GET one for it)."""
    page = services().workflows.list_workflows(acting_user(query.user_id), query.limit, query.cursor)
    return envelope(
        True,
        "workflows retrieved",
        data=[w.model_dump(mode="json") for w in page.items],
        next_cursor=page.next_cursor,
    )


@bp.post("/workflows", responses={200: SavedWorkflowResponse, **CHANGE_ERRORS})
def create_workflow(body: SaveWorkflowRequest) -> tuple[Response, int]:
    """Save a workflow as version 1 under its `name` (unique among yours: a clash is a 409)."""
    saved = services().workflows.create(acting_user(body.user_id), body.workflow)
    return _one(f"workflow {saved.name} saved", saved)


@bp.post("/workflows:import", responses={200: SavedWorkflowResponse, **CHANGE_ERRORS})
def import_workflow(query: WorkflowUserQuery, body: AgentWorkFlowConfig) -> tuple[Response, int]:
    """Save a flow_config (an exported file, as it is) as a new workflow of yours."""
    saved = services().workflows.create(acting_user(query.user_id), body)
    return _one(f"workflow {saved.name} imported", saved)


@bp.get("/workflows/<workflow_id>", responses={200: SavedWorkflowResponse, **ERRORS})
def get_workflow(path: WorkflowPath, query: WorkflowVersionQuery) -> tuple[Response, int]:
    """A workflow with its flow_config: the newest version, or `version`."""
    found = services().workflows.get(acting_user(query.user_id), path.workflow_id, query.version)
    return _one("workflow retrieved", found)


@bp.put("/workflows/<workflow_id>", responses={200: SavedWorkflowResponse, **CHANGE_ERRORS})
def update_workflow(path: WorkflowPath, body: SaveWorkflowRequest) -> tuple[Response, int]:
    """Save the next version (its name may change); earlier versions stay readable."""
    saved = services().workflows.update(acting_user(body.user_id), path.workflow_id, body.workflow)
    return _one(f"workflow {saved.name} saved as version {saved.version}", saved)


@bp.delete("/workflows/<workflow_id>", responses={200: DeletedWorkflowResponse, **CHANGE_ERRORS})
def delete_workflow(path: WorkflowPath, query: WorkflowUserQuery) -> tuple[Response, int]:
    """Delete a workflow and all its versions (sessions and runs keep the id they recorded)."""
    services().workflows.delete(acting_user(query.user_id), path.workflow_id)
    return envelope(True, f"workflow {path.workflow_id} deleted", data={"id": path.workflow_id})


@bp.post("/workflows/<workflow_id>/copy", responses={200: SavedWorkflowResponse, **CHANGE_ERRORS})
def copy_workflow(path: WorkflowPath, body: CopyWorkflowRequest) -> tuple[Response, int]:
    """Make a workflow of your own from a built-in (or a version of yours), named `name` or as
    the original."""
    saved = services().workflows.copy(acting_user(body.user_id), path.workflow_id, body.version, body.name)
    return _one(f"workflow {saved.name} saved", saved)


@bp.get("/workflows/<workflow_id>/export", responses=EXPORT)
def export_workflow(path: WorkflowPath, query: WorkflowVersionQuery) -> Response:
    """The flow_config as a JSON file (`<name>.json`): the newest version, or `version`."""
    name, flow = services().workflows.export(acting_user(query.user_id), path.workflow_id, query.version)
    filename = (UNSAFE_FILENAME.sub("_", name).strip("._") or "workflow")[:100] + ".json"
    return Response(
        json.dumps(flow, indent=2, ensure_ascii=False) + "\n",
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
