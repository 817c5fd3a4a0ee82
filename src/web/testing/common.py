"""Shared by the client scripts: where the server is, how to call it, how to show an answer.

Stdlib only, so a script runs with any Python 3.11 without installing the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

WEB_DIR = Path(__file__).resolve().parent.parent


def _config() -> dict[str, Any]:
    return json.loads((WEB_DIR / "config.json").read_text())


def parser(description: str) -> argparse.ArgumentParser:
    """--url, --user-id and --api-key, defaulting to the environment and then to config.json's
    `client.server_url` and `default_user_id` (the original project's key; `client.user_id` is
    its older name)."""
    config = _config()
    client = config.get("client", {})
    p = _Parser(description=description)
    # The server's own host and port, unless client.server_url names another server.
    own = f"http://{config.get('host') or '127.0.0.1'}:{config.get('port') or 8081}"
    p.add_argument(
        "--url",
        default=os.environ.get("AUTOBOTS_URL") or client.get("server_url") or own,
        help="server URL (env AUTOBOTS_URL; default: config.json's client.server_url, else its host and port)",
    )
    p.add_argument(
        "--user-id",
        default=os.environ.get("AUTOBOTS_USER_ID"),
        help="the user (env AUTOBOTS_USER_ID; default: config.json's default_user_id, or with an "
        "API key the key's own user)",
    )
    p.set_defaults(
        default_user=config.get("default_user_id") or client.get("user_id", "guestuser@autobots.local")
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("AUTOBOTS_API_KEY"),
        help="API key for a server with auth.mode token (env AUTOBOTS_API_KEY; prefer the env)",
    )
    return p


_API_KEY: list[str] = []


class _Parser(argparse.ArgumentParser):
    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        parsed = super().parse_args(*args, **kwargs)
        use_api_key(parsed.api_key)
        if parsed.user_id is None and not parsed.api_key:
            parsed.user_id = parsed.default_user
        return parsed


def use_api_key(key: str | None) -> None:
    """Sign every later `call` in with this key (sent as a bearer token, never printed)."""
    _API_KEY[:] = [key] if key else []


def example(name: str) -> dict[str, Any]:
    return json.loads((WEB_DIR / "examples" / f"{name}.json").read_text())


def call(
    url: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
) -> dict[str, Any]:
    """POST `body` (or GET with `query`); prints the server's message and exits 1 on an error status."""
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if _API_KEY:
        headers["Authorization"] = f"Bearer {_API_KEY[0]}"
    request = urllib.request.Request(full, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("message")
        except ValueError:
            message = exc.reason
        print(f"error {exc.code}: {message}", file=sys.stderr)
        sys.exit(1)
    except urllib.error.URLError as exc:
        print(f"error: cannot reach {url}: {exc.reason}", file=sys.stderr)
        sys.exit(1)


def show_answer(result: dict[str, Any]) -> None:
    saved = result.get("metadata") or result.get("data") or {}
    meta = saved.get("metadata") or {}
    for msg in meta.get("messages", []):
        print(f"--- {msg['sender']} -> {msg['recipient']}\n{msg['content']}\n")
    usage, timing = meta.get("usage", {}), meta.get("timing", {})
    print(f"=== answer\n{result.get('message', '')}\n")
    print(f"session: {saved.get('session_id')}  message: {saved.get('msg_id')}")
    print(
        f"cost: ${usage.get('total_cost_usd', '0')}  tokens: {usage.get('prompt_tokens', 0)} prompt + "
        f"{usage.get('completion_tokens', 0)} completion  LLM calls: {usage.get('llm_calls', 0)}  "
        f"time: {timing.get('duration_s', 0):.2f} s"
    )
    for note in usage.get("cost_notes", []):
        print(f"note: {note}")


def ask(workflow: str, description: str) -> None:
    p = parser(description)
    p.add_argument("question")
    p.add_argument("--session-id", help="continue this session (default: a new one)")
    args = p.parse_args()
    message: dict[str, Any] = {"user_id": args.user_id, "role": "user", "content": args.question}
    if args.session_id:
        message["session_id"] = args.session_id
    show_answer(call(args.url, "/api/messages", {"message": message, "flow_config": example(workflow)}))
