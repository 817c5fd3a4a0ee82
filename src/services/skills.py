"""A user's skill library (`/api/skills`): functions stored once and named in agent configs
(`"skills": ["add"]`), resolved for the run's user when the team is built (`TeamGate`).

Rules: names are per user, and another user's skill answers as if it did not exist (404, and
unknown in a workflow); a skill is checked as an inline one is (`schemas/skills.py`) before it is
stored; the built-ins' names (`past_runs`) are reserved; a name is stored once (storing it again
is a 400: update it instead).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ..schemas.skills import SkillError, SkillSpec
from ..storage.skills import SkillExists, SkillRepository, StoredSkill
from .errors import BadRequest, NotFound


class SkillService:
    def __init__(self, store: SkillRepository, reserved: Collection[str]) -> None:
        self._store = store
        self._reserved = frozenset(reserved)

    def _checked(self, name: str, description: str, code: str) -> SkillSpec:
        if name in self._reserved:
            raise BadRequest(f"name: '{name}' is a built-in skill's name: choose another")
        try:
            return SkillSpec(name=name, description=description, code=code)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise BadRequest(_reason(exc)) from exc

    def create(self, user_id: str, skill: SkillSpec) -> dict[str, Any]:
        self._checked(skill.name, skill.description, skill.code)
        try:
            return _shown(self._store.add(user_id, skill.name, skill.description, skill.code))
        except SkillExists as exc:
            raise BadRequest(
                f"name: you already have a skill named '{skill.name}': update it with PUT /api/skills/{skill.name}"
            ) from exc

    def list_skills(self, user_id: str) -> list[dict[str, Any]]:
        return [_shown(s) for s in self._store.of_user(user_id)]

    def get(self, user_id: str, name: str) -> dict[str, Any]:
        found = self._store.get(user_id, name)
        if found is None:
            raise NotFound(f"skill {name} not found")
        return _shown(found)

    def update(self, user_id: str, name: str, description: str, code: str) -> dict[str, Any]:
        self._checked(name, description, code)
        updated = self._store.update(user_id, name, description, code)
        if updated is None:
            raise NotFound(f"skill {name} not found")
        return _shown(updated)

    def delete(self, user_id: str, name: str) -> None:
        if not self._store.delete(user_id, name):
            raise NotFound(f"skill {name} not found")

    def resolve(self, user_id: str, names: Collection[str]) -> dict[str, SkillSpec]:
        """The user's library skills of these names, ready to offer; names the user has none of
        are absent (the caller says which field named them)."""
        found: dict[str, SkillSpec] = {}
        for name, row in self._store.get_many(user_id, names).items():
            try:
                found[name] = SkillSpec(name=row.name, description=row.description, code=row.code)
            except ValueError as exc:
                raise BadRequest(
                    f"your library skill '{name}' can no longer be used: {_reason(exc)}"
                ) from exc
        return found


def _reason(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        message = str(first.get("msg", exc)).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return (
            message
            if isinstance(first.get("ctx", {}).get("error"), SkillError) or not loc
            else f"{loc}: {message}"
        )
    return str(exc)


def _shown(skill: StoredSkill) -> dict[str, Any]:
    return {
        "name": skill.name,
        "description": skill.description,
        "code": skill.code,
        "created_at": skill.created_at.isoformat(),
        "updated_at": skill.updated_at.isoformat(),
    }
