"""`python -m autobots serve | worker | run WORKFLOW.json "message" | keys create|list|revoke |
webhooks secret`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the annotation only: the commands import the server where they use it
    from .services.identity import IdentityService
    from .settings import Settings


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from .auth.settings import AuthMode
    from .settings import load_settings
    from .web.server import serve

    settings = _observed(load_settings(args.config), args.log_format)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=updates)
    workers = args.workers or 1
    if workers < 1 or (workers > 1 and not settings.runs.distributed):
        print(
            "error: --workers N (N > 1) needs the distributed mode: live runs are per process "
            "without a broker. Set AUTOBOTS_BROKER_URL (redis://...) and a PostgreSQL "
            "AUTOBOTS_DATABASE_URL, and start `python -m autobots worker` beside it.",
            file=sys.stderr,
        )
        return 2
    if settings.auth.mode is AuthMode.NONE and not _is_loopback(settings.host) and not args.insecure_no_auth:
        print(
            f"error: refusing to listen on {settings.host}: with auth.mode none anyone who reaches the "
            "server reads and deletes everyone's data. Turn sign-in on (AUTOBOTS_AUTH__MODE=token, then "
            "`python -m autobots keys create USER`), listen on 127.0.0.1, or start with "
            "--insecure-no-auth if the network in front of it is yours alone.",
            file=sys.stderr,
        )
        return 2
    mode = settings.auth.mode.value
    print(
        f"autobots: the chat page will be at http://{_url_host(settings.host)}:{settings.port}/ "
        f"(auth.mode {mode}; database {_shown_url(settings.database_url)})",
        flush=True,
    )
    serve(settings, workers)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .settings import load_settings

    settings = _observed(load_settings(args.config), args.log_format)
    from .worker import run_worker  # after _observed: it imports prometheus_client

    if not settings.runs.distributed:
        print(
            "error: `worker` runs the distributed mode's queued runs: set runs.broker_url "
            "(AUTOBOTS_BROKER_URL=redis://... or amqp://...) and a PostgreSQL database_url; "
            "without a broker, `serve` runs every run itself.",
            file=sys.stderr,
        )
        return 2
    return run_worker(
        settings,
        args.concurrency or settings.runs.worker_concurrency,
        metrics_at=(args.metrics_host, args.metrics_port) if args.metrics_port else None,
    )


def _observed(settings: Settings, log_format: str | None) -> Settings:
    """What a server or worker process does first: its log format for the whole process, and,
    before anything imports prometheus_client, the machine's multiprocess dir for the metrics
    (made, and cleared of the files of processes that are gone)."""
    from . import logs
    from .settings import LogFormat, SettingsError, metrics_dir

    if log_format is not None:
        settings = settings.model_copy(update={"log_format": LogFormat(log_format)})
    logs.configure(settings.log_format.value)
    if settings.metrics.enabled:
        path = metrics_dir(settings)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            (path / ".writable").touch()
        except OSError as exc:
            raise SettingsError(
                f"error: the metrics directory {path} cannot be written ({exc.strerror}): set "
                "metrics.multiproc_dir (AUTOBOTS_METRICS__MULTIPROC_DIR) or data_dir to a writable "
                "directory, or metrics.enabled to false"
            ) from exc
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # read by prometheus_client at import
        from .services.metrics import remove_stale_files

        remove_stale_files(path)
    return settings


def _shown_url(url: str) -> str:
    """A database URL as it may be printed: its password masked."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: show only its scheme
        return url.split(":", 1)[0] + "://..."


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _identity(config: str | None) -> IdentityService:
    from .services.identity import IdentityService
    from .settings import load_settings
    from .storage.database import create_db_engine, make_session_factory, migrate
    from .storage.identity import IdentityRepository

    settings = load_settings(config)
    engine = create_db_engine(
        settings.database_url, settings.database_pool_size, settings.database_max_overflow
    )
    migrate(engine)
    return IdentityService(settings.auth, IdentityRepository(make_session_factory(engine)))


def _when(value: object) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else "-"


