"""`python -m autobots serve` and `python -m autobots run WORKFLOW.json "message"`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from .settings import load_settings
    from .web.server import serve

    settings = load_settings(args.config)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(settings.model_copy(update=updates))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run one workflow here, printing each agent message as it is said, then cost and timing."""
    from .agents.transcript import InnerMessage
    from .schemas.chat import Message
    from .schemas.workflow import AgentWorkFlowConfig
    from .services.chat import BadRequest, ChatService, RunFailed, RunObserver
    from .settings import load_settings
    from .storage.database import create_db_engine, make_session_factory, migrate
    from .storage.repository import Repository

    try:
        raw = json.loads(Path(args.workflow).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the file must hold a JSON object: a flow_config or a request body with one")
        flow = AgentWorkFlowConfig.model_validate(raw.get("flow_config", raw))
    except (OSError, ValueError, RecursionError) as exc:  # JSON and pydantic errors are ValueErrors
        print(f"error: cannot use workflow {args.workflow}: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    engine = create_db_engine(settings.database_url)
    migrate(engine)
    service = ChatService(settings, Repository(make_session_factory(engine)))

    def show(msg: InnerMessage) -> None:
        print(f"\n--- {msg.sender} -> {msg.recipient}\n{msg.content}", flush=True)

    try:
        reply = service.send_message(
            Message(user_id=args.user_id, content=args.message), flow, RunObserver(on_message=show)
        )
    except BadRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = reply.metadata or {}
    usage, timing = meta.get("usage", {}), meta.get("timing", {})
    print(f"\n=== answer\n{reply.content}\n")
    print(
        f"cost: ${usage.get('total_cost_usd', '0')}  tokens: {usage.get('prompt_tokens', 0)} prompt + "
        f"{usage.get('completion_tokens', 0)} completion = {usage.get('total_tokens', 0)}  "
        f"LLM calls: {usage.get('llm_calls', 0)}  time: {timing.get('duration_s', 0):.2f} s"
    )
    for note in usage.get("cost_notes", []):
        print(f"note: {note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autobots", description=__doc__)
    parser.add_argument("--config", help="config JSON (default: $AUTOBOTS_CONFIG or src/web/config.json)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API and the chat page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_serve)
    run = sub.add_parser("run", help="run one workflow from the command line")
    run.add_argument("workflow", help="a workflow JSON file (a flow_config, or a body with one)")
    run.add_argument("message")
    run.add_argument("--user-id", default="cli@autobots.local")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
