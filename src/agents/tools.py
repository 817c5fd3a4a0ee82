"""Tools the agents of one run call: skills (Python functions as source), built-in server tools
(`past_runs`) and the tools of MCP servers, offered through AutoGen's function calling.

Contract:
- An agent whose config lists `skills` (or `mcp_servers`) is offered those tools
  (`Tool.register_for_llm`: they go into its `llm_config["tools"]`); every *other* agent of the
  run can execute them (`Tool.register_for_execution`), so the agent it talks to runs the call,
  whichever was built first (a two-party chat's partner; in a group chat, the member the manager
  picks among those that can).
- A skill never runs in the server process: it runs in the sandbox of the executing agent
  (its `code_execution_config`, or the server's default sandbox when that is false: the
  `sandbox` callback, `RunExecutors.for_tools`), with that sandbox's timeout and output cap and
  none of the server's environment. Arguments go in as JSON, the return value comes back as JSON
  (`harness`); an exception, a timeout, a kill or a missing result comes back to the calling
  agent as the tool's error (AutoGen sends "Error: ..."), never as a failed run.
- Built-in tools (`ServerTool`) run in the server, on the run's user's data only (the caller
  gives them bound to that user). MCP tools are called on their server (`mcp.py`).
- Two tools of one name in one run must be the same tool (the same skill source, built-in or MCP
  tool); anything else is a name clash, a `WorkflowConfigError` (a 400 at validation).
- Every call is a `tool_call` event (name, arguments, the executing agent) and a `tool_result`
  event (result or error, duration), through `on_event`.

Validation (`TeamGate.validate_flow`) builds the team with a ToolBox that has no sandbox and does
not contact MCP servers: the offers and clashes are checked, nothing runs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autogen import Agent, ConversableAgent
from autogen.coding.base import CodeBlock, CommandLineCodeResult
from autogen.tools import Tool

from ..schemas.runs import EventKind
from ..schemas.skills import SkillSpec
from ..schemas.workflow import AgentConfig
from .factory import WorkflowConfigError

EventSink = Callable[[str, dict[str, Any]], None]
# How long a tool result may be in an event (the tool's answer to the model is not cut).
EVENT_TEXT_LIMIT = 8000
# What a skill may print before its result: kept for its error report, the rest discarded.
PRINT_KEEP = 2000
# Exit codes the sandboxes report (execution/base.py).
_TIMED_OUT, _KILLED = 124, 137


class Sandbox(Protocol):
    """What a skill needs of a sandbox executor (`execution.SandboxExecutor`)."""

    @property
    def timeout_s(self) -> int: ...

    def execute_quietly(self, block: CodeBlock) -> CommandLineCodeResult: ...


SandboxSource = Callable[[AgentConfig | None], Sandbox]


class ToolFailed(Exception):
    """The tool call did not give a result; the message is what the calling agent is told."""


@dataclass(frozen=True)
class ServerTool:
    """A tool that runs in the server (it reads the server's data, for the run's user only).
    `call` is None where the team is only checked (validation)."""

    name: str
    description: str
    parameters: dict[str, Any]
    call: Callable[[dict[str, Any]], Any] | None = None


class McpSource(Protocol):
    """The tools of a run's MCP servers (`mcp.py`)."""

    def tools(self, server_name: str, url: str) -> Sequence[ToolSpec]: ...


@dataclass(frozen=True)
class ToolSpec:
    """One tool as offered to a model, and how a call of it runs."""

    name: str
    description: str
    parameters: dict[str, Any]
    # Two offers of one name are the same tool only if their identities are equal.
    identity: str
    origin: str  # "skill", "builtin" or "mcp:<server name>"
    # Runs a call: the executing agent's config (None: no config, the default user proxy) and
    # the arguments; returns the JSON-serialisable result or raises ToolFailed.
    run: Callable[[AgentConfig | None, dict[str, Any]], Any] = field(compare=False, repr=False)


@dataclass
class _Member:
    agent: ConversableAgent
    cfg: AgentConfig | None
    offered: set[str]
    executes: set[str] = field(default_factory=set)


