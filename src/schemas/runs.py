"""A run's statuses and the kinds of event it emits: one list for the server, the API document
(`RunInfo.status`) and the README, so no module spells them on its own."""

from __future__ import annotations

from enum import StrEnum

from ..execution.base import EVENT_RESULT, EVENT_START


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    AWAITING_INPUT = "awaiting_input"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


# A run in one of these may still change; the others are final.
UNFINISHED = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.AWAITING_INPUT})
TERMINAL = frozenset(set(RunStatus) - UNFINISHED)


class EventKind(StrEnum):
    STATUS = "status"
    MESSAGE = "message"
    TOKEN = "token"
    LLM_CALL = "llm_call"
    CODE_EXECUTION_START = EVENT_START
    CODE_EXECUTION_RESULT = EVENT_RESULT
    # An agent's tool (skill, built-in or MCP tool) called, and its result or error.
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    INPUT_REQUEST = "input_request"
    INPUT_TIMEOUT = "input_timeout"
    FINAL = "final"
    ERROR = "error"
