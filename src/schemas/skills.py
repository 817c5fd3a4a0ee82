"""Skills: Python functions, sent as source, that agents are offered as tools.

A skill is checked here by reading its source, never by running it: the server never executes a
skill (it runs in the run's sandbox, `agents/tools.py`), so whatever the module would do at import
time must not happen in this process either. Reading the source is enough to refuse what could
not work as a tool, as a 400 naming the skill before anything is stored:
- not Python (a syntax error), or no top-level `def <name>(...)` (not a function; `async def` is
  refused too: the sandbox calls it as a plain function);
- an argument without a type hint, a type the tool schema cannot say in JSON, or `*args` /
  `**kwargs` (a tool call's arguments are named JSON values);
- no description and no docstring (the model is told what the tool does by one of them).

From the same reading comes the tool's JSON schema (`parameters`), which is what the model sees.
"""

from __future__ import annotations

import ast
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_validator

# A Python identifier that OpenAI accepts as a function name.
SKILL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_SKILL_CODE = 100_000
MAX_SKILL_DESCRIPTION = 4000

_SCALARS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "list": {"type": "array"},
    "List": {"type": "array"},
    "dict": {"type": "object"},
    "Dict": {"type": "object"},
    "Any": {},
    "None": {"type": "null"},
}
SUPPORTED_TYPES = "int, float, str, bool, list[...], dict[str, ...], X | None, Optional[X], Literal[...], Any"


class SkillError(ValueError):
    """The skill cannot be a tool; the message names it and says why."""


class SkillSpec(BaseModel):
    """One skill as an agent config or the skill library holds it."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=SKILL_NAME_PATTERN, description="the function's name: the tool's name")
    description: str = Field(
        default="",
        max_length=MAX_SKILL_DESCRIPTION,
        description="what the tool does, for the model (default: the function's docstring)",
    )
    code: str = Field(
        min_length=1,
        max_length=MAX_SKILL_CODE,
        description="Python source defining `def <name>(...)` with type hints on every argument",
    )
    _parameters: dict[str, Any] = PrivateAttr(default_factory=dict)
    _doc: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _readable(self) -> SkillSpec:
        self._parameters, self._doc = analyse(self.name, self.code)
        if not self.description.strip() and not self._doc:
            raise SkillError(f"skill '{self.name}': give it a description or a docstring")
        return self

    @property
    def parameters(self) -> dict[str, Any]:
        """The tool's arguments as a JSON schema (an object of named properties)."""
        return self._parameters

    @property
    def summary(self) -> str:
        """What the model is told the tool does."""
        return self.description.strip() or self._doc


def analyse(name: str, code: str) -> tuple[dict[str, Any], str]:
    """The JSON schema of `name`'s arguments and its docstring, read from `code`; SkillError
    (naming the skill) if it cannot be a tool."""
    where = f"skill '{name}'"
    try:
        module = ast.parse(code, filename=f"<skill {name}>")
    except SyntaxError as exc:
        if exc.lineno is None:  # e.g. a NUL byte in the source
            raise SkillError(f"{where}: {exc.msg}") from None
        raise SkillError(f"{where}: syntax error on line {exc.lineno}: {exc.msg}") from None
    except ValueError as exc:
        raise SkillError(f"{where}: {exc}") from None
    found = [
        n for n in module.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name
    ]
    if not found:
        defined = [n.name for n in module.body if isinstance(n, ast.FunctionDef)]
        hint = f" (it defines {', '.join(defined)})" if defined else ""
        raise SkillError(f"{where}: the code must define a top-level function `def {name}(...)`{hint}")
    func = found[-1]
    if isinstance(func, ast.AsyncFunctionDef):
        raise SkillError(f"{where}: must be a plain `def`, not `async def`")
    args = func.args
    if args.vararg is not None or args.kwarg is not None:
        raise SkillError(f"{where}: *args and **kwargs cannot be tool arguments; name every argument")
    positional = [*args.posonlyargs, *args.args]
    defaults: dict[str, ast.expr] = dict(
        zip([a.arg for a in positional][len(positional) - len(args.defaults) :], args.defaults, strict=True)
    )
    defaults.update(
        {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}
    )
    properties: dict[str, Any] = {}
    required: list[str] = []
    for arg in [*positional, *args.kwonlyargs]:
        if arg.annotation is None:
            raise SkillError(f"{where}: argument '{arg.arg}' has no type hint (supported: {SUPPORTED_TYPES})")
        schema = _schema(arg.annotation, f"{where}: argument '{arg.arg}'")
        if arg.arg in defaults:
            # A default that is a JSON value goes into the schema; any other (computed, or a
            # Python-only literal such as 1j or {1, 2}) stays out: the sandbox computes it.
            if (default := _json_default(defaults[arg.arg])) is not _NO_DEFAULT:
                schema = {**schema, "default": default}
        else:
            required.append(arg.arg)
        properties[arg.arg] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return parameters, (ast.get_docstring(func) or "").strip()


