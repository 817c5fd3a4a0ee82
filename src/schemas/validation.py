"""How a rejected body or workflow file is described to a person: every bad field by its path,
the way a user would look for it, in one sentence. The API's 400s and the CLI say the same."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation(
    exc: ValidationError, prefix: str = "invalid request"
) -> tuple[str, list[dict[str, str]]]:
    details = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        details.append({"field": path or "body", "message": err["msg"]})
    first = details[0] if details else {"field": "body", "message": "invalid"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{prefix}: {first['field']}: {first['message']}{more}", details