def _keys(args: argparse.Namespace) -> int:
    """Make, list and revoke API keys (`auth.mode: token`)."""
    from .services.errors import BadRequest, NotFound

    identity = _identity(args.config)
    try:
        if args.keys_command == "create":
            info, key = identity.create_key(args.user, admin=args.admin, name=args.name)
            role = "admin" if info.is_admin else "user"
            print(f"created key {info.key_id} for {info.user_id} ({role}); it is shown only once, now:")
            print(key)
        elif args.keys_command == "list":
            for k in identity.list_keys(args.user):
                state = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
                print(
                    f"{k.key_id}  {k.user_id}{' (admin)' if k.is_admin else ''}  {k.name or '-'}  "
                    f"created {_when(k.created_at)}  last used {_when(k.last_used_at)}  {state}"
                )
        else:
            info = identity.revoke_key(args.key)
            print(f"revoked key {info.key_id} of {info.user_id}")
    except (BadRequest, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _webhooks(args: argparse.Namespace) -> int:
    """Print the key webhooks are signed with (`webhooks.secret`, else derived from the server's
    secret): receivers check `X-Autobots-Signature` with it. It is printed here and nowhere else."""
    from .services.webhooks import webhook_secret
    from .settings import load_settings

    print(webhook_secret(load_settings(args.config)))
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run one workflow here, printing each agent message as it is said, then cost and timing."""
    from pydantic import ValidationError

    from .schemas.chat import Message
    from .schemas.validation import describe_validation
    from .schemas.workflow import AgentWorkFlowConfig
    from .services.core import build_services
    from .services.errors import BadRequest, RunFailed
    from .settings import load_settings

    try:
        raw = json.loads(Path(args.workflow).read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("the file must hold a JSON object: a flow_config or a request body with one")
        flow = AgentWorkFlowConfig.model_validate(raw.get("flow_config", raw))
    except ValidationError as exc:  # as the page says it: the field and what is wrong with it
        print(
            f"error: {describe_validation(exc, f'cannot use workflow {args.workflow}')[0]}", file=sys.stderr
        )
        return 2
    except (OSError, ValueError, RecursionError) as exc:  # not JSON, or not an object
        print(f"error: cannot use workflow {args.workflow}: {exc}", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    core = build_services(settings, recover=False)
    try:
        reply = _run_through_manager(core, Message(user_id=args.user_id, content=args.message), flow)
    except BadRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        core.runs.shutdown()
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


def _run_through_manager(core: Any, message: Any, flow: Any) -> Any:
    """The run goes through the server's own machinery (limits, the wall-time cap, stored
    events): its agents' messages are printed as its events arrive."""
    from .schemas.runs import EventKind
    from .services.runs import HEARTBEAT

    prepared = core.runs.submit(message, flow, interactive=False)
    for event in core.runs.stream(None, prepared.run_id):
        if event is HEARTBEAT:
            continue
        _, kind, data = event
        if kind == EventKind.MESSAGE:
            print(f"\n--- {data.get('sender')} -> {data.get('recipient')}\n{data.get('content')}", flush=True)
    core.writer.flush()  # every event and call is stored before the answer is shown
    return core.runs.outcome(prepared)


LOG_FORMATS = ("text", "json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autobots", description=__doc__)
    parser.add_argument("--config", help="config JSON (default: $AUTOBOTS_CONFIG or src/web/config.json)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API and the chat page")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="listen beyond loopback although auth.mode is none (anyone reaching it acts as anyone)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="API processes (the distributed mode only: runs.broker_url; they hold no run state)",
    )
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="text or json lines (default: log_format)")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run queued runs (the distributed mode: runs.broker_url)")
    worker.add_argument(
        "--concurrency", type=int, help="runs at once (threads; default runs.worker_concurrency)"
    )
    worker.add_argument("--log-format", choices=LOG_FORMATS, help="text or json lines (default: log_format)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this machine's metrics on this port (for a worker machine with no API process)",
    )
    worker.add_argument("--metrics-host", default="127.0.0.1", help="where --metrics-port listens")
    worker.set_defaults(func=_worker)
    keys = sub.add_parser("keys", help="API keys for auth.mode token")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="make a key for USER (made with its first key); printed once")
    create.add_argument("user")
    create.add_argument("--admin", action="store_true", help="USER may act for other users")
    create.add_argument("--name", help="a label to tell keys apart")
    listing = keys_sub.add_parser("list", help="keys (ids, labels, dates; never the key)")
    listing.add_argument("user", nargs="?")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id or by the key itself")
    revoke.add_argument("key", metavar="KEY_ID_OR_KEY")
    keys.set_defaults(func=_keys)
    hooks = sub.add_parser("webhooks", help="webhooks: the key their signatures are made with")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True)
    hooks_sub.add_parser("secret", help="print the HMAC-SHA256 key of X-Autobots-Signature (for receivers)")
    hooks.set_defaults(func=_webhooks)
    run = sub.add_parser("run", help="run one workflow from the command line")
    run.add_argument("workflow", help="a workflow JSON file (a flow_config, or a body with one)")
    run.add_argument("message")
    run.add_argument("--user-id", default="cli@autobots.local")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
