"""How every autobots process logs: configured once, by the entry point (`serve`, `worker`).

`configure(fmt)` sends all logging to stderr as `text` (for people) or `json` (one object a line,
for a log collector): `time` (UTC, ISO 8601), `level`, `logger`, `event` (the message), then
`request_id`, `user_id` and `run_id` when the line is written on behalf of one (context
variables, so a line is attributed wherever in the call stack it is written, and threads of
other requests never see them), then the line's own fields (`extra={"fields": {...}}`), and the
traceback as `exc`. Python warnings and uncaught exceptions in threads become log lines too, so
nothing on stderr is outside the format.

Lines at INFO and above never hold what users say or send (message content, prompts, keys,
tokens): those are at DEBUG at most. This module is a leaf: it imports nothing of the app.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
user_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("run_id", default=None)
CONTEXT = (("request_id", request_id), ("user_id", user_id), ("run_id", run_id))

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers that say at INFO what no operator needs (httpx: a line per LLM request).
QUIET = ("httpx", "httpcore", "urllib3", "docker", "autogen.oai.client")

# Attributes every LogRecord has: what is left in a record's __dict__ are `extra` fields.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


@contextlib.contextmanager
def bound(var: contextvars.ContextVar[str | None], value: str | None) -> Iterator[None]:
    """`var` is `value` inside the block (in this thread or task), as it was after it."""
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's context and own fields, in the order they are shown."""
    out: dict[str, Any] = {}
    for name, var in CONTEXT:
        value = getattr(record, name, None) or var.get()
        if value is not None:
            out[name] = value
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        out.update(fields)
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in out and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(record_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = record_fields(record)
        if not fields:
            return text
        head, sep, tail = text.partition("\n")  # a traceback stays below the line
        return head + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + sep + tail


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    """Make stderr this format for the whole process (every logger, warnings, thread crashes)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    threading.excepthook = _thread_crashed
    sys.excepthook = _crashed


def _crashed(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("autobots").critical("uncaught exception", exc_info=(kind, exc, tb))


def _thread_crashed(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)
    logging.getLogger("autobots").error("uncaught exception in thread %s", name, exc_info=exc_info)
