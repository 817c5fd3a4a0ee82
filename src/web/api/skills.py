"""A user's skill library: store a skill, list them, get, update (its description and code) and
delete one. Agent configs name library skills in `skills` (`"skills": ["add"]`); see
`services/skills.py` for the rules and `schemas/skills.py` for what makes a skill."""

from __future__ import annotations

from datetime import datetime

from flask import Response
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel, ConfigDict, Field

from ...schemas.api import Envelope, ErrorResponse
from ...schemas.skills import MAX_SKILL_CODE, MAX_SKILL_DESCRIPTION, SKILL_NAME_PATTERN, SkillSpec
from ..auth import acting_user
from ..context import services
from ..errors import envelope

bp = APIBlueprint("skills", __name__, url_prefix="/api", abp_tags=[Tag(name="skills")])
ERRORS: ResponseDict = {400: ErrorResponse, 404: ErrorResponse}


class StoreSkillRequest(SkillSpec):
    """A skill to keep in your library (a misspelt field is a 400, not a skill without code)."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=200)


class UpdateSkillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    description: str = Field(default="", max_length=MAX_SKILL_DESCRIPTION)
    code: str = Field(min_length=1, max_length=MAX_SKILL_CODE)


class SkillsQuery(BaseModel):
    user_id: str | None = Field(default=None, min_length=1, max_length=200)


class SkillPath(BaseModel):
    name: str = Field(pattern=SKILL_NAME_PATTERN)


class Skill(BaseModel):
    name: str
    description: str
    code: str
    created_at: datetime
    updated_at: datetime


class SkillResponse(Envelope[Skill]):
    pass


class SkillsResponse(Envelope[list[Skill]]):
    pass


class DeletedSkill(BaseModel):
    name: str


class DeletedSkillResponse(Envelope[DeletedSkill]):
    pass


@bp.post("/skills", responses={200: SkillResponse, **ERRORS})
def store_skill(body: StoreSkillRequest) -> tuple[Response, int]:
    """Keep a skill in your library (a name you have already is a 400: update it instead)."""
    skill = SkillSpec(name=body.name, description=body.description, code=body.code)
    data = services().skills.create(acting_user(body.user_id), skill)
    return envelope(True, f"skill {body.name} stored", data=data)


@bp.get("/skills", responses={200: SkillsResponse, **ERRORS})
def list_skills(query: SkillsQuery) -> tuple[Response, int]:
    """Your skills, by name."""
    return envelope(True, "skills retrieved", data=services().skills.list_skills(acting_user(query.user_id)))


@bp.get("/skills/<name>", responses={200: SkillResponse, **ERRORS})
def get_skill(path: SkillPath, query: SkillsQuery) -> tuple[Response, int]:
    """One of your skills."""
    return envelope(
        True, "skill retrieved", data=services().skills.get(acting_user(query.user_id), path.name)
    )


@bp.put("/skills/<name>", responses={200: SkillResponse, **ERRORS})
def update_skill(path: SkillPath, body: UpdateSkillRequest) -> tuple[Response, int]:
    """Replace a skill's description and code; runs from now on use the new code."""
    data = services().skills.update(acting_user(body.user_id), path.name, body.description, body.code)
    return envelope(True, f"skill {path.name} updated", data=data)


@bp.delete("/skills/<name>", responses={200: DeletedSkillResponse, **ERRORS})
def delete_skill(path: SkillPath, query: SkillsQuery) -> tuple[Response, int]:
    """Delete a skill; configs that name it are a 400 from then on."""
    services().skills.delete(acting_user(query.user_id), path.name)
    return envelope(True, f"skill {path.name} deleted", data={"name": path.name})