class ToolBox:
    """The tools of one run and which agents offer and execute them; thread-safe (receivers of
    one run are built in parallel)."""

    def __init__(
        self,
        sandbox: SandboxSource | None = None,
        on_event: EventSink | None = None,
        builtins: Mapping[str, ServerTool] | None = None,
        mcp: McpSource | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._on_event = on_event
        self._builtins = dict(builtins or {})
        self._mcp = mcp
        self._lock = threading.Lock()
        self._tools: dict[str, ToolSpec] = {}
        self._members: list[_Member] = []

    # building ----------------------------------------------------------------------------------

    def attach(self, agent: ConversableAgent, cfg: AgentConfig | None) -> None:
        """Offer `agent` its config's tools, and let it execute every other agent's."""
        wants = cfg is not None and bool(cfg.skills or cfg.mcp_servers)
        if wants and not agent.llm_config:
            raise WorkflowConfigError(
                f"agent '{agent.name}': skills and mcp_servers need an llm_config (only a model calls tools)"
            )
        offered = self._resolve(agent.name, cfg) if cfg is not None else []
        with self._lock:
            for spec in offered:
                known = self._tools.get(spec.name)
                if known is not None and known.identity != spec.identity:
                    raise WorkflowConfigError(
                        f"agent '{agent.name}': tool '{spec.name}' ({spec.origin}) clashes with another "
                        f"tool of that name in this workflow ({known.origin}): give one of them another name"
                    )
            for spec in offered:
                self._tools.setdefault(spec.name, spec)
                _as_tool(spec, lambda **_: None).register_for_llm(agent)
            member = _Member(agent, cfg, {s.name for s in offered})
            self._members.append(member)
            for each in self._members:
                for name, spec in self._tools.items():
                    if name not in each.offered and name not in each.executes:
                        if not each.executes:
                            answer_tool_calls_first(each.agent)
                        _as_tool(spec, self._executor(spec, each)).register_for_execution(each.agent)
                        each.executes.add(name)

    def _resolve(self, agent_name: str, cfg: AgentConfig) -> list[ToolSpec]:
        specs: list[ToolSpec] = []
        for ref in cfg.skills:
            if isinstance(ref, SkillSpec):
                if ref.name in self._builtins:
                    raise WorkflowConfigError(
                        f"agent '{agent_name}': skill '{ref.name}' has the name of a built-in skill: rename it"
                    )
                specs.append(self._skill(ref))
            elif ref in self._builtins:
                specs.append(self._builtin(self._builtins[ref]))
            else:
                raise WorkflowConfigError(
                    f"agent '{agent_name}': no skill named '{ref}' (not in your skill library, "
                    f"not a built-in: {', '.join(sorted(self._builtins)) or 'none'})"
                )
        if self._mcp is not None:
            for server in cfg.mcp_servers:
                specs.extend(self._mcp.tools(server.name, server.url))
        names = [s.name for s in specs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise WorkflowConfigError(f"agent '{agent_name}': tool name(s) {', '.join(twice)} offered twice")
        return specs

    def _skill(self, skill: SkillSpec) -> ToolSpec:
        digest = hashlib.sha256(skill.code.encode()).hexdigest()

        def run(executing: AgentConfig | None, arguments: dict[str, Any]) -> Any:
            if self._sandbox is None:
                raise ToolFailed("skills cannot run here (no sandbox)")
            return run_skill(self._sandbox(executing), skill, arguments)

        return ToolSpec(skill.name, skill.summary, skill.parameters, f"skill:{digest}", "skill", run)

    @staticmethod
    def _builtin(tool: ServerTool) -> ToolSpec:
        def run(_executing: AgentConfig | None, arguments: dict[str, Any]) -> Any:
            if tool.call is None:
                raise ToolFailed(f"{tool.name} cannot run here")
            return tool.call(arguments)

        return ToolSpec(tool.name, tool.description, tool.parameters, f"builtin:{tool.name}", "builtin", run)

    # running -----------------------------------------------------------------------------------

    def _executor(self, spec: ToolSpec, member: _Member) -> Callable[..., str]:
        """The function the executing agent calls for `spec` (AutoGen passes the arguments)."""
        agent_name, cfg = member.agent.name, member.cfg

        def execute(**arguments: Any) -> str:
            self._emit(
                EventKind.TOOL_CALL,
                {"name": spec.name, "arguments": arguments, "agent": agent_name, "origin": spec.origin},
            )
            started = time.monotonic()
            try:
                result = spec.run(cfg, arguments)
            except ToolFailed as exc:
                self._result(spec, agent_name, started, error=str(exc))
                raise
            except Exception as exc:  # a built-in's or MCP failure: the agent is told, the run goes on
                self._result(spec, agent_name, started, error=f"{type(exc).__name__}: {exc}")
                raise ToolFailed(f"{type(exc).__name__}: {exc}") from exc
            text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
            self._result(spec, agent_name, started, result=result)
            return text

        return execute

    def _result(
        self, spec: ToolSpec, agent: str, started: float, result: Any = None, error: str | None = None
    ) -> None:
        data: dict[str, Any] = {
            "name": spec.name,
            "agent": agent,
            "duration_s": round(time.monotonic() - started, 3),
        }
        if error is not None:
            data["error"] = error[:EVENT_TEXT_LIMIT]
        else:
            shown = json.dumps(result, ensure_ascii=False, default=str)
            data["result"] = result if len(shown) <= EVENT_TEXT_LIMIT else shown[:EVENT_TEXT_LIMIT] + " ..."
        self._emit(EventKind.TOOL_RESULT, data)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event(kind, data)


def answer_tool_calls_first(agent: ConversableAgent) -> None:
    """Make the agent answer a message of tool calls with their results before anything else
    decides its reply: AutoGen checks termination and the auto-reply count first, and a user
    proxy that replies to nothing (`max_consecutive_auto_reply: 0`, the default sender) would end
    the chat on the call instead of running it. Only a message that holds tool calls is answered
    this way; every other message goes through the agent's replies as before."""
    agent.register_reply([Agent, None], ConversableAgent.generate_tool_calls_reply, position=0)


def _as_tool(spec: ToolSpec, func: Callable[..., Any]) -> Tool:
    return Tool(
        name=spec.name,
        description=spec.description,
        func_or_tool=func,
        parameters_json_schema=spec.parameters,
    )


# the sandbox side -------------------------------------------------------------------------------

_HARNESS = '''\
import io, json, sys, traceback
_MARK, _NAME, _SOURCE, _ARGS, _KEEP = {mark!r}, {name!r}, {source!r}, {args!r}, {keep!r}
_out = sys.stdout


class _Kept(io.TextIOBase):
    """What the skill prints: the first {keep} characters are kept for an error report."""

    def __init__(self):
        self.text = ""

    def writable(self):
        return True

    def write(self, s):
        if len(self.text) < _KEEP:
            self.text += s[: _KEEP - len(self.text)]
        return len(s)


_printed = _Kept()
sys.stdout = sys.stderr = _printed


def _report(payload):
    payload["printed"] = _printed.text
    _out.write("\\n" + _MARK + json.dumps(payload) + "\\n")
    _out.flush()


try:
    _ns = {{"__name__": "__skill__"}}
    exec(compile(_SOURCE, "<skill " + _NAME + ">", "exec"), _ns)
    _result = _ns[_NAME](**json.loads(_ARGS))
except BaseException as _exc:
    _frames = [f for f in traceback.extract_tb(_exc.__traceback__) if f.filename.startswith("<skill ")]
    _where = " (line %d of the skill)" % _frames[-1].lineno if _frames else ""
    _report({{"error": "%s: %s%s" % (type(_exc).__name__, _exc, _where)}})
else:
    try:
        _encoded = json.loads(json.dumps(_result))
    except (TypeError, ValueError) as _exc:
        _report({{"error": "the return value is not JSON-serialisable: %s" % _exc}})
    else:
        _report({{"result": _encoded}})
'''


def harness(skill: SkillSpec, arguments: dict[str, Any], mark: str) -> str:
    """The program the sandbox runs for one call: the skill's source, defined and called there;
    everything enters as string literals (no part of the source or arguments is code of ours)."""
    return _HARNESS.format(
        mark=mark, name=skill.name, source=skill.code, args=json.dumps(arguments), keep=PRINT_KEEP
    )


def run_skill(sandbox: Sandbox, skill: SkillSpec, arguments: dict[str, Any]) -> Any:
    """Call the skill in the sandbox; its JSON result, or ToolFailed saying what went wrong."""
    mark = f"@@autobots-skill-result-{secrets.token_hex(8)}@@"
    outcome = sandbox.execute_quietly(CodeBlock(code=harness(skill, arguments, mark), language="python"))
    report = _report_in(outcome.output, mark)
    if report is not None:
        if "error" in report:
            printed = str(report.get("printed") or "").strip()
            raise ToolFailed(str(report["error"]) + (f"\nIt printed:\n{printed[-1000:]}" if printed else ""))
        return report.get("result")
    if outcome.exit_code == _TIMED_OUT:
        raise ToolFailed(f"the skill '{skill.name}' ran longer than {sandbox.timeout_s} s and was stopped")
    if outcome.exit_code == _KILLED:
        raise ToolFailed(
            f"the skill '{skill.name}' was killed (most likely for exceeding the sandbox's memory)"
        )
    tail = outcome.output.strip()[-1000:]
    raise ToolFailed(
        f"the skill '{skill.name}' ended without a result (exit code {outcome.exit_code})"
        + (f": {tail}" if tail else "")
    )


def _report_in(output: str, mark: str) -> dict[str, Any] | None:
    for line in reversed(output.splitlines()):
        if line.startswith(mark):
            try:
                report = json.loads(line[len(mark) :])
            except ValueError:
                raise ToolFailed("the skill's result was larger than the sandbox's output limit") from None
            return report if isinstance(report, dict) else None
    return None
