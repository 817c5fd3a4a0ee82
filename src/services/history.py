"""Run history by time expression: `GET /api/runs?since=...` and the built-in skill `past_runs`.

`since` (`parse_since`) is one of, in UTC unless a `tz` (IANA name, e.g. Europe/Paris) is given:
- `latest`: the newest run only;
- `today`, `yesterday`: that calendar day;
- `last week` / `last 7 days`: the 7 days up to now; `last month` / `last 30 days`: the 30 days
  up to now;
- `YYYY-MM-DD`: that day;
- an ISO datetime (`2025-03-01T14:30`, with or without an offset): the hour around it (30 minutes
  either side).
Anything else is a 400 listing these forms, so a caller (or an agent) learns what to send.

`past_runs(workflow, when)` is the same query as a tool that runs in the server (it reads the
database, which no sandbox can): bound to the run's user when the team is built, it only ever
reads that user's runs, and leaves out the run that calls it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..agents.tools import ServerTool, ToolFailed
from ..storage.history import HistoryFilter, HistoryRepository
from .errors import BadRequest

SINCE_FORMS = (
    "latest, today, yesterday, last week, last 7 days, last month, last 30 days, "
    "YYYY-MM-DD (that day) or an ISO datetime such as 2025-03-01T14:30 (the hour around it)"
)
MAX_RUNS = 500
# What `past_runs` gives an agent: a few runs, their answers cut to fit a prompt.
TOOL_RUNS = 10
TOOL_ANSWER_CHARS = 2000
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Window:
    start: datetime | None = None
    end: datetime | None = None
    latest: bool = False


def zone(tz: str | None) -> tzinfo:
    if not tz:
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):  # "America" is a directory
        raise BadRequest(
            f"tz: unknown time zone '{tz}' (give an IANA name such as Europe/Paris or UTC)"
        ) from None


def parse_since(since: str | None, tz: str | None = None, now: datetime | None = None) -> Window:
    """The time window `since` names (see the module's list); BadRequest for anything else."""
    try:
        return _parse_since(since, zone(tz), now)
    except OverflowError:  # 0001-01-01, 9999-12-31T23:59: the window leaves the calendar
        raise BadRequest(f"since: '{since}' is out of range; accepted: {SINCE_FORMS}") from None


def _parse_since(since: str | None, where: tzinfo, now: datetime | None) -> Window:
    if since is None or not since.strip():
        return Window()
    text = _SPACES.sub(" ", since.strip().lower())
    now = (now or datetime.now(UTC)).astimezone(where)
    if text == "latest":
        return Window(latest=True)
    if text == "today":
        return _day(now.date(), where)
    if text == "yesterday":
        return _day(now.date() - timedelta(days=1), where)
    if text in ("last week", "last 7 days"):
        return Window(now - timedelta(days=7))
    if text in ("last month", "last 30 days"):
        return Window(now - timedelta(days=30))
    if _DAY.match(text):
        try:
            return _day(date.fromisoformat(text), where)
        except ValueError:
            raise BadRequest(f"since: '{since}' is not a date; accepted: {SINCE_FORMS}") from None
    try:
        moment = datetime.fromisoformat(since.strip())
    except ValueError:
        raise BadRequest(f"since: '{since}' is not a time expression; accepted: {SINCE_FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=where)
    return Window(moment - timedelta(minutes=30), moment + timedelta(minutes=30))


def _day(day: date, where: tzinfo) -> Window:
    start = datetime.combine(day, time(), where)
    end = datetime.combine(day + timedelta(days=1), time(), where)
    return Window(start.astimezone(UTC), end.astimezone(UTC))


class RunHistory:
    def __init__(self, store: HistoryRepository) -> None:
        self._store = store

    def query(
        self,
        user_id: str,
        workflow: str | None = None,
        status: str | None = None,
        since: str | None = None,
        tz: str | None = None,
        limit: int = 20,
        exclude_run: str | None = None,
    ) -> list[dict[str, Any]]:
        """The user's runs matching the filters, newest first."""
        window = parse_since(since, tz)
        where = HistoryFilter(
            workflow=workflow or None,
            status=status or None,
            start=window.start.astimezone(UTC) if window.start else None,
            end=window.end.astimezone(UTC) if window.end else None,
            exclude_run=exclude_run,
        )
        return self._store.runs(user_id, where, 1 if window.latest else max(1, min(limit, MAX_RUNS)))

    def past_runs_tool(self, user_id: str | None, run_id: str | None = None) -> ServerTool:
        """The `past_runs` skill for one run: `user_id` None makes the offer only (validation)."""

        def call(arguments: dict[str, Any]) -> Any:
            if user_id is None:
                raise ToolFailed("past_runs cannot run here")
            try:
                runs = self.query(
                    user_id,
                    workflow=str(arguments.get("workflow") or "") or None,
                    since=str(arguments.get("when") or "latest"),
                    limit=TOOL_RUNS,
                    exclude_run=run_id,
                )
            except BadRequest as exc:
                raise ToolFailed(str(exc).replace("since:", "when:", 1)) from None
            return [_for_agent(r) for r in runs]

        return ServerTool(PAST_RUNS, PAST_RUNS_DESCRIPTION, PAST_RUNS_PARAMETERS, call if user_id else None)


def _for_agent(run: dict[str, Any]) -> dict[str, Any]:
    answer = run.get("answer") or ""
    usage = run.get("usage") or {}
    return {
        "run_id": run["run_id"],
        "workflow": (run.get("workflow") or {}).get("name"),
        "workflow_id": run.get("workflow_id"),
        "status": run["status"],
        "started_at": run["started_at"],
        "question": (run.get("question") or "")[:TOOL_ANSWER_CHARS],
        "answer": answer[:TOOL_ANSWER_CHARS] + (" ..." if len(answer) > TOOL_ANSWER_CHARS else ""),
        "total_tokens": usage.get("total_tokens"),
    }


PAST_RUNS = "past_runs"
PAST_RUNS_DESCRIPTION = (
    "Read the user's earlier runs (their questions and answers), newest first. `workflow`: a saved "
    "workflow's id or name, or empty for all. `when`: " + SINCE_FORMS + "."
)
PAST_RUNS_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "workflow": {
            "type": "string",
            "description": "a saved workflow's id or name; empty: any",
            "default": "",
        },
        "when": {"type": "string", "description": SINCE_FORMS, "default": "latest"},
    },
}
