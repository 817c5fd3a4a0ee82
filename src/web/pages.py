"""The chat page: `/`, its static files under `/static/`, and the example workflows it offers.

The page is plain ES modules and vendored libraries in `static/`, served as they are (no build
step). Caching: the page and its own modules are revalidated on every load (`no-cache` with an
ETag, so an unchanged file is a 304), and the vendored libraries, whose directories carry their
version, are cached for a year.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from flask import Response, request, send_from_directory
from flask.sansio.blueprints import BlueprintSetupState
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ValidationError

from ..execution import docker_available
from ..execution.errors import ExecutionUnavailable
from ..execution.local_executor import check_bwrap
from ..execution.settings import ExecutionSettings
from ..schemas.api import Envelope
from ..schemas.workflow import AgentWorkFlowConfig, WorkflowType
from .context import services
from .errors import envelope

log = logging.getLogger("autobots.web.pages")

WEB_DIR = Path(__file__).resolve().parent
STATIC_DIR = WEB_DIR / "static"
EXAMPLES_DIR = WEB_DIR / "examples"

# No inline script or style anywhere; images only from the page itself (a reply's markdown
# cannot make the browser fetch another site), and nothing may frame the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
REVALIDATE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
TYPE_ORDER = {t.value: i for i, t in enumerate(WorkflowType)}

bp = APIBlueprint("pages", __name__, abp_tags=[Tag(name="pages")])


class ExampleWorkflow(BaseModel):
    name: str
    type: str
    description: str
    flow_config: dict[str, Any]
    # Whether an agent runs code, and whether this server has the sandbox that code needs.
    needs_sandbox: bool = False
    sandbox_available: bool = True
    # The code asks for Docker, which this server lacks: it runs in the local sandbox instead.
    sandbox_fallback: bool = False


class ExamplesResponse(Envelope[list[ExampleWorkflow]]):
    pass


def load_examples(directory: Path = EXAMPLES_DIR) -> list[ExampleWorkflow]:
    """Every valid `*.json` workflow in `directory`, by workflow type and then name.

    A file that is not a workflow the server accepts is left out (and logged): offering it
    would only lead to a 400 on the first message.
    """
    examples = []
    for path in sorted(directory.glob("*.json")):
        try:
            flow = json.loads(path.read_text(encoding="utf-8"))
            parsed = AgentWorkFlowConfig.model_validate(flow)
        except (OSError, ValueError, ValidationError) as exc:
            log.error("example workflow %s left out: %s", path.name, exc)
            continue
        examples.append(
            ExampleWorkflow(
                name=str(flow.get("name") or parsed.name or path.stem),
                type=parsed.type.value,
                description=str(flow.get("description") or ""),
                flow_config=flow,
            )
        )
    # Within a type, teams that run code come last: the page picks the first example for a new
    # visitor, and a server without a sandbox must still answer that one.
    examples.sort(
        key=lambda e: (TYPE_ORDER.get(e.type, len(TYPE_ORDER)), _runs_code(e.flow_config), e.name.lower())
    )
    return examples


def _executors(value: Any) -> set[str]:
    """The executors a workflow's code-running agents ask for ("" for the server's default)."""
    if isinstance(value, dict):
        found: set[str] = set()
        config = value.get("config")
        if isinstance(config, dict) and config.get("code_execution_config") not in (None, False):
            code = config["code_execution_config"]
            found.add(str(code.get("executor") or "") if isinstance(code, dict) else "")
        for v in value.values():
            found |= _executors(v)
        return found
    if isinstance(value, list):
        return set().union(*(_executors(v) for v in value)) if value else set()
    return set()


_SANDBOX_CACHE: dict[tuple[int, str], tuple[float, str | None]] = {}
SANDBOX_CACHE_S = 60.0


def sandbox_for(settings: ExecutionSettings, kind: str) -> str | None:
    """The sandbox that would run code asking for executor `kind` ("" = the server's): "docker",
    "local" (asked for, or standing in for a missing Docker engine), "unsafe-local", or None
    where none can. Remembered for a minute."""
    kind = kind or settings.executor
    key = (id(settings), kind)
    cached = _SANDBOX_CACHE.get(key)
    if cached and time.monotonic() - cached[0] < SANDBOX_CACHE_S:
        return cached[1]
    found: str | None = None
    if kind == "unsafe-local":
        found = kind if settings.allow_unsafe_local else None
    elif kind == "docker" and docker_available(settings):
        found = "docker"
    elif kind == "local" or settings.fallback_to_local:
        try:
            check_bwrap()
            found = "local"
        except ExecutionUnavailable:
            found = None
    _SANDBOX_CACHE[key] = (time.monotonic(), found)
    return found


def sandbox_available(settings: ExecutionSettings, kind: str) -> bool:
    """Whether code asking for executor `kind` ("" = the server's) can run here."""
    return sandbox_for(settings, kind) is not None


def _runs_code(value: Any) -> bool:
    """Whether any agent of a workflow (members included) has code execution on."""
    if isinstance(value, dict):
        config = value.get("config")
        if isinstance(config, dict) and config.get("code_execution_config") not in (None, False):
            return True
        return any(_runs_code(v) for v in value.values())
    return isinstance(value, list) and any(_runs_code(v) for v in value)


@bp.get("/api/examples", responses={200: ExamplesResponse})
def examples() -> tuple[Response, int]:
    """Ready workflows, one or more per type, each with the `flow_config` to send."""
    found = load_examples()
    settings = services().settings.code_execution
    for example in found:
        kinds = _executors(example.flow_config)
        example.needs_sandbox = bool(kinds)
        example.sandbox_available = all(sandbox_available(settings, k) for k in kinds)
        example.sandbox_fallback = example.sandbox_available and any(
            (k or settings.executor) == "docker" and sandbox_for(settings, k) == "local" for k in kinds
        )
    return envelope(True, f"{len(found)} example workflows", data=[e.model_dump(mode="json") for e in found])


@bp.get("/", doc_ui=False)
def index() -> Response:
    """The chat page."""
    response = send_from_directory(STATIC_DIR, "index.html")
    response.headers["Cache-Control"] = REVALIDATE
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def static_file(filename: str) -> Response:
    return send_from_directory(STATIC_DIR, filename)


@bp.record_once
def _serve_static(state: BlueprintSetupState) -> None:
    """Serve `/static/` from this folder, unless the app already does (Flask's default does)."""
    app = state.app
    if not app.has_static_folder or Path(app.static_folder or "").resolve() != STATIC_DIR:
        app.add_url_rule("/static/<path:filename>", endpoint="pages.static", view_func=static_file)


@bp.after_app_request
def _static_cache_headers(response: Response) -> Response:
    """Cache rules for the page's static files, whichever route served them."""
    if request.endpoint not in ("static", "pages.static") or response.status_code not in (200, 304):
        return response
    filename = (request.view_args or {}).get("filename", "")
    if filename.startswith("vendor/"):
        response.headers["Cache-Control"] = IMMUTABLE
    else:
        response.headers["Cache-Control"] = REVALIDATE
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
