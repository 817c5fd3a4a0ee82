"""Saved workflows as the API shows them (`/api/workflows`), and how a run names the one it runs.

A saved workflow is a user's named `flow_config`: every save is a new version and older versions
stay readable; its `name` is the workflow's own `name` field, unique per user. The built-ins (the
ready examples) are read-only workflows every user sees, with ids `builtin:<file stem>` and one
version, the file as it is now. A run records `WorkflowRef` (id and version) of what it ran.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from .api import Envelope, PagedEnvelope, UserId
from .pagination import PageQuery
from .workflow import AgentWorkFlowConfig

MAX_VERSION = 2**31 - 1
WorkflowIdField = Field(min_length=1, max_length=100)


class WorkflowRef(NamedTuple):
    """The saved workflow (or built-in) and version a session or run was started from."""

    workflow_id: str
    version: int


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SaveWorkflowRequest(_Body):
    """Create a workflow, or save a new version of one: its name is `workflow.name`."""

    user_id: str | None = UserId
    workflow: AgentWorkFlowConfig


class CopyWorkflowRequest(_Body):
    """Make your own workflow of one you can read (a built-in, or a version of your own)."""

    user_id: str | None = UserId
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="default: the newest")
    name: str | None = Field(
        default=None, min_length=1, max_length=200, description="the copy's name (default: the original's)"
    )


class WorkflowsQuery(PageQuery):
    """The built-ins come first, then your workflows, newest change first."""

    user_id: str | None = UserId


class WorkflowUserQuery(_Body):
    user_id: str | None = UserId


class WorkflowVersionQuery(_Body):
    user_id: str | None = UserId
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION, description="default: the newest")


class WorkflowPath(BaseModel):
    workflow_id: str = WorkflowIdField


class SavedWorkflow(BaseModel):
    id: str = Field(description="`wf_...` for yours, `builtin:<name>` for a built-in")
    name: str
    version: int = Field(description="the version shown")
    latest_version: int
    builtin: bool = Field(description="a ready example: read-only, copy it to change it")
    type: str = Field(description="the workflow type: autonomous, sequential or groupchat")
    description: str | None = None
    created_at: datetime | None = Field(default=None, description="null for a built-in")
    updated_at: datetime | None = Field(default=None, description="null for a built-in")
    workflow: dict[str, Any] | None = Field(default=None, description="the flow_config (left out of lists)")


class DeletedWorkflow(BaseModel):
    id: str


class SavedWorkflowResponse(Envelope[SavedWorkflow]):
    pass


class SavedWorkflowsResponse(PagedEnvelope[SavedWorkflow]):
    pass


class DeletedWorkflowResponse(Envelope[DeletedWorkflow]):
    pass
