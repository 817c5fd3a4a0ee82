"""The tools of streamable-HTTP MCP servers, offered to agents like skills (`tools.py`).

Through AutoGen's `autogen.mcp` (`create_toolkit` turns a session's MCP tools into AutoGen tools,
with the server's own JSON schemas) over the `mcp` package's streamable-HTTP client. Agents run
synchronously and outlive no request, so no MCP session is kept open across a run: listing the
tools (when the team is built) and each call open a short session of their own, in a thread of
their own (its own event loop), each within `timeout_s`. Whether a URL may be called at all is
checked before (`tools.mcp_allowed_urls`, `TeamGate`); redirects are never followed.

A server that cannot be reached or listed when the run starts fails the run with a message naming
it (`WorkflowConfigError`); a call that fails is the tool's error, told to the calling agent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import anyio
import httpx

from ..schemas.workflow import AgentConfig
from .factory import WorkflowConfigError
from .tools import ToolFailed, ToolSpec

T = TypeVar("T")


class McpTools:
    def __init__(self, timeout_s: float = 30) -> None:
        self._timeout_s = timeout_s

    def tools(self, server_name: str, url: str) -> Sequence[ToolSpec]:
        """The server's tools, each calling back to it when run."""
        try:
            listed = self._in_session(url, _list)
        except Exception as exc:
            raise WorkflowConfigError(
                f"MCP server '{server_name}' ({url}) could not be asked for its tools: {_reason(exc)}"
            ) from exc
        specs = []
        for name, description, parameters in listed:

            def run(_executing: AgentConfig | None, arguments: dict[str, Any], tool: str = name) -> Any:
                try:
                    return self._in_session(url, lambda session: _call(session, tool, arguments))
                except ToolFailed:
                    raise
                except Exception as exc:
                    raise ToolFailed(f"MCP server '{server_name}': {_reason(exc)}") from exc

            specs.append(
                ToolSpec(name, description, parameters, f"mcp:{url}:{name}", f"mcp:{server_name}", run)
            )
        return specs

    def _in_session(self, url: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work(session)` in a fresh MCP session, in a thread with its own event loop."""
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        timeout = self._timeout_s

        async def session_and_work() -> T:
            with anyio.fail_after(timeout):
                async with (
                    httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http,
                    streamable_http_client(url, http_client=http) as (read, write, _),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    return await work(session)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp") as pool:
            future = pool.submit(anyio.run, session_and_work)
            try:
                return future.result(timeout=timeout + 5)
            except FutureTimeout:
                raise TimeoutError(f"no answer within {timeout:g} s") from None


async def _list(session: Any) -> list[tuple[str, str, dict[str, Any]]]:
    from autogen.mcp import create_toolkit

    toolkit = await create_toolkit(session, use_mcp_resources=False)
    found = []
    for tool in toolkit.tools:
        offered: dict[str, Any] = dict(tool._func_schema or {})
        schema = offered.get("function", {}).get("parameters") or {"type": "object"}
        found.append((tool.name, tool.description or "", dict(schema)))
    return found


async def _call(session: Any, name: str, arguments: dict[str, Any]) -> Any:
    from autogen.mcp import create_toolkit

    toolkit = await create_toolkit(session, use_mcp_resources=False)
    tool = next((t for t in toolkit.tools if t.name == name), None)
    if tool is None:
        raise ToolFailed(f"the MCP server no longer offers the tool '{name}'")
    try:
        content, _other = await tool.func(**arguments)
    except ValueError as exc:  # autogen.mcp's "Tool call failed: ..."
        raise ToolFailed(str(exc)) from exc
    if isinstance(content, str):
        try:
            return json.loads(content)
        except ValueError:
            return content
    return content


def _reason(exc: BaseException) -> str:
    """The innermost cause of a failure (anyio wraps them in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