_NO_DEFAULT = object()


def _json_default(node: ast.expr) -> Any:
    """The default's value if it is a literal that JSON can carry as it is, else _NO_DEFAULT."""
    try:
        value = ast.literal_eval(node)
        if json.loads(json.dumps(value, allow_nan=False)) != value:
            return _NO_DEFAULT  # a tuple becomes a list: not the same default
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, OverflowError):
        return _NO_DEFAULT
    return value


def _schema(node: ast.expr, where: str) -> dict[str, Any]:
    """The JSON schema of one annotation."""
    if isinstance(node, ast.Constant) and node.value is None:
        return {"type": "null"}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        try:
            return _schema(ast.parse(node.value, mode="eval").body, where)
        except SyntaxError:
            raise SkillError(f"{where}: cannot read the type hint {node.value!r}") from None
    if isinstance(node, ast.Name | ast.Attribute):
        name = node.id if isinstance(node, ast.Name) else node.attr
        if name in _SCALARS:
            return dict(_SCALARS[name])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return {"anyOf": [_schema(node.left, where), _schema(node.right, where)]}
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else getattr(node.value, "attr", "")
        items = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base in ("list", "List", "Sequence") and len(items) == 1:
            return {"type": "array", "items": _schema(items[0], where)}
        if base in ("dict", "Dict", "Mapping") and len(items) == 2:
            return {"type": "object", "additionalProperties": _schema(items[1], where)}
        if base == "Optional" and len(items) == 1:
            return {"anyOf": [_schema(items[0], where), {"type": "null"}]}
        if base == "Union":
            return {"anyOf": [_schema(i, where) for i in items]}
        if base == "Literal" and all(isinstance(i, ast.Constant) for i in items):
            return {"enum": [i.value for i in items if isinstance(i, ast.Constant)]}
    raise SkillError(f"{where}: the type hint `{ast.unparse(node)}` is not supported (use {SUPPORTED_TYPES})")


# A skill an agent names: one of the user's library (`/api/skills`), or a built-in (`past_runs`).
SkillName = Annotated[
    str, Field(pattern=SKILL_NAME_PATTERN, description="a library or built-in skill's name")
]
SkillRef = Annotated[
    Annotated[SkillName, Tag("name")] | Annotated[SkillSpec, Tag("skill")],
    Discriminator(lambda v: "name" if isinstance(v, str) else "skill"),
]


def skill_name(ref: str | SkillSpec) -> str:
    return ref if isinstance(ref, str) else ref.name


def check_unique(refs: list[str | SkillSpec]) -> list[str | SkillSpec]:
    """An agent's skills, each name once (two tools of one name would shadow each other)."""
    seen: set[str] = set()
    for ref in refs:
        name = skill_name(ref)
        if name in seen:
            raise SkillError(f"skill '{name}' is given twice to the same agent")
        seen.add(name)
    return refs


class McpServer(BaseModel):
    """A streamable-HTTP MCP server whose tools an agent is offered (allowed URLs only:
    `tools.mcp_allowed_urls`)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,40}$", description="what the run's events call it")
    url: str = Field(
        min_length=8, max_length=2000, pattern=r"^https?://", description="its streamable-HTTP URL"
    )
